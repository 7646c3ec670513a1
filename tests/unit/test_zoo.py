"""The model zoo: names, errors that help, and users' own checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from transferpilot.errors import ModelError
from transferpilot.zoo import create_backbone, list_models, register_model
from transferpilot.zoo._timm import load_state_dict_by_order


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ModelError) as err:
        create_backbone("resnet_fifty")
    msg = str(err.value)
    for valid in ("efficientnet_lite0", "timm:<name>", "torchvision:<name>", "file:<path>"):
        assert valid in msg
    assert set(list_models()) >= {"efficientnet_lite0", "timm:<name>"}


def test_unknown_timm_and_torchvision_names_suggest_close_ones() -> None:
    with pytest.raises(ModelError, match=r"did you mean: .*resnet50"):
        create_backbone("timm:resnet5O")
    with pytest.raises(ModelError, match=r"torchvision has no .*resnet18"):
        create_backbone("torchvision:resnet81")


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("efficientnet_lite0")(lambda *, pretrained=True: None)


def test_timm_weights_that_cannot_download_say_where_to_put_them() -> None:
    # HF_HUB_OFFLINE=1 is set for the whole suite (tests/conftest.py): nothing downloads.
    with pytest.raises(ModelError) as err:
        create_backbone("timm:resnet18")
    msg = str(err.value)
    assert "timm/resnet18" in msg and "cache" in msg and "file:<path>" in msg


def test_torchvision_weights_that_cannot_download_say_where_to_put_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def offline(url: str, *args: object, **kwargs: object) -> None:
        raise OSError(f"offline: {url}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ModelError) as err:
        create_backbone("torchvision:resnet18")
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and "checkpoints" in msg


def test_load_by_order_checks_count_and_every_shape() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    good = {f"x{i}": t.clone() for i, t in enumerate(model.state_dict().values())}
    load_state_dict_by_order(model, good, source="ok.pth")
    short = dict(list(good.items())[:3])
    with pytest.raises(ModelError, match="has 3 tensors, the architecture expects 4"):
        load_state_dict_by_order(model, short, source="short.pth")
    wrong = {**good, "x2": torch.zeros(5, 4)}
    with pytest.raises(ModelError, match=r"tensor #2 x2 has shape \(5, 4\).*needs \(2, 4\)"):
        load_state_dict_by_order(model, wrong, source="wrong.pth")


def _trained_tiny(num_classes: int = 3) -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model("test_resnet", pretrained=False, num_classes=num_classes).eval()


def test_user_safetensors_checkpoint_with_class_names(tmp_path: Path) -> None:
    model = _trained_tiny()
    path = tmp_path / "mine.safetensors"
    save_file(model.state_dict(), path, metadata={"classes": json.dumps(["ant", "bee", "wasp"])})
    backbone = create_backbone(f"file:{path}", arch="timm:test_resnet")

    assert backbone.class_names == ("ant", "bee", "wasp")
    x = torch.randn(2, *backbone.data_config.input_size)
    with torch.no_grad():
        assert torch.allclose(backbone.model(x), model(x), atol=1e-6)
    assert backbone.weights_digest and backbone.spec == f"file:{path}"


def test_user_torch_state_dict_is_read_weights_only(tmp_path: Path) -> None:
    model = _trained_tiny(num_classes=1000)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "mine.pt")
    backbone = create_backbone(f"file:{tmp_path / 'mine.pt'}", arch="test_resnet")
    assert backbone.class_names[0] == "tench"  # a 1000-way head gets ImageNet's names

    class Payload:
        def __reduce__(self):  # would run code if unpickled
            return (print, ("pwned",))

    torch.save({"weights": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        create_backbone(f"file:{tmp_path / 'evil.pt'}", arch="timm:test_resnet")


def test_checkpoint_that_does_not_fit_the_arch(tmp_path: Path) -> None:
    save_file(_trained_tiny().state_dict(), tmp_path / "m.safetensors")
    with pytest.raises(ModelError, match="does not fit timm:test_efficientnet"):
        create_backbone(f"file:{tmp_path / 'm.safetensors'}", arch="timm:test_efficientnet")
    with pytest.raises(ModelError, match="needs an architecture"):
        create_backbone(f"file:{tmp_path / 'm.safetensors'}")


def test_the_named_models_are_listed_with_their_preprocessing() -> None:
    from transferpilot.zoo import describe_named

    found = {name: (about, cfg) for name, about, cfg in describe_named()}
    sizes = {name: found[name][1].input_size[1] for name in found}
    assert {
        "efficientnet_lite0": 224,
        "efficientnet_lite1": 240,
        "efficientnet_lite2": 260,
    }.items() <= sizes.items()
    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        about, cfg = found[name]
        assert "offline" in about and cfg.mean == (0.5, 0.5, 0.5) and cfg.interpolation == "bicubic"


def test_a_shard_worker_rebuilds_a_file_model_when_its_file_changes(tmp_path) -> None:
    """Dask workers keep one backbone per process; a long-lived worker must not go on
    using weights that were replaced on disk (their digest keys the feature cache)."""
    import os

    from tests.projects import tiny_model
    from transferpilot.config import ModelParams
    from transferpilot.stages.extract import _backbone

    model = ModelParams(**tiny_model(tmp_path / "tiny.safetensors"))
    first = _backbone(model)
    assert _backbone(model) is first  # built once per process
    weights = tmp_path / "tiny.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert _backbone(model) is not first


@pytest.mark.parametrize(
    ("classes", "expected"),
    [
        (["ants", "bees"], [310, 309]),  # plural folder names, ImageNet's synonyms
        (["n01440764", "n02102040"], [0, 217]),  # WordNet ids (imagenette's folders)
        (["Golden_Retriever", "tabby-cat"], [207, 281]),  # case, _ and - as spaces
        (["crane", "ant"], None),  # "crane" names a bird and a machine: ambiguous
        (["no", "yes"], None),  # brain MRI
        ([str(i) for i in range(10)], None),  # digits
        (["daisy", "buttercup"], None),  # one class alone does not make a head
        (["ant", "ants"], None),  # two classes, one ImageNet class
    ],
)
def test_class_names_map_onto_the_imagenet_head_only_when_all_name_one_class(
    classes: list[str], expected: list[int] | None
) -> None:
    from transferpilot.zoo import imagenet_class_names, imagenet_indices

    head = imagenet_class_names(1000)
    assert imagenet_indices(classes, head) == expected
    if expected is not None:  # a TF head with a background class first: shifted by one
        assert imagenet_indices(classes, ("background", *head)) == [i + 1 for i in expected]
    assert imagenet_indices(classes, [f"class_{i}" for i in range(1000)]) is None
