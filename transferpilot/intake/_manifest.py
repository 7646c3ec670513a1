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
