"""Fine-tuning on a tiny model and a tiny synthetic task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.images import image_folder
from transferpilot.config import TrainParams
from transferpilot.finetune import (
    Finetuner,
    freeze,
    frozen_patterns,
    lr_lambda,
    param_groups,
)
from transferpilot.zoo import Backbone, create_backbone

# A randomly initialised tiny network: its "pretrained" layers need the full rate (lr_ratio 1).
CONFIG = TrainParams(
    epochs=3,
    batch_size=8,
    lr=3e-3,
    input_size=64,
    warmup_epochs=0.5,
    label_smoothing=0.0,
    patience=5,
    seed=1,
    lr_ratio=1.0,
    workers=0,
)


@pytest.fixture(scope="module")
def tiny() -> Backbone:
    torch.manual_seed(0)
    return create_backbone("timm:test_resnet", pretrained=False)


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("task")
    image_folder(root / "train", {"red": 16, "blue": 16}, size=40)
    image_folder(root / "val", {"red": 6, "blue": 6}, size=40)

    def split(name: str) -> tuple[list[Path], list[str]]:
        files = sorted((root / name).rglob("*.png"))
        return files, [p.parent.name for p in files]

    return split("train"), split("val")


def test_a_tiny_model_learns_a_tiny_task(tiny: Backbone, task) -> None:
    (paths, labels), (val_paths, val_labels) = task
    tuner = Finetuner(tiny, CONFIG).fit(paths, labels, val_paths, val_labels)
    accuracy = (tuner.predict(val_paths) == np.array(val_labels)).mean()
    assert accuracy >= 0.9  # chance is 0.5
    assert tuner.result_.best_val_accuracy == pytest.approx(accuracy)
    proba = tuner.predict_proba(val_paths)
    assert proba.shape == (12, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)


def test_the_decisions_frozen_layers_freeze_unless_freeze_is_set(tiny: Backbone) -> None:
    by_layers = Finetuner(tiny, CONFIG, frozen_layers=["layer1"]).frozen_patterns()
    assert by_layers == [r"^conv1\.", r"^bn1\.", r"^layer1\."]
    own = CONFIG.model_copy(update={"freeze": (r"^fc\.",)})
    assert Finetuner(tiny, own, frozen_layers=["layer1"]).frozen_patterns() == [r"^fc\."]


def test_frozen_parameters_stay_bit_identical(tiny: Backbone, task) -> None:
    (paths, labels), (val_paths, val_labels) = task
    patterns = frozen_patterns(tiny.model, ["act1", "layer1"])
    assert patterns == [r"^conv1\.", r"^bn1\.", r"^layer1\."]
    config = CONFIG.model_copy(update={"freeze": tuple(patterns), "epochs": 1})
    tuner = Finetuner(tiny, config).fit(paths, labels, val_paths, val_labels)
    before = dict(tiny.model.named_parameters())
    after = dict(tuner.model_.named_parameters())
    buffers_before = dict(tiny.model.named_buffers())
    buffers_after = dict(tuner.model_.named_buffers())
    frozen = [n for n in after if n.startswith(("conv1.", "bn1.", "layer1."))]
    assert frozen and set(frozen) == set(tuner.frozen_)
    for name in frozen:
        assert torch.equal(before[name], after[name]), name
    # BatchNorm running statistics stay ImageNet's by default (eval mode); affine weights learn
    for name in ("bn1.running_mean", "layer4.0.bn1.running_mean"):
        assert torch.equal(buffers_before[name], buffers_after[name]), name
    assert not torch.equal(before["layer4.0.conv1.weight"], after["layer4.0.conv1.weight"])
    assert not torch.equal(before["layer4.0.bn1.weight"], after["layer4.0.bn1.weight"])

    train_bn = config.model_copy(update={"train_bn": True})
    moved = Finetuner(tiny, train_bn).fit(paths, labels, val_paths, val_labels)
    stats = dict(moved.model_.named_buffers())
    assert torch.equal(buffers_before["bn1.running_mean"], stats["bn1.running_mean"])  # frozen
    assert not torch.equal(
        buffers_before["layer4.0.bn1.running_mean"], stats["layer4.0.bn1.running_mean"]
    )


def test_parameter_groups_carry_the_intended_learning_rates(tiny: Backbone) -> None:
    model = tiny.model
    freeze(model := __import__("copy").deepcopy(model), [r"^conv1\."])
    _, specs = param_groups(model, "fc", lr=1e-3, lr_ratio=0.1, weight_decay=0.05)
    by_name = {s.name: s for s in specs}
    assert by_name["head"].lr == pytest.approx(1e-3) and by_name["head"].weight_decay == 0.05
    assert by_name["head (no decay)"].weight_decay == 0.0
    assert by_name["pretrained"].lr == pytest.approx(1e-4)
    assert by_name["pretrained (no decay)"].lr == pytest.approx(1e-4)
    total = sum(s.size for s in specs)
    trainable = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("conv1."))
    assert total == trainable


def test_warmup_then_cosine() -> None:
    scale = lr_lambda(total_steps=100, warmup_steps=10)
    assert scale(0) == pytest.approx(0.01) and scale(10) == pytest.approx(1.0)
    assert scale(55) == pytest.approx(0.5) and scale(100) == pytest.approx(0.0, abs=1e-9)
    values = [scale(s) for s in range(10, 101)]
    assert values == sorted(values, reverse=True)


def test_head_from_a_linear_probe_predicts_before_any_training(tiny: Backbone, task) -> None:
    (paths, labels), (val_paths, val_labels) = task
    codes = np.where(np.array(labels)[:, None] == "red", 1.0, -1.0) * np.ones((1, 96))
    codes = codes + np.random.default_rng(0).normal(scale=0.1, size=codes.shape)
    config = CONFIG.model_copy(update={"epochs": 1})
    tuner = Finetuner(tiny, config).fit(paths, labels, val_paths, val_labels, codes=codes)
    assert tuner.head_init_["probe_held_out_accuracy"] == 1.0


class Killed(Exception):
    pass


def test_resume_after_a_kill_equals_an_uninterrupted_run(tiny: Backbone, task, tmp_path) -> None:
    (paths, labels), (val_paths, val_labels) = task
    whole = Finetuner(tiny, CONFIG, checkpoint_dir=tmp_path / "a").fit(
        paths, labels, val_paths, val_labels
    )

    def die_after_first(entry) -> None:
        if entry.epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        Finetuner(tiny, CONFIG, checkpoint_dir=tmp_path / "b", on_epoch=die_after_first).fit(
            paths, labels, val_paths, val_labels
        )
    resumed = Finetuner(tiny, CONFIG, checkpoint_dir=tmp_path / "b").fit(
        paths, labels, val_paths, val_labels
    )
    assert resumed.result_.resumed_from == 0 and len(resumed.result_.history) == 3
    for a, b in zip(whole.result_.history, resumed.result_.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)
        assert a.val_accuracy == b.val_accuracy
    for (name, x), y in zip(
        whole.model_.state_dict().items(), resumed.model_.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)


def test_a_kill_while_the_next_checkpoint_is_written_keeps_the_last_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is the commit point: epoch 2's tensors written, its record not yet, then a
    kill; the re-run still finds epoch 1 whole (it used to find epoch 2's weights under
    epoch 1's record, ignore both and start again)."""
    from transferpilot.finetune import _checkpoint, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(3, 4)).sum().backward()
    optimizer.step()
    save_checkpoint(tmp_path, "last", model, {"epoch": 1}, optimizer)
    epoch1 = {k: v.clone() for k, v in model.state_dict().items()}

    with torch.no_grad():
        model.weight.add_(1.0)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_checkpoint, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, "last", model, {"epoch": 2}, optimizer)
    monkeypatch.undo()

    state = load_checkpoint(tmp_path, "last")
    assert state is not None and state["epoch"] == 1
    for name, value in epoch1.items():
        torch.testing.assert_close(state["model"][name], value)
    # the next whole write removes the files no record names
    save_checkpoint(tmp_path, "last", model, {"epoch": 2}, optimizer)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["last-epoch2.optim.safetensors", "last-epoch2.safetensors", "last.json"]


def test_imbalanced_classes_get_balanced_batches_and_the_epoch_by_balanced_accuracy(
    tiny: Backbone, task
) -> None:
    """16 red against 4 blue (4:1): every epoch draws each class about equally often, the
    held-in balanced accuracy is logged per epoch, and it is what picks the epoch."""
    (paths, labels), (val_paths, val_labels) = task
    keep = [i for i, lb in enumerate(labels) if lb == "red"] + [
        i for i, lb in enumerate(labels) if lb == "blue"
    ][:4]
    paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    tuner = Finetuner(tiny, CONFIG.model_copy(update={"epochs": 2})).fit(
        paths, labels, val_paths, val_labels
    )
    assert tuner.balanced_
    targets = [tuner.classes_.index(lb) for lb in labels]
    dataset = type("Rows", (), {"targets": targets, "__len__": lambda self: len(targets)})()
    drawn = list(tuner._loader(dataset, shuffle=True, epoch=0, shared=True).sampler)
    assert len(drawn) == 20 and sum(targets[i] == tuner.classes_.index("blue") for i in drawn) >= 6
    history = tuner.result_.history
    assert all(0 <= h.val_balanced_accuracy <= 1 for h in history)
    best = max(range(len(history)), key=lambda e: (history[e].val_balanced_accuracy, -e))
    assert tuner.result_.best_epoch == best + 1
    assert tuner.result_.best_val_balanced_accuracy == history[best].val_balanced_accuracy
    assert tuner.result_.best_val_accuracy == history[best].val_accuracy  # still accuracy
