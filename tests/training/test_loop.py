"""The training loop on CPU with tiny stand-in models (the real ones plug in through the same protocol)."""

from __future__ import annotations

import logging

import pytest
import torch
from torch.utils.data import Dataset

from covidscan.config import DistillConfig, OptimConfig, RunConfig
from covidscan.errors import ConfigError
from covidscan.training.data import NpyDataset
from covidscan.training.distill import TeacherEnsemble
from covidscan.training.loop import train
from covidscan.training.val_metrics import auroc
from tests.training.standins import TinyCNN, TinyGatedCNN, random_flip, write_blobs

RUN = RunConfig(seed=0, deterministic=True, device="auto", num_workers=0)


def fast(**kw) -> OptimConfig:
    base = dict(epochs=6, batch_size=8, lr=0.05, warmup_epochs=1, step_size=10, gamma=0.1)
    base.update(kw)
    return OptimConfig(**base)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    root = tmp_path_factory.mktemp("blobs")
    return write_blobs(root / "train", 48, seed=1), write_blobs(root / "val", 24, seed=2)


def predict(model, dataset) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        x = torch.stack([dataset[i][0] for i in range(len(dataset))])
        y = torch.stack([dataset[i][1] for i in range(len(dataset))])
        return torch.softmax(model(x), dim=1), y


def test_trains_a_classifier_that_separates_two_classes(blobs):
    train_items, val_items = blobs
    seen: list[dict] = []
    model = TinyCNN()
    result = train(
        model, NpyDataset(train_items, augment=random_flip), NpyDataset(val_items), optim=fast(), run=RUN, callback=seen.append
    )
    assert result.device == "cpu" and result.deterministic
    assert len(result.history) == 6 and seen == result.history
    assert {"epoch", "lr", "train_loss", "val_loss", "val_auroc", "val_sensitivity", "peak_rss_mb"} <= set(seen[0])
    assert seen[0]["lr"] == pytest.approx(0.05 / 2) and seen[1]["lr"] == pytest.approx(0.05)  # warm-up then full
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    model.load_state_dict(result.state_dict)
    probs, y = predict(model, NpyDataset(val_items))
    assert auroc(probs, y, 1) > 0.85
    assert result.history[-1]["val_auroc"] > 0.85
    assert result.gate_opened is None and result.peak_rss_mb > 0


def test_gate_opens_on_validation_sensitivity(blobs):
    train_items, val_items = blobs
    model = TinyGatedCNN(ths_sens=0.75, ths_count=2)
    result = train(model, NpyDataset(train_items), NpyDataset(val_items), optim=fast(epochs=8), run=RUN, lambda_aux=1.0)
    # the loop fed the gate the auxiliary head's validation sensitivity, once per validation pass
    fed = [h["val_aux_sensitivity"] for h in result.history]
    assert model.gate.updates == pytest.approx(fed)
    assert result.gate_opened is True
    # the gate opened exactly when two consecutive passes reached 0.75
    run_length, expected_epoch = 0, None
    for epoch, sens in enumerate(fed):
        run_length = run_length + 1 if sens >= 0.75 else 0
        if run_length >= 2:
            expected_epoch = epoch
            break
    assert result.gate_opened_epoch == expected_epoch
    assert [h["gate_open"] for h in result.history] == [float(e >= expected_epoch) for e in range(8)]
    assert bool(result.state_dict["gate.open"])  # the gate state travels with the weights


def test_gate_that_never_opens_is_reported(blobs, caplog):
    train_items, val_items = blobs
    model = TinyGatedCNN(ths_sens=1.0, ths_count=1000)
    with caplog.at_level(logging.WARNING, logger="covidscan.training.loop"):
        result = train(model, NpyDataset(train_items), NpyDataset(val_items), optim=fast(epochs=2), run=RUN)
    assert result.gate_opened is False and result.gate_opened_epoch is None
    assert any("never opened" in w for w in result.warnings)
    assert "never opened" in caplog.text


def test_regression_mode_fits_targets(tmp_path):
    items = write_blobs(tmp_path / "r", 32, seed=3, regression=True)
    model = TinyCNN(outputs=2)
    result = train(model, NpyDataset(items), NpyDataset(items), optim=fast(epochs=8, lr=0.02), run=RUN, task="regression")
    assert "val_auroc" not in result.history[0]
    assert result.history[-1]["val_loss"] < 0.5 * result.history[0]["val_loss"]


def test_distillation_mode_uses_teachers_on_the_same_batch(blobs):
    train_items, val_items = blobs
    teacher = TinyCNN()
    train(teacher, NpyDataset(train_items), NpyDataset(val_items), optim=fast(epochs=4), run=RUN)
    teachers = TeacherEnsemble({"TS1": [teacher]}, DistillConfig(temperature=4.0))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = TinyGatedCNN(ths_sens=0.6, ths_count=1)
    result = train(
        student, NpyDataset(train_items, augment=random_flip), NpyDataset(val_items), optim=fast(epochs=5), run=RUN,
        teachers=teachers, distill=DistillConfig(alpha=0.5, temperature=4.0),
    )  # fmt: skip
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # teachers never change
    assert result.gate_opened and result.history[-1]["val_auroc"] > 0.8


def test_keep_best_and_batch_cap(blobs):
    train_items, val_items = blobs

    class Counting(NpyDataset):
        calls = 0

        def __getitem__(self, key):
            Counting.calls += 1
            return super().__getitem__(key)

    result = train(TinyCNN(), Counting(train_items), NpyDataset(val_items), optim=fast(epochs=3, max_batches_per_epoch=2), run=RUN, keep="best")
    assert Counting.calls == 3 * 2 * 8  # 2 batches of 8 per epoch
    assert result.kept == "best"
    assert result.best_epoch == max(range(3), key=lambda e: (result.history[e]["val_auroc"], -e))


def test_volumes_train_too(tmp_path):
    class Volumes(Dataset):
        def __init__(self) -> None:
            g = torch.Generator().manual_seed(0)
            self.x = torch.randn(12, 1, 4, 8, 8, generator=g)
            self.targets = [i % 2 for i in range(12)]
            self.x[1::2, :, 1:3, 2:6, 2:6] += 2.0

        def __len__(self) -> int:
            return 12

        def __getitem__(self, i):
            return self.x[i], torch.tensor(self.targets[i])

    opt = fast(epochs=2, optimizer="adam", lr=1e-2, warmup_epochs=0)
    result = train(TinyCNN(spatial_dims=3), Volumes(), Volumes(), optim=opt, run=RUN, class_weights="none", checkpoint_dir=tmp_path / "ck")
    assert len(result.history) == 2 and result.nondeterministic_ops == []
    again = train(TinyCNN(spatial_dims=3), Volumes(), Volumes(), optim=opt, run=RUN, class_weights="none", checkpoint_dir=tmp_path / "ck")
    assert again.resumed_from == 1 and again.history == result.history  # nothing left to train
    with pytest.raises(ConfigError, match="other training settings"):
        train(TinyCNN(spatial_dims=3), Volumes(), Volumes(), optim=fast(epochs=2, lr=0.5), run=RUN, class_weights="none", checkpoint_dir=tmp_path / "ck")


def test_keep_best_needs_validation(blobs):
    with pytest.raises(ConfigError, match="no validation set"):
        train(TinyCNN(), NpyDataset(blobs[0]), None, optim=fast(), run=RUN, keep="best")


# ------------------------------------------------------------------ Q > 1: one gate per stage
Q2 = dict(stem_width=4, widths_stage1=[8, 8], width_stage1_b=8, widths_stage2=[8, 8], width_stage2_b=8, stride_a=1, stride_b=2)


@pytest.fixture(scope="module")
def blobs16(tmp_path_factory):
    root = tmp_path_factory.mktemp("blobs16")
    return write_blobs(root / "train", 32, seed=1, size=16), write_blobs(root / "val", 16, seed=2, size=16)


def _observe_gates(model):
    """Callback recording each gate's (open, counter) after every epoch (the loop calls it after the update)."""
    seen: list[list[tuple[bool, int]]] = []
    return seen, lambda metrics: seen.append([(g.is_open, g.count) for g in model.gates])


def test_q2_gates_open_stage_by_stage(blobs16):
    """With ths_sens 0 every validation pass passes: gate 0 opens after epoch 0, and only then does gate 1
    count (it opens after epoch 1). Feeding every gate the active head's sensitivity opened both at once."""
    from covidscan.models.cnncf import CNNCF

    model = CNNCF(**Q2, Q=2, num_classes=2, in_channels=1, input_size=16, ths_sens=0.0, ths_count=1)
    seen, callback = _observe_gates(model)
    result = train(model, NpyDataset(blobs16[0]), NpyDataset(blobs16[1]), optim=fast(epochs=3), run=RUN, callback=callback)
    assert seen[0] == [(True, 1), (False, 0)]  # after epoch 0: the second gate has not counted yet
    assert seen[1] == [(True, 1), (True, 1)]
    assert [h["gate_active"] for h in result.history] == [0.0, 1.0, 1.0]
    assert result.gate_opened is True and result.gate_opened_epoch == 1


def test_q2_each_gate_follows_its_own_head(blobs16):
    """Replaying the Control Gate Block rule on each head's recorded validation sensitivity, stage by stage,
    gives exactly the gate states the loop produced after every epoch."""
    from covidscan.models.cnncf import CNNCF

    ths_sens, ths_count = 0.75, 2
    model = CNNCF(**Q2, Q=2, num_classes=2, in_channels=1, input_size=16, ths_sens=ths_sens, ths_count=ths_count)
    seen, callback = _observe_gates(model)
    result = train(model, NpyDataset(blobs16[0]), NpyDataset(blobs16[1]), optim=fast(epochs=6), run=RUN, callback=callback)
    assert result.history[-1]["gate_open_0"] == 1.0  # the blobs are easy: stage I's head passes
    counters, opened = [0, 0], [False, False]
    for epoch, h in enumerate(result.history):
        active = 0 if not opened[0] else 1
        assert h["gate_active"] == active
        sens = h[f"val_aux_sensitivity_{active}"]  # head `active`'s own sensitivity, not head 0's
        assert h["val_aux_sensitivity"] == sens
        counters[active] = counters[active] + 1 if sens >= ths_sens else 0  # ControlGateBlock.update
        opened[active] = opened[active] or counters[active] >= ths_count  # the gate stays open
        assert seen[epoch] == [(opened[0], counters[0]), (opened[1], counters[1])], f"epoch {epoch}"
        assert not (opened[1] and not opened[0])  # a later gate never opens before an earlier one
