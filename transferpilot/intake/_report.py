"""The validation report as text a person reads (the JSON is ``Intake.summary()``)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

#: Kinds so frequent and harmless that the text groups them (the JSON lists each).
GROUPED_KINDS = {"converted"}
#: Actions that keep the file: a note, not a problem.
NOTE_ACTIONS = {"kept", "converted to RGB", "first frame used"}


def format_report(summary: dict[str, Any]) -> str:
    """Render :meth:`Intake.summary` as a short plain-text report."""
    totals = summary["totals"]
    lines = [
        f"Dataset: {summary['source']} ({summary['layout']})",
        f"Files seen: {totals['files_seen']}, usable: {totals['usable']}, "
        f"skipped: {totals['skipped_files']}",
    ]
    if summary["fatal"]:
        lines.append(f"CANNOT CONTINUE: {summary['fatal']}")
    counts = summary["counts"]
    if counts:
        splits = list(counts)
        width = max([5, *(len(c) for c in summary["classes"])])
        lines += ["", f"{'class':<{width}}  " + "  ".join(f"{s:>6}" for s in splits)]
        for label in summary["classes"]:
            row = "  ".join(f"{counts[s].get(label, 0):>6}" for s in splits)
            lines.append(f"{label:<{width}}  {row}")
        total_row = "  ".join(f"{sum(counts[s].values()):>6}" for s in splits)
        lines.append(f"{'total':<{width}}  {total_row}")
    problems = [f for f in summary["findings"] if f["action"] not in NOTE_ACTIONS]
    notes = [f for f in summary["findings"] if f["action"] in NOTE_ACTIONS]
    lines += ["", f"Skipped or dropped: {len(problems)}" + ("" if problems else " (none)")]
    lines += _by_kind(problems)
    lines += ["", f"Notes: {len(notes)}" + ("" if notes else " (none)")]
    lines += _by_kind(notes)
    return "\n".join(lines) + "\n"


def _by_kind(findings: list[dict[str, str]]) -> list[str]:
    lines = []
    by_kind: dict[str, list[dict[str, str]]] = defaultdict(list)
    for item in findings:
        by_kind[item["kind"]].append(item)
    for kind, items in sorted(by_kind.items()):
        lines.append(f"  {kind} ({len(items)}):")
        if kind in GROUPED_KINDS:
            groups: dict[tuple[str, str], list[str]] = defaultdict(list)
            for item in items:
                groups[(item["reason"], item["action"])].append(item["path"])
            for (reason, action), paths in sorted(groups.items()):
                example = ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")
                lines.append(f"    {reason} -> {action}: {len(paths)} file(s), e.g. {example}")
        else:
            lines += [f"    {i['path']}: {i['reason']} -> {i['action']}" for i in items]
    return lines
