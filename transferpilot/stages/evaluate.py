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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferpilot.balance import IMBALANCED, imbalance
from transferpilot.config import EvaluateParams, ModelParams
from transferpilot.decide import Decision, load_decision
from transferpilot.errors import DataError, ModelError
from transferpilot.evaluate import (
    SHOWN_ISSUES,
    Mistake,
    build_report,
    confident_mistakes,
    evaluate_predictions,
    plot_confusion,
    plot_curves,
    plot_mistakes,
    to_html,
)
from transferpilot.features import FeatureTable
from transferpilot.intake import Record
from transferpilot.io import fresh_dir, write_json, write_text
from transferpilot.predictor import Predictor
from transferpilot.stages import Paths, chosen_model, register_stage
from transferpilot.strategies import Context, get_strategy

log = logging.getLogger(__name__)

EVAL_SPLITS = ("val", "test")


def _probabilities(
    model: ModelParams,
    params: EvaluateParams,
    paths: Paths,
    decision: Decision,
    table: FeatureTable,
    rows: dict[str, np.ndarray],
) -> tuple[Any, dict[str, np.ndarray]]:
    """(the trained strategy, {split: (n, classes) probabilities}) from what the train
    stage saved. A head on cached features builds no network and imports no PyTorch
    for these (the mistakes' maps do, when there are mistakes to explain)."""
    kind = get_strategy(decision.strategy)
    context = Context()
    if kind.needs_network:
        from transferpilot.device import resolve_device  # defers torch

        context = Context(device=resolve_device(params.device))
    backbone = table.backbone(model.name, model.arch)
    strategy = kind.load(paths.models, backbone, decision, context)
    return strategy, {s: strategy.predict_proba(table, r) for s, r in rows.items()}


def _explained(strategy: Any, mistakes: Sequence[Any], classes: list[str]) -> tuple[list, str]:
    """Heat maps of the predicted class over each mistake (the network is built only
    here, for a head), and the words saying how they were made or why there are none."""
    if not mistakes:
        return [], ""
    from transferpilot.explain import Explainer  # defers torch and captum

    try:
        explainer = Explainer(*strategy.predictor(), classes)
    except ModelError as err:
        log.warning("no maps over the mistakes: %s", err)
        return [], f"No maps over the mistakes: {err}"
    targets = [classes.index(m.predicted) for m in mistakes]
    found = explainer.explain_files([m.path for m in mistakes], targets)
    return found, f"Overlay: where the model looked for the class it answered — {explainer.method}."


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


def _write_split(
    folder: Path,
    split: str,
    records: Sequence[Record],
    proba: np.ndarray,
    classes: list[str],
    params: EvaluateParams,
) -> tuple[Any, list[str]]:
    """One split's evaluation, its per-image predictions and its confusion matrix (JSON
    and PNG) in ``folder``; returns the evaluation and the predicted labels."""
    labels = [rec.label for rec in records]
    evaluation = evaluate_predictions(labels, proba, classes, ece_bins=params.ece_bins)
    predicted = [classes[j] for j in proba.argmax(1)]
    lines = [
        {
            "path": str(rec.path),
            "sha256": rec.sha256,
            "actual": a,
            "predicted": p,
            "confidence": float(c),
        }
        for rec, a, p, c in zip(records, labels, predicted, proba.max(1), strict=True)
    ]
    write_json(folder / f"predictions_{split}.json", lines)
    write_json(
        folder / f"confusion_{split}.json",
        {
            "classes": classes,
            "counts": evaluation.confusion,
            "normalised": evaluation.confusion_normalised,
        },
    )
    plot_confusion(evaluation, folder / f"confusion_{split}.png", f"Confusion matrix — {split}")
    return evaluation, predicted


def _side_figures(strategy: Any, paths: Paths, folder: Path) -> dict[str, str]:
    """The training curves (when the strategy has them) and the profile's figures, in
    ``folder``: the report's figures beside the evaluation's own."""
    figures = {}
    curves = strategy.curves(paths.models)
    if curves:
        plot_curves(curves, folder / "curves.png")
        figures["curves"] = "evaluation/curves.png"
    for name in ("similarity", "probes"):
        source = paths.profile / f"{name}.png"
        if source.is_file():
            shutil.copyfile(source, folder / source.name)
            figures[name] = f"evaluation/{source.name}"
    return figures


def _label_issues(paths: Paths, folder: Path) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The train stage's label issues (``None``: not looked for), as
    ``reports/label_issues.csv`` and a gallery of the most suspect in ``folder``."""
    looked = paths.label_issues.path.is_file()
    issues = paths.label_issues.read_json() if looked else {"issues": []}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "labelled", "looks_like", "p_labelled", "p_looks_like"])
    for i in issues["issues"]:
        writer.writerow(
            [i["path"], i["given"], i["suggested"], f"{i['given_prob']:.4f}",
             f"{i['suggested_prob']:.4f}"]
        )  # fmt: skip
    write_text(paths.reports / "label_issues.csv", buffer.getvalue())  # a DVC output: always
    if not issues["issues"]:
        return (issues if looked else None), {}
    suspects = [
        Mistake(i["path"], i["given"], i["suggested"], i["suggested_prob"])
        for i in issues["issues"][:SHOWN_ISSUES]
    ]
    title = "Suspected label issues (labelled → looks like, probability)"
    plot_mistakes(suspects, folder / "label_issues.png", title=title)
    return issues, {"label_issues": "evaluation/label_issues.png"}


def _write_report(
    paths: Paths,
    metrics: dict[str, Any],
    per_class: dict[str, Any],
    mistakes: Sequence[Any],
    check: dict[str, Any] | None,
    figures: dict[str, str],
    strategy: Any,
    extra: dict[str, Any],
) -> None:
    """``reports/report.md`` and its HTML: the data, profile, decision, training, metrics."""
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
        label_issues=extra["label_issues"],
        explained=extra["explained"],
        imbalance=extra["imbalance"],
    )
    write_text(paths.reports / "report.md", report)
    write_text(paths.reports / "report.html", to_html(report, paths.reports))


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
    trained, proba = _probabilities(model, params, paths, decision, table, rows)
    classes = trained.classes_
    headline = "test" if "test" in rows else "val"
    metrics: dict[str, Any] = {}
    per_class: dict[str, Any] = {}
    out = paths.reports
    figures: dict[str, str] = {}
    with fresh_dir(out / "evaluation") as tmp:
        for split, r in rows.items():
            split_records = [records[i] for i in r]
            evaluation, predicted = _write_split(
                tmp, split, split_records, proba[split], classes, params
            )
            metrics[split] = evaluation.summary
            per_class[split] = evaluation.per_class
            figures[f"confusion_{split}"] = f"evaluation/confusion_{split}.png"
            if split == headline:
                labels = [rec.label for rec in split_records]
                write_text(out / "confusion.csv", _confusion_csv(labels, predicted))
        shown = [records[i] for i in rows[headline]]
        mistakes = confident_mistakes(
            [str(rec.path) for rec in shown],
            [rec.label for rec in shown],
            proba[headline],
            classes,
            params.mistakes,
        )
        overlays, explained = _explained(trained, mistakes, classes) if params.explain else ([], "")
        if params.mistakes:
            plot_mistakes(mistakes, tmp / "mistakes.png", overlays=overlays)
            figures["mistakes"] = "evaluation/mistakes.png"
        write_json(tmp / "mistakes.json", [vars(m) for m in mistakes])
        write_json(tmp / "per_class.json", per_class)
        figures |= _side_figures(strategy, paths, tmp)
        issues, issue_figures = _label_issues(paths, tmp)
        figures |= issue_figures
        check = _check_predictor(
            paths.predictor, [rec.path for rec in shown], proba[headline], params.check_images
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
    ratio = imbalance([r.label for r in records if r.split == "train"])
    report = {"label_issues": issues, "explained": explained, "imbalance": ratio}
    _write_report(paths, metrics, per_class, mistakes, check, figures, strategy, report)
    summary = {
        "headline_split": headline,
        **{f"{headline}_{k}": v for k, v in metrics[headline].items()},
    }
    log.info(
        "evaluate: %s accuracy %.3f, balanced %.3f%s; report %s",
        headline,
        metrics[headline]["accuracy"],
        metrics[headline]["balanced_accuracy"],
        f" (imbalanced {ratio:.1f}x: balanced accuracy leads)" if ratio > IMBALANCED else "",
        out / "report.md",
    )
    return summary | {"report": str(out / "report.md")}
