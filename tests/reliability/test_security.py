"""Files a user hands in are never unpickled: a booby-trapped pickle in every place the
product loads a model from is refused, and its payload never runs."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from transferpilot.errors import ModelError


class Trap:
    """Unpickling this writes a marker file (what a malicious payload would do instead)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def trapped(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"weight": Trap(marker)}))
    return path


def test_a_head_with_a_wrong_digest_is_never_unpickled(tmp_path: Path) -> None:
    from transferpilot.strategies import load_classifier

    marker = tmp_path / "ran"
    head = trapped(tmp_path / "head.joblib", marker)
    (tmp_path / "head.json").write_text(json.dumps({"sha256": "0" * 64, "model": "m"}))
    with pytest.raises(ModelError, match="digest"):
        load_classifier(head)
    assert not marker.exists()


def test_a_pickled_checkpoint_is_refused_by_weights_only_loading(tmp_path: Path) -> None:
    from transferpilot.zoo import create_backbone

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"weight": Trap(marker)}, evil)
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        create_backbone(f"file:{evil}", arch="timm:test_resnet")
    assert not marker.exists()


def test_a_pickle_posing_as_a_predictor_is_refused(tmp_path: Path) -> None:
    from transferpilot.predictor import Predictor

    marker = tmp_path / "ran"
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        Predictor(trapped(tmp_path / "predictor.onnx", marker))
    assert not marker.exists()
