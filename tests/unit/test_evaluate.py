"""Metrics on small cases worked out by hand, and the report with every section."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from transferpilot.evaluate import (
    SECTIONS,
    balanced_interval,
    build_report,
    confident_mistakes,
    evaluate_predictions,
    expected_calibration_error,
    plot_confusion,
    to_html,
    top_k_accuracy,
    wilson,
    without_figures,
)

CLASSES = ["cat", "dog", "fox"]
LABELS = ["cat", "cat", "cat", "dog", "fox", "fox"]
PROBA = np.array(
    [
        [0.8, 0.1, 0.1],  # cat, right (0.8)
        [0.6, 0.3, 0.1],  # cat, right (0.6)
        [0.2, 0.7, 0.1],  # cat -> dog (0.7), cat second
        [0.1, 0.9, 0.0],  # dog, right (0.9)
        [0.5, 0.1, 0.4],  # fox -> cat (0.5), fox second
        [0.0, 0.1, 0.9],  # fox, right (0.9)
    ]
)


def test_metrics_match_hand_computation() -> None:
    ev = evaluate_predictions(LABELS, PROBA, CLASSES, ece_bins=10)
    s = ev.summary
    assert s["accuracy"] == pytest.approx(4 / 6)
    # recalls: cat 2/3, dog 1/1, fox 1/2
    assert s["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)
    # predicted: cat, cat, dog, dog, cat, fox
    # cat: P 2/3, R 2/3, F1 2/3; dog: P 1/2, R 1, F1 2/3; fox: P 1, R 1/2, F1 2/3
    assert s["macro_f1"] == pytest.approx(2 / 3)
    assert s["top3_accuracy"] == 1.0 and ev.extra["top_k"] == 3
    assert ev.confusion == [[2, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert ev.confusion_normalised[0] == pytest.approx([2 / 3, 1 / 3, 0])
    cat = ev.per_class[0]
    assert cat == {
        "class": "cat",
        "precision": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(2 / 3),
        "support": 3,
    }
    # ECE, 10 bins (lo, hi]: 0.5 wrong in (0.4, 0.5] -> 0.5 * 1/6; 0.6 right -> 0.4 * 1/6;
    # 0.7 wrong -> 0.7 * 1/6; 0.8 right -> 0.2 * 1/6; 0.9, 0.9 right in (0.8, 0.9] -> 0.1 * 2/6
    expected = (0.5 + 0.4 + 0.7 + 0.2 + 0.1 * 2) / 6
    assert s["ece"] == pytest.approx(expected)
    assert s["images"] == 6


def test_top_k_and_ece_edge_cases() -> None:
    y = np.array([0, 2])
    proba = np.array([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1]])
    assert top_k_accuracy(y, proba, 1) == 0.5
    assert top_k_accuracy(y, proba, 2) == 0.5
    assert top_k_accuracy(y, proba, 3) == 1.0
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([True, True])) == 0.0
    assert math.isnan(expected_calibration_error(np.array([]), np.array([])))


def test_labels_outside_the_classes_are_refused() -> None:
    with pytest.raises(ValueError, match="not among the model's classes"):
        evaluate_predictions(["cat", "wolf"], PROBA[:2], CLASSES)


def test_confident_mistakes_are_sorted_by_probability() -> None:
    paths = [f"img{i}.png" for i in range(6)]
    mistakes = confident_mistakes(paths, LABELS, PROBA, CLASSES, n=5)
    assert [(m.path, m.actual, m.predicted) for m in mistakes] == [
        ("img2.png", "cat", "dog"),
        ("img4.png", "fox", "cat"),
    ]
    assert mistakes[0].confidence == pytest.approx(0.7)


def _report(figures: dict[str, str], **extra) -> str:
    ev = evaluate_predictions(LABELS, PROBA, CLASSES)
    return build_report(
        validation={
            "source": "photos",
            "layout": "split folders",
            "classes": CLASSES,
            "counts": {
                "train": {"cat": 9, "dog": 9, "fox": 9},
                "val": {"cat": 3, "dog": 1, "fox": 2},
            },
            "totals": {"files_seen": 34, "usable": 33},
            "findings_by_kind": {"unreadable": 1},
            "findings": [
                {
                    "path": "cat/bad|name.jpg",
                    "kind": "unreadable",
                    "reason": "truncated",
                    "action": "skipped",
                }
            ],
        },
        profile={
            "model": "efficientnet_lite0",
            "size": {
                "n_train": 27,
                "n_classes": 3,
                "images_per_class": {"median": 9.0},
                "imbalance": 1.0,
            },
            "similarity": {"score": 0.7, "certainty": 0.8, "overlap": 0.9, "formula": "f"},
        },
        decision={
            "quadrant": "small/similar",
            "strategy": "linear",
            "layer": "pre_logits",
            "reason": "Because.",
        },
        train={"strategy": "linear", "best_C": 0.1, "val_accuracy": 4 / 6},
        metrics={"val": ev.summary},
        per_class={"val": ev.per_class},
        mistakes=[{"path": "img2.png", "actual": "cat", "predicted": "dog", "confidence": 0.7}],
        predictor={
            "path": "models/train/predictor.onnx",
            "checked": 6,
            "agreement": 1.0,
            "max_abs_diff": 1e-6,
        },
        figures=figures,
        **extra,
    )


def test_report_has_every_section_and_figure(tmp_path: Path) -> None:
    ev = evaluate_predictions(LABELS, PROBA, CLASSES)
    plot_confusion(ev, tmp_path / "confusion_val.png", "val")
    text = _report({"confusion_val": "confusion_val.png"})
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert headings == list(SECTIONS)
    assert "val accuracy **0.667**" in text
    assert "![confusion matrix, val](confusion_val.png)" in text
    assert "cat/bad\\|name.jpg" in text  # a pipe in a file name does not break the table
    assert "transferpilot predict IMAGE... --model models/train/predictor.onnx" in text

    page = to_html(text, tmp_path)
    assert page.startswith("<!doctype html>") and "<table>" in page
    assert "data:image/png;base64," in page and "confusion_val.png" not in page
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page

    plain = without_figures(text)
    assert "![" not in plain and "`confusion_val.png`" in plain


def test_a_missing_figure_is_named_not_fatal(tmp_path: Path) -> None:
    page = to_html(_report({"mistakes": "mistakes.png"}), tmp_path)
    assert "missing figure: mistakes.png" in page


def test_on_an_imbalanced_set_balanced_accuracy_and_macro_f1_lead_and_the_report_says_why():
    balanced = _report({}).split("\n## ")[0]
    assert "val accuracy **0.667** (95 % interval 0.300 to 0.903), balanced accuracy" in balanced
    assert "On 6 images one answer more or less right moves accuracy by 0.167" in balanced
    skewed = _report({}, imbalance=10.0).split("\n## ")[0]
    assert "val balanced accuracy **" in skewed and "macro-F1 **" in skewed
    assert "largest has 10.0x the training images of the smallest" in skewed
    assert "plain accuracy rewards answering the largest class" in skewed


def test_the_intervals_are_honest_at_small_n_and_at_the_edges() -> None:
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson(40, 50) == pytest.approx((0.6696, 0.8876), abs=1e-4)
    y = np.repeat([0, 1, 2], [40, 4, 4])
    pred = y.copy()
    pred[[0, 1, 40, 44]] = 9  # two of the 40 wrong, one of each 4
    low, high = balanced_interval(y, pred)
    assert low < (38 / 40 + 3 / 4 + 3 / 4) / 3 < high
    wide = high - low
    low, high = balanced_interval(np.repeat(y, 10), np.repeat(pred, 10))
    assert high - low < wide / 2  # ten times the images, a narrower interval
    low, high = balanced_interval(np.arange(3), np.arange(3))  # one image a class, all right
    assert low < 0.8 and high > 0.99  # open below: three images prove little
    ev = evaluate_predictions(LABELS, PROBA, CLASSES)
    assert ev.summary["accuracy_low"] < ev.summary["accuracy"] < ev.summary["accuracy_high"]
