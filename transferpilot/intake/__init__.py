"""Intake: find the images, decode each once, split, and report every problem.

>>> from transferpilot.config import PrepareParams
>>> intake = prepare_dataset(PrepareParams(source=Path("data/digits")))  # doctest: +SKIP
>>> intake.counts()["train"]["0"]  # doctest: +SKIP
142
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferpilot.config import PrepareParams
from transferpilot.intake._checks import (
    assign_splits,
    drop_label_conflicts,
    drop_small_classes,
    resolve_cross_split_duplicates,
)
from transferpilot.intake._discover import discover
from transferpilot.intake._inspect import inspect_all, notes_for
from transferpilot.intake._manifest import (
    read_holdout,
    read_manifest,
    write_holdout,
    write_manifest,
)
from transferpilot.intake._report import format_report
from transferpilot.intake._types import SPLITS, Candidate, Finding, ImageInfo, Record

__all__ = [
    "SPLITS",
    "Candidate",
    "Finding",
    "ImageInfo",
    "Intake",
    "Record",
    "format_report",
    "prepare_dataset",
    "read_holdout",
    "read_manifest",
    "write_holdout",
    "write_manifest",
]

log = logging.getLogger(__name__)


@dataclass
class Intake:
    """The outcome of intake: usable records, every finding, and a fatal problem if any."""

    source: Path
    layout: str
    files_seen: int
    records: list[Record]
    findings: list[Finding]
    fatal: str | None = None
    classes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class (splits and classes in order)."""
        table: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            per_class = Counter(r.label for r in self.records if r.split == split)
            if per_class:
                table[split] = {c: per_class.get(c, 0) for c in self.classes}
        return table

    def summary(self) -> dict[str, Any]:
        """The JSON validation report."""
        by_kind = Counter(f.kind for f in self.findings)
        skipped = sum(1 for f in self.findings if f.action == "skipped")
        return {
            "source": str(self.source),
            "layout": self.layout,
            "ok": self.fatal is None,
            "fatal": self.fatal,
            "classes": self.classes,
            "counts": self.counts(),
            "totals": {
                "files_seen": self.files_seen,
                "usable": len(self.records),
                "skipped_files": skipped,
                **{s: sum(1 for r in self.records if r.split == s) for s in SPLITS},
            },
            "findings_by_kind": dict(sorted(by_kind.items())),
            "findings": [vars(f) for f in self.findings],
        }


def _fatal_problem(records: list[Record]) -> str | None:
    train_classes = {r.label for r in records if r.split == "train"}
    if not records:
        return "no usable images"
    if len({r.label for r in records}) < 2:
        return "only one class has usable images; classification needs at least two"
    if len(train_classes) < 2:
        return "the training split has fewer than two classes"
    if not any(r.split == "val" for r in records):
        return "the validation split is empty"
    return None


def prepare_dataset(cfg: PrepareParams) -> Intake:
    """Run intake on ``cfg.source``; never raises for bad files, lists them instead.

    Raises :class:`~transferpilot.errors.DataError` only when the source itself
    is unusable (missing, no class folders, a CSV without ``path,label``).
    """
    layout, candidates, findings = discover(cfg.source)
    log.info("%s: %s, %d files", cfg.source, layout, len(candidates))
    results = inspect_all(candidates, max_pixels=cfg.max_pixels, workers=cfg.workers)
    records: list[Record] = []
    for cand, result in zip(candidates, results, strict=True):
        if isinstance(result, ImageInfo):
            findings.extend(notes_for(cand, result))
            records.append(
                Record(
                    cand.path,
                    cand.label,
                    cand.split or "",
                    result.sha256,
                    result.width,
                    result.height,
                    result.mode,
                    cand.shown,
                )
            )
        else:
            kind, reason = result
            findings.append(Finding(cand.shown, kind, reason, "skipped"))
    records, notes = drop_label_conflicts(records)
    findings += notes
    records, notes = drop_small_classes(records, cfg.min_images_per_class)
    findings += notes
    records = assign_splits(
        records,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        holdout=read_holdout(cfg.holdout),
    )
    records, notes = resolve_cross_split_duplicates(records, cfg.cross_split_duplicates)
    findings += notes
    records.sort(key=lambda r: (SPLITS.index(r.split), r.label, r.shown))
    classes = sorted({r.label for r in records})
    missing: dict[str, list[str]] = defaultdict(list)
    present = {(r.split, r.label) for r in records}
    for split in {r.split for r in records}:
        missing[split] = [c for c in classes if (split, c) not in present]
    for split in sorted(missing, key=SPLITS.index):
        for label in missing[split]:
            findings.append(
                Finding(
                    label, "class_missing_in_split", f"no {split} images for this class", "kept"
                )
            )
    return Intake(
        source=cfg.source,
        layout=layout,
        files_seen=len(candidates),
        records=records,
        findings=findings,
        fatal=_fatal_problem(records),
        classes=classes,
    )
