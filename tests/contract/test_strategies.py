"""The strategy contract, over every registered strategy (as timm tests every model of
``list_models()`` and scikit-learn checks every estimator): fit, save, load, predict and
export agree. A strategy registered later is checked here without a line added."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.projects import feature_table
from transferpilot.config import TrainParams
from transferpilot.decide import Decision
from transferpilot.export import Predictor, export_onnx
from transferpilot.layer_names import PRE_LOGITS
from transferpilot.strategies import Context, get_strategy, list_strategies

#: One short plan every strategy reads what it needs of (fine-tuning: one epoch).
TRAIN = TrainParams(
    epochs=1,
    lr_ratio=1.0,
    batch_size=8,
    input_size=32,
    workers=0,
    cv_folds=2,
    c_grid=[1.0],
    export=False,
)


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random network and the feature table of 24 tiny images whose classes are
    named after ImageNet classes (so the pretrained head applies too)."""
    root = tmp_path_factory.mktemp("strategies")
    return feature_table(root, {"tench": 12, "goldfish": 12}, "timm:test_efficientnet")


def decision_for(name: str) -> Decision:
    return Decision(
        quadrant="test",
        size="small",
        domain="similar",
        strategy=name,
        layer=PRE_LOGITS,
        reason="the strategy contract",
        train=TRAIN,
    )


@pytest.mark.parametrize("name", list_strategies())
def test_fit_save_load_predict_and_export_agree(name: str, tiny_table, tmp_path: Path) -> None:
    backbone, table = tiny_table
    decision = decision_for(name)
    kind = get_strategy(name)
    assert kind.name == name
    assert isinstance(kind.distributed, bool) and isinstance(kind.probability_note, str)

    split = table.split
    strategy = kind(backbone, decision, Context(checkpoint_dir=tmp_path / "checkpoints"))
    assert strategy.fit(table, split == "train", split == "val") is strategy
    assert sorted(strategy.classes_) == ["goldfish", "tench"]
    assert isinstance(strategy.summary_, dict)
    oof = strategy.out_of_fold_proba()  # the label-issue evidence, when it has its own
    if oof is not None:
        assert oof.shape == ((split == "train").sum(), 2)
        np.testing.assert_allclose(oof.sum(1), 1.0, rtol=1e-5)
    rows = np.flatnonzero(split == "val")
    proba = strategy.predict_proba(table, rows)
    assert proba.shape == (len(rows), 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)

    strategy.save(tmp_path / "model")
    loaded = kind.load(tmp_path / "model", backbone, decision)
    assert loaded.classes_ == strategy.classes_
    np.testing.assert_allclose(loaded.predict_proba(table, rows), proba, atol=1e-6)
    assert isinstance(kind.curves(tmp_path / "model"), dict)
    assert isinstance(kind.needs_network, bool)
    if not kind.needs_network:  # it predicts from the cached features: no network is built
        recorded = table.backbone("no-such-model")  # building it would raise
        reloaded = kind.load(tmp_path / "model", recorded, decision)
        np.testing.assert_allclose(reloaded.predict_proba(table, rows), proba, atol=1e-6)

    # the exported graph computes what the module does, to 1e-5 ...
    module, config = loaded.predictor()
    meta = {"classes": loaded.classes_, "data_config": config.as_dict(), "strategy": name}
    path = export_onnx(module, tmp_path / "predictor.onnx", meta)
    predictor = Predictor(path)
    images = torch.rand(3, *config.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = module.eval()(images).numpy()
    np.testing.assert_allclose(
        predictor.session.run(None, {"image": images.numpy()})[0], want, atol=1e-5
    )
    # ... and, from the image files through its own preprocessing, what the strategy predicts
    got = predictor.predict_proba([table.records[i].path for i in rows])
    np.testing.assert_allclose(got, proba, atol=1e-4)
    assert predictor.classes == loaded.classes_
