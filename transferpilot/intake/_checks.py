"""Dataset-level checks: label conflicts, class sizes, splitting, duplicates across splits."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from transferpilot.intake._types import SPLITS, Finding, Record


def drop_label_conflicts(records: Sequence[Record]) -> tuple[list[Record], list[Finding]]:
    """The same bytes under two labels cannot both be right: skip every copy."""
    labels: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        labels[rec.sha256].add(rec.label)
    kept, findings = [], []
    for rec in records:
        if len(labels[rec.sha256]) > 1:
            others = ", ".join(sorted(labels[rec.sha256] - {rec.label}))
            findings.append(
                Finding(
                    rec.shown, "label_conflict", f"same image also labelled {others}", "skipped"
                )
            )
        else:
            kept.append(rec)
    return kept, findings


def drop_small_classes(
    records: Sequence[Record], min_images: int
) -> tuple[list[Record], list[Finding]]:
    """Classes with fewer than ``min_images`` usable images are dropped, and listed."""
    counts: dict[str, int] = defaultdict(int)
    for rec in records:
        counts[rec.label] += 1
    small = {label for label, n in counts.items() if n < min_images}
    findings = [
        Finding(
            label,
            "small_class",
            f"only {counts[label]} usable image(s), fewer than min_images_per_class={min_images}",
            "class dropped",
        )
        for label in sorted(small)
    ]
    return [r for r in records if r.label not in small], findings


def _split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Val and test counts for a class of n images (at least one each when asked, train kept)."""
    n_val = max(1, round(val_fraction * n)) if n >= 2 else 0
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 and n >= 3 else 0
    while n - n_val - n_test < 1 and (n_val or n_test):
        if n_test:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def assign_splits(
    records: Sequence[Record],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    holdout: frozenset[str] = frozenset(),
) -> list[Record]:
    """Stratified split of the records whose split is unset (``""``), seeded.

    Per class, identical files are grouped so copies land in the same split; the
    groups are shuffled with ``random.Random(f"{seed}-{label}")`` and the first
    ones fill val, then test, the rest is train.

    A frozen ``holdout`` (SHA-256 of images) overrides the test draw: its images are the
    test split, and an image outside it that the draw put in test is trained on instead,
    so new images join training and the evaluation images stay the same as the folder
    grows. A holdout equal to the draw's test split changes nothing.
    """
    from dataclasses import replace

    fixed = [r for r in records if r.split]
    groups: dict[str, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        if not rec.split:
            groups[rec.label][rec.sha256].append(rec)
    out = list(fixed)
    for label in sorted(groups):
        bundles = sorted(groups[label].values(), key=lambda b: b[0].shown)
        random.Random(f"{seed}-{label}").shuffle(bundles)
        n = sum(len(b) for b in bundles)
        n_val, n_test = _split_sizes(n, val_fraction, test_fraction)
        filled = {"val": 0, "test": 0}
        for bundle in bundles:
            if filled["val"] + len(bundle) <= n_val:
                split = "val"
            elif filled["test"] + len(bundle) <= n_test:
                split = "test"
            else:
                split = "train"
            if split != "train":
                filled[split] += len(bundle)
            if holdout and (bundle[0].sha256 in holdout or split == "test"):
                split = "test" if bundle[0].sha256 in holdout else "train"
            out.extend(replace(rec, split=split) for rec in bundle)
    return out


def resolve_cross_split_duplicates(
    records: Sequence[Record], policy: str
) -> tuple[list[Record], list[Finding]]:
    """Report identical files; with ``policy="drop"`` keep an image out of val/test
    when it is also in an earlier split (train, then val), so evaluation never
    sees a training image.
    """
    first: dict[str, Record] = {}
    splits_of: dict[str, set[str]] = defaultdict(set)
    for rec in sorted(records, key=lambda r: (SPLITS.index(r.split), r.shown)):
        first.setdefault(rec.sha256, rec)
        splits_of[rec.sha256].add(rec.split)
    kept, findings = [], []
    for rec in records:
        origin = first[rec.sha256]
        if origin is rec:
            kept.append(rec)
            continue
        if origin.split == rec.split:
            findings.append(
                Finding(
                    rec.shown,
                    "duplicate",
                    f"same bytes as {origin.shown} (both {rec.split})",
                    "kept",
                )
            )
            kept.append(rec)
        elif policy == "drop":
            findings.append(
                Finding(
                    rec.shown,
                    "cross_split_duplicate",
                    f"same bytes as {origin.split} image {origin.shown}",
                    f"dropped from {rec.split}",
                )
            )
        else:
            findings.append(
                Finding(
                    rec.shown,
                    "cross_split_duplicate",
                    f"same bytes as {origin.split} image {origin.shown}",
                    "kept",
                )
            )
            kept.append(rec)
    return kept, findings
