"""Evaluation: metrics, pictures and the report of a trained model.

>>> ev = evaluate_predictions(labels, proba, classes)  # doctest: +SKIP
>>> ev.summary["balanced_accuracy"], ev.confusion  # doctest: +SKIP
"""

from transferpilot.evaluate._metrics import (
    Evaluation,
    balanced_interval,
    evaluate_predictions,
    expected_calibration_error,
    top_k_accuracy,
    wilson,
)
from transferpilot.evaluate._plots import (
    Mistake,
    confident_mistakes,
    plot_confusion,
    plot_curves,
    plot_mistakes,
)
from transferpilot.evaluate._report import (
    SECTIONS,
    SHOWN_ISSUES,
    build_report,
    inline_figures,
    to_html,
    without_figures,
)

__all__ = [
    "SECTIONS",
    "SHOWN_ISSUES",
    "Evaluation",
    "Mistake",
    "balanced_interval",
    "build_report",
    "confident_mistakes",
    "evaluate_predictions",
    "expected_calibration_error",
    "inline_figures",
    "plot_confusion",
    "plot_curves",
    "plot_mistakes",
    "to_html",
    "top_k_accuracy",
    "wilson",
    "without_figures",
]
