"""The exported predictor answers what the pipeline's own model answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from transferpilot.errors import ModelError
from transferpilot.export import Predictor, export_onnx
from transferpilot.features import linear_inputs, pixel_codes, pool
from transferpilot.heads import FeatureClassifier, NetworkClassifier, head_module, linear_layer
from transferpilot.layer_names import PIXELS, parts
from transferpilot.strategies import LinearClassifier
from transferpilot.zoo import DataConfig

CONFIG = DataConfig(input_size=(3, 32, 32), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


def fitted(kind: str, classes: int, dim: int = 6) -> tuple[LinearClassifier, np.ndarray]:
    rng = np.random.default_rng(classes)
    y = np.repeat(np.arange(classes), 12)
    X = (rng.normal(size=(len(y), dim)) + y[:, None] * 0.7 + 3.0).astype(np.float32)
    probe = LinearClassifier(kind=kind, c_grid=(0.1, 1.0), cv_folds=2).fit(X, y.astype(str))
    return probe, X


@pytest.mark.parametrize("kind", ["linear", "svm"])
@pytest.mark.parametrize("classes", [2, 3])
def test_linear_layer_reproduces_predict_proba(kind: str, classes: int) -> None:
    probe, X = fitted(kind, classes)
    layer = linear_layer(probe)
    with torch.no_grad():
        got = layer(torch.as_tensor(X)).softmax(-1).numpy()
    np.testing.assert_allclose(got, probe.predict_proba(X), atol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "svm"])
@pytest.mark.parametrize("classes", [2, 3])
def test_a_prior_shift_is_folded_into_the_bias(kind: str, classes: int) -> None:
    """An imbalanced set's head, balanced by less the log of each class's share: the
    exported layer answers what the head answers."""
    probe, X = fitted(kind, classes)
    probe.prior_shift_ = -np.log(
        np.linspace(1.0, 0.1, classes) / np.linspace(1.0, 0.1, classes).sum()
    )
    with torch.no_grad():
        got = linear_layer(probe)(torch.as_tensor(X)).softmax(-1).numpy()
    np.testing.assert_allclose(got, probe.predict_proba(X), atol=1e-5)
    assert (probe.classes_[got.argmax(1)] == probe.predict(X)).all()


@pytest.mark.parametrize("classes", [2, 3])
def test_the_nearest_class_mean_exports_with_its_normalisation(classes: int) -> None:
    probe, X = fitted("ncm", classes)
    assert "normalise" in probe.model_.named_steps
    with torch.no_grad():
        got = head_module(probe)(torch.as_tensor(X)).softmax(-1).numpy()
    np.testing.assert_allclose(got, probe.predict_proba(X), atol=1e-5)


@pytest.mark.parametrize("classes", [2, 3])
def test_kernel_head_reproduces_predict_proba(classes: int) -> None:
    probe, X = fitted("kernel", classes)
    assert "map" in probe.model_.named_steps  # a Nyström map before the linear SVM
    with torch.no_grad():
        got = head_module(probe)(torch.as_tensor(X)).softmax(-1).numpy()
    np.testing.assert_allclose(got, probe.predict_proba(X), atol=1e-5)


def test_the_pixel_baseline_exports_without_the_network(tmp_path: Path) -> None:
    """The no-transfer predictor: normalise, pool to 16 x 16, kernel SVM; no backbone inside."""
    features = TinyFeatures().eval()
    pics = images(8)
    transform = CONFIG.transform()
    with torch.no_grad():
        pixels = pixel_codes(torch.stack([transform(p) for p in pics])).numpy()
    assert pixels.shape == (8, 3 * 16 * 16)
    labels = np.array(["ant", "bee"] * 4)
    probe = LinearClassifier("kernel", c_grid=(1.0,), cv_folds=2).fit(pixels, labels)
    module = FeatureClassifier(features, PIXELS, head_module(probe), CONFIG)
    meta = {"classes": ["ant", "bee"], "data_config": CONFIG.as_dict(), "strategy": "baseline"}
    predictor = Predictor(export_onnx(module, tmp_path / "predictor.onnx", meta))
    np.testing.assert_allclose(
        predictor.predict_proba(pics, batch_size=4), probe.predict_proba(pixels), atol=1e-4
    )
    import onnx

    graph = onnx.load(str(tmp_path / "predictor.onnx")).graph
    assert not [t.name for t in graph.initializer if "conv" in t.name or "fc" in t.name]


class TinyFeatures(nn.Module):
    """A backbone's ``features`` interface at toy size: a layer map, codes and logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, stride=2)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        block = self.conv(x).relu()
        codes = block.mean((2, 3))
        return {"block": block, "pre_logits": codes, "logits": self.fc(codes)}


def images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [
        Image.fromarray(rng.integers(0, 255, size=(40 + i, 48, 3), dtype=np.uint8))
        for i in range(n)
    ]


def pooled(features: nn.Module, layer: str, grid: int, pics) -> np.ndarray:
    """What extraction keeps: each layer pooled; a joined input's layers side by side."""
    transform = CONFIG.transform()
    with torch.no_grad():
        out = features(torch.stack([transform(p) for p in pics]))
    return np.hstack([pool(out[part], grid).numpy() for part in parts(layer)])


def pipeline_proba(features: nn.Module, layer: str, grid: int, probe, pics) -> np.ndarray:
    """What the pipeline does: extract (normalised), pool, linear_inputs, the sklearn head."""
    return probe.predict_proba(linear_inputs(layer, pooled(features, layer, grid, pics)))


@pytest.mark.parametrize(("layer", "grid"), [("block", 2), ("logits", 1), ("block+pre_logits", 2)])
def test_feature_head_export_round_trip(tmp_path: Path, layer: str, grid: int) -> None:
    features = TinyFeatures().eval()
    pics = images(6)
    train = pooled(features, layer, grid, pics)
    labels = np.array(["ant", "bee"] * 3)
    probe = LinearClassifier(c_grid=(1.0,), cv_folds=2).fit(linear_inputs(layer, train), labels)

    module = FeatureClassifier(features, layer, linear_layer(probe), CONFIG, pool_grid=grid)
    meta = {"classes": ["ant", "bee"], "data_config": CONFIG.as_dict(), "strategy": "linear"}
    path = export_onnx(module, tmp_path / "predictor.onnx", meta)

    predictor = Predictor(path)
    assert predictor.classes == ["ant", "bee"] and predictor.meta["strategy"] == "linear"
    got = predictor.predict_proba(pics, batch_size=4)
    np.testing.assert_allclose(got, pipeline_proba(features, layer, grid, probe, pics), atol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["predictor.onnx"]  # no temporary left


def test_network_export_and_top_k_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    meta = {"classes": ["a", "b", "c"], "data_config": CONFIG.as_dict()}
    path = export_onnx(NetworkClassifier(net, CONFIG), tmp_path / "p.onnx", meta)
    files = []
    for i, pic in enumerate(images(3)):
        files.append(tmp_path / f"img {i}.png")
        pic.save(files[-1])
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    transform = CONFIG.transform()
    with torch.no_grad():
        want = net(torch.stack([transform(Image.open(f).convert("RGB")) for f in files]))
    want = want.softmax(-1).numpy()

    preds = Predictor(path).predict_files([*files, bad], top_k=2, batch_size=2)
    assert [len(p.top) for p in preds] == [2, 2, 2, 0] and "broken.jpg" in preds[3].image
    assert preds[3].error
    for pred, row in zip(preds, want, strict=False):
        assert pred.top[0].label == "abc"[int(row.argmax())]
        assert pred.top[0].prob == pytest.approx(float(row.max()), abs=1e-4)


def test_foreign_or_broken_files_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        Predictor(junk)

    plain = tmp_path / "plain.onnx"
    torch.onnx.export(
        nn.Linear(2, 2).eval(), (torch.zeros(1, 2),), str(plain), dynamo=True, verbose=False
    )
    with pytest.raises(ModelError, match="not a transferpilot predictor"):
        Predictor(plain)


def test_an_exporter_that_prints_its_failure_leaves_stdout_empty(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TorchScript exporter dumps the graph it could not export to file descriptor 1
    (847 lines for Lite2 at 260 px); the dynamo exporter then takes over, and stdout
    stays empty so that ``--json`` stays one document."""
    import onnxruntime as ort

    from transferpilot import _onnx

    real = torch.onnx.export

    def torchscript_fails(*args, dynamo: bool = False, **kwargs):
        if not dynamo:
            import os

            os.write(1, b"graph(%image : Float(2, 3, 8, 8)):\n" * 50)
            print("a Python print as well")
            raise RuntimeError("forced: the TorchScript exporter cannot express this")
        return real(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(_onnx.torch.onnx, "export", torchscript_fails)
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    path = _onnx.onnx_export(module, torch.rand(2, 3, 8, 8), tmp_path / "m.onnx", ["out"])
    assert capfd.readouterr().out == ""
    x = np.random.default_rng(0).random((3, 3, 8, 8), dtype=np.float32)
    (got,) = ort.InferenceSession(str(path)).run(None, {"image": x})
    with torch.no_grad():
        np.testing.assert_allclose(got, module(torch.as_tensor(x)).numpy(), atol=1e-5)
