"""Every kind of zoo entry answers the same interface (tiny or randomly initialised models)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from transferpilot.zoo import LOGITS, PRE_LOGITS, Backbone, create_backbone

SPECS = [
    ("efficientnet_lite0", None),
    ("timm:test_efficientnet", None),
    ("timm:test_resnet", None),
    ("timm:test_convnext", None),
    ("torchvision:mobilenet_v3_small", None),
    ("torchvision:resnet18", None),
    ("file", "timm:test_efficientnet"),
]


@pytest.fixture(scope="module", params=SPECS, ids=lambda s: s[0] if s[0] != "file" else "file:")
def backbone(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backbone:
    name, arch = request.param
    if name == "file":
        import timm

        path = tmp_path_factory.mktemp("ckpt") / "user.safetensors"
        save_file(timm.create_model(arch.split(":")[1], num_classes=4).state_dict(), path)
        return create_backbone(f"file:{path}", arch=arch)
    return create_backbone(name, pretrained=False)


def test_features_are_the_layers_plus_codes_and_logits(backbone: Backbone) -> None:
    x = torch.randn(2, *backbone.data_config.input_size)
    with torch.no_grad():
        out = backbone.features(x)
        logits = backbone.model(x)
    assert list(out) == [layer.name for layer in backbone.layers] + [PRE_LOGITS, LOGITS]
    size = backbone.data_config.input_size[1]
    for layer in backbone.layers:
        feat = out[layer.name]
        assert feat.shape[:2] == (2, layer.channels), layer
        assert abs(feat.shape[2] - size / layer.reduction) <= 1, layer
    assert out[PRE_LOGITS].shape == (2, backbone.num_features)
    assert out[LOGITS].shape == (2, backbone.num_classes) == logits.shape
    assert torch.allclose(out[LOGITS], logits, atol=1e-5)


def test_layers_go_from_early_to_late(backbone: Backbone) -> None:
    reductions = [layer.reduction for layer in backbone.layers]
    assert len(reductions) >= 3 and reductions == sorted(reductions)


def test_preprocessing_comes_from_the_model(backbone: Backbone) -> None:
    cfg = backbone.data_config
    assert cfg.input_size[0] == 3 and len(cfg.mean) == 3 and len(cfg.std) == 3
    tensor = cfg.transform()(Image.new("RGB", (300, 200), (10, 20, 30)))
    assert tuple(tensor.shape) == cfg.input_size


def test_describe_is_json(backbone: Backbone) -> None:
    info = json.loads(json.dumps(backbone.describe()))
    assert info["spec"] == backbone.spec and info["num_features"] == backbone.num_features
    assert len(info["layers"]) == len(backbone.layers)
    assert len(backbone.class_names) == backbone.num_classes


def test_batchnorm_moments_are_reachable_from_the_feature_pass(backbone: Backbone) -> None:
    from transferpilot.features._moments import MomentRecorder, moment_points, unique_points

    points = moment_points(backbone.model, [layer.name for layer in backbone.layers])
    names = unique_points(points)
    recorder = MomentRecorder(names)
    x = torch.randn(2, *backbone.data_config.input_size)
    with recorder.attached(backbone.model), torch.no_grad():
        backbone.features(x)
    moments = recorder.pop()
    if "convnext" in backbone.spec:  # LayerNorm only: the profile falls back to head measures
        assert names == []
        return
    assert set(points) >= {"pre_logits"} and len(points) >= len(backbone.layers)
    for name, (mean, sq) in moments.items():
        assert mean.shape == sq.shape == (2, backbone.model.get_submodule(name).num_features)
