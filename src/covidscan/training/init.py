"""Weight initialisation. The paper initialises every network with Xavier (Glorot) initialisation.

The training loop applies :func:`xavier_init_` to a fresh model (``init="xavier"``, the default)
before the first epoch, after seeding, and never when it resumes from a checkpoint.
"""

from __future__ import annotations

from torch import nn

_CONV_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm)


def xavier_init_(model: nn.Module) -> nn.Module:
    """Xavier-uniform weights and zero biases for convolutions and linear layers; norms to (1, 0).

    Args:
        model: initialised in place (buffers such as a gate state are not touched).

    Returns:
        The same model.
    """
    for module in model.modules():
        if isinstance(module, _CONV_LINEAR):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, _NORMS) and getattr(module, "weight", None) is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model
