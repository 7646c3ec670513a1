"""Where the model looked: the map a user reads over an image is the head's evidence there.

A tiny random timm EfficientNet stands in for the pretrained one: what is checked is the
arithmetic (a linear head's map is its weights over the feature map), the method chosen
for each kind of predictor, and the clear refusals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from transferpilot.errors import ModelError
from transferpilot.explain import Explainer, last_map, write_overlays
from transferpilot.heads import FeatureClassifier, NetworkClassifier
from transferpilot.zoo import DataConfig, create_backbone


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return create_backbone("timm:test_efficientnet", pretrained=False)


def pictures(n: int, size: int) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(n))


def test_a_linear_heads_map_is_its_weights_over_the_feature_map(backbone) -> None:
    """CAM (Zhou et al.): for softmax regression on the pooled codes, Grad-CAM at the
    network's last map equals sum_c w[k, c] * A[c, h, w], upsampled — exactly."""
    torch.manual_seed(1)
    head = nn.Linear(backbone.num_features, 3)
    module = FeatureClassifier(backbone.features, "pre_logits", head, backbone.data_config)
    explainer = Explainer(module, backbone.data_config, ["a", "b", "c"])
    assert explainer.method.startswith("Grad-CAM at pre_logits")
    images = pictures(2, backbone.data_config.input_size[1])
    targets = [0, 2]
    _, heat = explainer.heat(images, targets)

    _, layer = last_map(module.features, module.normalise(images[:1]))
    kept = {}
    handle = layer.register_forward_hook(lambda _m, _a, out: kept.update(out=out))
    with torch.no_grad():
        module.logits(images)
    handle.remove()
    cam = torch.einsum("kc,bchw->bkhw", head.weight.detach(), kept["out"])
    cam = cam[torch.arange(2), torch.tensor(targets)].clamp_min(0)[:, None]
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear")[:, 0]
    cam = cam / cam.flatten(1).amax(1).view(-1, 1, 1)
    np.testing.assert_allclose(heat, cam.numpy(), atol=1e-4)
    assert heat.shape == (2, *images.shape[-2:]) and heat.min() >= 0 and heat.max() == 1


def test_an_earlier_layer_and_a_joined_input_are_mapped_at_their_own_layers(backbone) -> None:
    layer = "blocks.3+pre_logits"
    dim = dict((f.name, f.channels) for f in backbone.layers)["blocks.3"]
    module = FeatureClassifier(
        backbone.features, layer, nn.Linear(dim + backbone.num_features, 2), backbone.data_config
    )
    explainer = Explainer(module, backbone.data_config, ["x", "y"])
    assert "blocks.3 + pre_logits" in explainer.method and len(explainer.layers) == 2
    proba, heat = explainer.heat(pictures(3, 64))
    assert proba.shape == (3, 2) and heat.shape == (3, 64, 64)


def test_a_fine_tuned_network_gets_grad_cam_at_its_last_feature_map(backbone) -> None:
    module = NetworkClassifier(backbone.model, backbone.data_config)
    explainer = Explainer(module, backbone.data_config, backbone.class_names)
    assert explainer.method == "Grad-CAM at bn2, the network's last feature map"
    proba, heat = explainer.heat(pictures(2, 64))
    assert proba.shape == (2, 1000) and np.isfinite(heat).all()


def test_the_pixel_baseline_is_explained_by_its_pixels(backbone) -> None:
    """No network, no feature map: gradient x input, so a black pixel is no evidence."""
    head = nn.Linear(3 * 16 * 16, 2)
    config = DataConfig(input_size=(3, 32, 32), mean=(0.0,) * 3, std=(1.0,) * 3)
    module = FeatureClassifier(backbone.features, "pixels", head, config)
    explainer = Explainer(module, config, ["ant", "bee"])
    assert explainer.method.startswith("gradient x input on the pixels")
    images = pictures(2, 32)
    images[:, :, :, :16] = 0  # the left half black
    _, heat = explainer.heat(images)
    assert (heat[:, :, :16] == 0).all() and heat[:, :, 16:].max() > 0


def test_a_network_without_a_feature_map_is_refused_clearly() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    config = DataConfig(input_size=(3, 8, 8), mean=(0.0,) * 3, std=(1.0,) * 3)
    with pytest.raises(ModelError, match="no convolutional feature map to explain"):
        Explainer(NetworkClassifier(mlp, config), config, list("abcd"))


def test_files_are_explained_and_written_as_overlays_beside_nothing_of_theirs(
    backbone, tmp_path: Path
) -> None:
    folder = tmp_path / "images"
    for sub in ("a", "b"):
        (folder / sub).mkdir(parents=True)
        Image.new("RGB", (50, 40), (200, 30, 30)).save(folder / sub / "same.png")
    (folder / "a" / "broken.png").write_bytes(b"not a png")
    files = [folder / "a" / "same.png", folder / "a" / "broken.png", folder / "b" / "same.png"]
    module = NetworkClassifier(backbone.model, backbone.data_config)
    found = Explainer(module, backbone.data_config, backbone.class_names).explain_files(files)
    assert found[1] is None and found[0].pixels.shape == (160, 160, 3)
    assert 0 <= found[0].prob <= 1 and found[0].label in backbone.class_names
    written = write_overlays(found, tmp_path / "out")
    assert [w.name if w else None for w in written] == ["same.png", None, "same-2.png"]
    assert Image.open(written[0]).size == (160, 160)
    assert sorted(p.name for p in folder.rglob("*")) == ["a", "b", "broken.png", "same.png",
                                                          "same.png"]  # fmt: skip
