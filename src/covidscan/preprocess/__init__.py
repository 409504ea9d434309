"""Preprocessing shared by training and serving (SPEC.md section 2).

The service imports these functions; it never re-implements them.

- :mod:`.xray`: 2D path (X-ray, CT slices published as images): 0-255, resize, pseudo-colour (3, H, W).
- :mod:`.ct`: lung window, z resampling, dimension normalisation (S, H, W), 3D volumes (D, H, W), and one
  HU slice rendered as a published slice (``slice_grey``).
- :mod:`.augment`: seeded training augmentation (2D horizontal flip; 3D scale/flips/rotation).
- :mod:`.spec`: what each preprocessed kind looks like, and array -> model tensor.
- :mod:`.cache`: content-hash cache and ``preprocess_manifest`` (manifest -> .npy files + index).
"""

from covidscan.preprocess.ct import ct_stack, ct_volume, slice_grey, window_uint8, window_unit
from covidscan.preprocess.spec import InputSpec, input_spec, model_inputs
from covidscan.preprocess.xray import preprocess_2d, preprocess_ct_slice2d, preprocess_xray, pseudo_colour

__all__ = [
    "InputSpec",
    "ct_stack",
    "ct_volume",
    "input_spec",
    "model_inputs",
    "preprocess_2d",
    "preprocess_ct_slice2d",
    "preprocess_xray",
    "pseudo_colour",
    "slice_grey",
    "window_uint8",
    "window_unit",
]
