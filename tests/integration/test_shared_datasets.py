"""Intake on the four real datasets in ../shared/datasets (skipped where absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from transferpilot.config import PrepareParams
from transferpilot.intake import prepare_dataset

pytestmark = pytest.mark.shared

# Counts from ../shared/datasets/SOURCES.md.
EXPECTED = {
    "hymenoptera": {"train": {"ants": 124, "bees": 121}, "val": {"ants": 70, "bees": 83}},
    "brain_tumor_mri": {"train": {"no": 78, "yes": 124}, "val": {"no": 20, "yes": 31}},
    "mnist": {"train": 5000, "val": 1000},
    "imagenette": {"train": 3600, "val": 900},
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_image_is_usable_and_counted(shared_datasets: Path, name: str) -> None:
    intake = prepare_dataset(PrepareParams(source=shared_datasets / name))
    assert intake.fatal is None
    assert not [f for f in intake.findings if f.action == "skipped"]
    counts = intake.counts()
    for split, expected in EXPECTED[name].items():
        got = counts[split] if isinstance(expected, dict) else sum(counts[split].values())
        assert got == expected


def test_quirks_are_reported(shared_datasets: Path) -> None:
    hym = prepare_dataset(PrepareParams(source=shared_datasets / "hymenoptera"))
    assert any(
        f.path == "train/ants/imageNotFound.gif" and f.kind == "converted" for f in hym.findings
    )
    brain = prepare_dataset(PrepareParams(source=shared_datasets / "brain_tumor_mri"))
    # 22 groups of byte-identical files, 47 files: 25 are copies, all within one split.
    dups = [f for f in brain.findings if f.kind == "duplicate"]
    assert len(dups) == 25
    assert not [f for f in brain.findings if f.kind == "cross_split_duplicate"]
    modes = {f.reason for f in brain.findings if f.kind == "converted"}
    assert modes == {"L image", "P image", "RGBA image"}
