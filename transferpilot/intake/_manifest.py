"""``manifest.csv``: the usable images, one row each, for every later stage."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from transferpilot.errors import DataError
from transferpilot.intake._types import Record
from transferpilot.io import atomic_open

COLUMNS = ("path", "label", "split", "sha256", "width", "height", "mode")


def manifest_path(path: Path) -> str:
    """How the manifest names an image: relative to the working directory when inside it."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    return absolute if relative.startswith("..") else Path(relative).as_posix()


def write_manifest(path: Path, records: Sequence[Record]) -> None:
    """Atomically write the records as CSV with :data:`COLUMNS`."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for r in records:
            writer.writerow(
                (manifest_path(r.path), r.label, r.split, r.sha256, r.width, r.height, r.mode)
            )


def read_manifest(path: Path) -> list[Record]:
    """Read ``manifest.csv`` back into records."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise DataError(f"{path} not found: run the prepare stage first") from None
    try:
        return [
            Record(
                Path(row["path"]),
                row["label"],
                row["split"],
                row["sha256"],
                int(row["width"]),
                int(row["height"]),
                row["mode"],
                row["path"],
            )
            for row in rows
        ]
    except (KeyError, ValueError) as err:
        raise DataError(f"{path}: malformed manifest ({err}); re-run the prepare stage") from None


#: The frozen holdout's columns: the image's content hash (what counts), then for people.
HOLDOUT_COLUMNS = ("sha256", "label", "path")


def read_holdout(path: Path) -> frozenset[str]:
    """The SHA-256 of the frozen evaluation images listed in ``path`` (none when it is
    missing or lists none: the split then follows the fractions)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        return frozenset()
    try:
        hashes = frozenset(row["sha256"].strip() for row in rows)
    except (KeyError, AttributeError):
        raise DataError(
            f"{path}: not a holdout list (a CSV with a sha256 column); "
            "restore it from Git, or empty it to split by the fractions again"
        ) from None
    if any(len(h) != 64 for h in hashes):
        raise DataError(f"{path}: a sha256 value is not 64 hex digits")
    return hashes


def write_holdout(path: Path, records: Sequence[Record]) -> None:
    """Atomically list ``records`` as the frozen holdout."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(HOLDOUT_COLUMNS)
        for r in sorted(records, key=lambda r: (r.label, r.shown)):
            writer.writerow((r.sha256, r.label, r.shown))
