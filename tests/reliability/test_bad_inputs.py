"""The whole pipeline on bad inputs: it finishes with the good images and lists every bad
one with its reason, or stops early with a clear message; the exit code says which; the
user never sees a traceback. (File-by-file reasons: tests/unit/test_intake.py.)"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.images import bad_corpus, image_folder
from tests.projects import run_stages, tiny_model, tp, write_params

pytestmark = pytest.mark.slow

STAGES = ("prepare", "extract", "profile", "decide", "train", "evaluate")


def setup(root: Path, source: str, tmp: Path) -> None:
    write_params(
        root,
        {
            "model": tiny_model(tmp / "tiny.safetensors"),
            "prepare": {"source": source, "max_pixels": 62_500},
            "extract": {"workers": 0},
            "profile": {"measure_throughput": False},
            "train": {"cv_folds": 2, "export": False},
        },
    )


def run_all(root: Path) -> None:
    """prepare, the stage that meets the bad files, as the user's process (exit code, no
    traceback); the stages after it, which read only its manifest, in this process."""
    result = tp("stage", "prepare", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    run_stages(root, *STAGES[1:])


def test_the_pipeline_finishes_on_the_good_images_and_lists_every_bad_one(
    tmp_path: Path,
) -> None:
    root = tmp_path / "p"
    images = image_folder(root / "images", {"red": 8, "green": 8})
    expected = bad_corpus(images / "red")
    (images / "empty-class").mkdir()
    (images / ".hidden-class").mkdir()
    setup(root, "images", tmp_path)
    run_all(root)

    report = json.loads((root / "data" / "prepared" / "validation.json").read_text())
    listed = {f["path"].removeprefix("red/"): f["kind"] for f in report["findings"]}
    for name, kind in expected.items():
        if kind != "ok":
            assert listed.get(name) == kind, f"{name!r}: {listed.get(name)} (want {kind})"
    assert "empty-class" in json.dumps(report["findings"])
    with (root / "data" / "prepared" / "manifest.csv").open() as fh:
        kept = {Path(row["path"]).name for row in csv.DictReader(fh)}
    assert "one pixel é.png" in kept and "new\nline.png" in kept and "rotated.jpg" in kept
    assert "truncated.jpg" not in kept and "big.png" not in kept
    page = (root / "reports" / "report.md").read_text()
    assert "truncated.jpg" in page and "corrupt" in page  # the report shows what was skipped
    assert json.loads((root / "reports" / "metrics.json").read_text())["val"]["images"] > 0


def test_a_manifest_with_bad_rows_runs_on_the_good_rows(tmp_path: Path) -> None:
    root = tmp_path / "p"
    images = image_folder(root / "images", {"red": 8, "green": 8})
    rows = [(f"images/{p.parent.name}/{p.name}", p.parent.name) for p in images.rglob("*.png")]
    rows += [("images/red/missing.png", "red"), ("../outside.png", "red"), ("/etc/passwd", "red")]
    with (root / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    setup(root, "labels.csv", tmp_path)
    run_all(root)
    text = (root / "data" / "prepared" / "validation.txt").read_text()
    for bad in ("missing.png", "../outside.png", "/etc/passwd"):
        assert bad in text


def test_nothing_usable_stops_at_prepare_with_exit_3(tmp_path: Path) -> None:
    root = tmp_path / "p"
    bad_corpus(root / "images" / "red")
    (root / "images" / "green").mkdir()
    (root / "images" / "green" / "notes.txt").write_text("no images here\n")
    setup(root, "images", tmp_path)
    result = tp("stage", "prepare", cwd=root)
    assert result.returncode == 3
    assert "error:" in result.stderr and "Traceback" not in result.stderr
    assert (root / "data" / "prepared" / "validation.txt").is_file()  # the reasons, kept


def test_bad_params_in_every_section_are_named_together(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(
        "model:\n  name: [not, a, name]\n"
        "extract:\n  batch_size: lots\n"
        "train:\n  cv_folds: 1\n  colour: red\n"
        "evaluate:\n  ece_bins: 0\n"
    )
    result = tp("params", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    keys = (
        "model.name",
        "extract.batch_size",
        "train.cv_folds",
        "train.colour",
        "evaluate.ece_bins",
    )
    for key in keys:
        assert key in result.stderr, key
