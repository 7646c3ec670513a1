"""Stage ``evaluate``: metrics, pictures and the report of what ``train`` produced, in ``reports/``.

Predictions come from the pipeline's own artefacts: the saved linear/SVM head on
the cached features of its layer, or the fine-tuned network on the images. They
are scored on ``val`` (and ``test`` when the data has one). Then the exported
predictor (``models/train/predictor.onnx``) is run on ``evaluate.check_images``
of the same images and its answers compared with the evaluation's.

Writes:

* ``reports/metrics.json`` — per split: accuracy, balanced accuracy, macro-F1,
  top-k, ECE, … (flat, for ``dvc metrics show/diff``), and the predictor check;
* ``reports/confusion.csv`` — ``actual,predicted`` per image of the headline
  split (test if present, else val), for ``dvc plots``' confusion template;
* ``reports/evaluation/`` — per-class metrics, per-image predictions, the
  confusion matrices and the mistakes gallery (PNG), copies of the profile plots;
* ``reports/report.md`` and ``reports/report.html`` (self-contained).
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from transferpilot.config import EvaluateParams, ModelParams
from transferpilot.decide import Decision, load_decision
from transferpilot.device import resolve_device
from transferpilot.errors import DataError
from transferpilot.evaluate import (
    build_report,
    confident_mistakes,
    evaluate_predictions,
    plot_confusion,
    plot_curves,
    plot_mistakes,
    to_html,
)
from transferpilot.export import Predictor
from transferpilot.features import FeatureTable
from transferpilot.io import fresh_dir, write_json, write_text
from transferpilot.stages import Paths, chosen_model, register_stage
from transferpilot.strategies import Context, get_strategy
from transferpilot.zoo import create_backbone

log = logging.getLogger(__name__)

EVAL_SPLITS = ("val", "test")


def _probabilities(
    model: ModelParams,
    params: EvaluateParams,
    paths: Paths,
    decision: Decision,
    table: FeatureTable,
    rows: dict[str, np.ndarray],
) -> tuple[list[str], dict[str, np.ndarray]]:
    """(classes, {split: (n, classes) probabilities}) from what the train stage saved."""
    backbone = create_backbone(model.name, arch=model.arch)
    strategy = get_strategy(decision.strategy).load(
        paths.models, backbone, decision, Context(device=resolve_device(params.device))
    )
    return strategy.classes_, {s: strategy.predict_proba(table, r) for s, r in rows.items()}


def _check_predictor(
    path: Path, image_paths: list[Path], expected: np.ndarray, n: int
) -> dict[str, Any]:
    """Run the exported predictor on ``n`` evenly spaced images; compare with ``expected``."""
    if n == 0 or not path.is_file() or len(image_paths) == 0:
        return {}
    pick = np.unique(np.linspace(0, len(image_paths) - 1, min(n, len(image_paths))).astype(int))
    got = Predictor(path).predict_proba([image_paths[i] for i in pick])
    want = expected[pick]
    return {
        "path": str(path),
        "checked": len(pick),
        "agreement": float((got.argmax(1) == want.argmax(1)).mean()),
        "max_abs_diff": float(np.abs(got - want).max()),
    }


def _confusion_csv(labels: list[str], predicted: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    writer.writerows(zip(labels, predicted, strict=True))
    return buffer.getvalue()


@register_stage("evaluate", sections=("model", "evaluate"))
def run(model: ModelParams, params: EvaluateParams, paths: Paths) -> dict[str, Any]:
    model = chosen_model(model, paths)
    decision = load_decision(paths.decision_json.path)
    strategy = get_strategy(decision.strategy)
    table = FeatureTable.open(paths.features, paths.manifest)
    records = table.records
    rows = {
        s: np.array([i for i, r in enumerate(records) if r.split == s], dtype=np.int64)
        for s in EVAL_SPLITS
    }
    rows = {s: r for s, r in rows.items() if len(r)}
    if not rows:
        raise DataError("nothing to evaluate: the prepared data has no val or test images")
    classes, proba = _probabilities(model, params, paths, decision, table, rows)
    headline = "test" if "test" in rows else "val"
    metrics: dict[str, Any] = {}
    per_class: dict[str, Any] = {}
    out = paths.reports
    figures: dict[str, str] = {}
    with fresh_dir(out / "evaluation") as tmp:
        for split, r in rows.items():
            labels = [records[i].label for i in r]
            evaluation = evaluate_predictions(
                labels, proba[split], classes, ece_bins=params.ece_bins
            )
            metrics[split] = evaluation.summary
            per_class[split] = evaluation.per_class
            predicted = [classes[j] for j in proba[split].argmax(1)]
            lines = [
                {"path": str(records[i].path), "actual": a, "predicted": p, "confidence": float(c)}
                for i, a, p, c in zip(r, labels, predicted, proba[split].max(1), strict=True)
            ]
            write_json(tmp / f"predictions_{split}.json", lines)
            write_json(
                tmp / f"confusion_{split}.json",
                {
                    "classes": classes,
                    "counts": evaluation.confusion,
                    "normalised": evaluation.confusion_normalised,
                },
            )
            plot_confusion(
                evaluation, tmp / f"confusion_{split}.png", f"Confusion matrix — {split}"
            )
            figures[f"confusion_{split}"] = f"evaluation/confusion_{split}.png"
            if split == headline:
                write_text(out / "confusion.csv", _confusion_csv(labels, predicted))
        r = rows[headline]
        mistakes = confident_mistakes(
            [str(records[i].path) for i in r],
            [records[i].label for i in r],
            proba[headline],
            classes,
            params.mistakes,
        )
        if params.mistakes:
            plot_mistakes(mistakes, tmp / "mistakes.png")
            figures["mistakes"] = "evaluation/mistakes.png"
        write_json(tmp / "mistakes.json", [vars(m) for m in mistakes])
        write_json(tmp / "per_class.json", per_class)
        curves = strategy.curves(paths.models)
        if curves:
            plot_curves(curves, tmp / "curves.png")
            figures["curves"] = "evaluation/curves.png"
        for name in ("similarity", "probes"):
            source = paths.profile / f"{name}.png"
            if source.is_file():
                shutil.copyfile(source, tmp / source.name)
                figures[name] = f"evaluation/{source.name}"
        check = _check_predictor(
            paths.predictor,
            [records[i].path for i in r],
            proba[headline],
            params.check_images,
        )
    if check:
        metrics["predictor"] = {k: v for k, v in check.items() if k != "path"}
        if check["agreement"] < 1.0:
            log.warning(
                "the exported predictor disagrees with the evaluation on %.1f%% of %d images",
                100 * (1 - check["agreement"]),
                check["checked"],
            )
    write_json(paths.metrics.path, metrics)
    report = build_report(
        validation=paths.validation.read_json(),
        profile=paths.profile_json.read_json(),
        decision=paths.decision_json.read_json(),
        train=paths.train_json.read_json(),
        metrics=metrics,
        per_class=per_class,
        mistakes=[vars(m) for m in mistakes],
        predictor=check,
        figures=figures,
        probability_note=strategy.probability_note,
    )
    write_text(out / "report.md", report)
    write_text(out / "report.html", to_html(report, out))
    summary = {
        "headline_split": headline,
        **{f"{headline}_{k}": v for k, v in metrics[headline].items()},
    }
    log.info(
        "evaluate: %s accuracy %.3f, balanced %.3f; report %s",
        headline,
        metrics[headline]["accuracy"],
        metrics[headline]["balanced_accuracy"],
        out / "report.md",
    )
    return summary | {"report": str(out / "report.md")}
