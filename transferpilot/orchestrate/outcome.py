"""What a finished pipeline left, as the flow publishes it and ``transferpilot run`` prints it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The report artifact's figures are scaled down to fit this many pixels.
REPORT_FIGURE_PX = 900


@dataclass(frozen=True)
class Outcome:
    """What a finished pipeline left: the texts the flow publishes and ``run`` prints."""

    decision: dict[str, Any]
    metrics: dict[str, Any]
    report_path: Path
    report_html: Path
    summary_markdown: str

    @property
    def report_markdown(self) -> str:
        """The report with its figures inlined (scaled to ``REPORT_FIGURE_PX``): the flow's
        artifact. Made when asked, so that printing a result reads no figure."""
        from transferpilot.evaluate import inline_figures

        report = self.report_path.read_text(encoding="utf-8")
        return inline_figures(report, self.report_path.parent, max_px=REPORT_FIGURE_PX)

    @property
    def headline_split(self) -> str:
        return "test" if "test" in self.metrics else "val"

    def metric_rows(self, digits: int = 3) -> list[dict[str, Any]]:
        """The table artifact: one row per metric, one column per split, rounded."""
        splits = [s for s in ("val", "test") if s in self.metrics]
        names = dict.fromkeys(k for s in splits for k in self.metrics[s])
        rows = []
        for name in names:
            row: dict[str, Any] = {"metric": name}
            for split in splits:
                value = self.metrics[split].get(name)
                row[split] = round(value, digits) if isinstance(value, float) else value
            rows.append(row)
        return rows

    def headline(self) -> str:
        m = self.metrics.get(self.headline_split, {})
        return (
            f"{self.headline_split} accuracy {m.get('accuracy', float('nan')):.3f}, "
            f"balanced accuracy {m.get('balanced_accuracy', float('nan')):.3f}, "
            f"macro-F1 {m.get('macro_f1', float('nan')):.3f} ({m.get('images', 0)} images)"
        )


def outcome(project: Path) -> Outcome:
    """Read the decision, the metrics and the report that the stages wrote."""
    from transferpilot.decide import Decision, against
    from transferpilot.profile import Profile
    from transferpilot.stages import Paths

    paths = Paths(project)
    decision = Decision.from_dict(paths.decision_json.read_json())
    profile = Profile.from_dict(paths.profile_json.read_json())
    metrics = paths.metrics.read_json()
    sim, size = profile.similarity, profile.size
    overlap = "n/a" if sim.overlap is None else f"{sim.overlap:.2f}"
    threshold = decision.evidence.get("similarity_threshold")
    similarity = f"{sim.score:.2f}" if threshold is None else against(sim.score, threshold)
    summary = "\n".join(
        [
            "# transferpilot: profile and decision",
            "",
            f"- **{size.n_train}** training images, **{size.n_classes}** classes "
            f"(median {size.images_per_class['median']:g} per class)",
            f"- similarity to ImageNet **{similarity}** "
            f"(head certainty {sim.certainty:.2f}, feature overlap {overlap})",
            f"- quadrant **{decision.quadrant}** → **{decision.strategy}** on `{decision.layer}`",
            "",
            f"> {decision.reason}",
        ]
    )
    return Outcome(
        decision=decision.to_dict(),
        metrics=metrics,
        report_path=paths.reports / "report.md",
        report_html=paths.reports / "report.html",
        summary_markdown=summary,
    )
