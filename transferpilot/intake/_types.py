"""Data types of the intake step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


@dataclass(frozen=True)
class Candidate:
    """A file that may be an image of class ``label``; ``split`` None = to be assigned."""

    path: Path
    label: str
    split: str | None
    shown: str  # how reports name it: relative to the dataset root


@dataclass(frozen=True)
class ImageInfo:
    """What decoding a file told us: content digest, upright size, original mode."""

    sha256: str
    width: int
    height: int
    mode: str
    format: str
    frames: int


@dataclass(frozen=True)
class Finding:
    """One thing the validation report lists: what, where, why, and what we did."""

    path: str
    kind: str
    reason: str
    action: str


@dataclass(frozen=True)
class Record:
    """A usable image: one row of ``manifest.csv``."""

    path: Path
    label: str
    split: str
    sha256: str
    width: int
    height: int
    mode: str
    shown: str
