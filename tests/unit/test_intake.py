"""Intake: every bad file is listed with its reason, good ones are split and kept."""

from __future__ import annotations

import errno
import shutil
from collections import Counter
from pathlib import Path

import pytest

from tests.images import bad_corpus, image_folder, solid
from transferpilot.config import PrepareParams
from transferpilot.errors import DataError
from transferpilot.intake import format_report, prepare_dataset, read_manifest, write_manifest


def _kinds_by_file(intake, class_name: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in intake.findings:
        if f.path.startswith(class_name + "/"):
            out.setdefault(f.path.removeprefix(class_name + "/"), set()).add(f.kind)
    return out


def test_bad_corpus_every_file_listed_with_its_reason(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    image_folder(root, {"good": 6})
    expected = bad_corpus(root / "mixed")
    intake = prepare_dataset(PrepareParams(source=root, max_pixels=250 * 250))

    kinds = _kinds_by_file(intake, "mixed")
    for name, kind in expected.items():
        if kind == "ok":
            assert name not in kinds, f"{name!r} should be clean, got {kinds.get(name)}"
        else:
            assert kind in kinds.get(name, set()), f"{name!r}: expected {kind}, got {kinds}"

    usable = {r.shown for r in intake.records}
    skipped = {k for k, v in expected.items() if v not in {"ok", "animated", "converted"}}
    for name in skipped:
        assert f"mixed/{name}" not in usable
    for name in ("one pixel é.png", "rotated.jpg", "new\nline.png", "nested/deeper.png"):
        assert f"mixed/{name}" in usable
    assert intake.fatal is None


def test_exif_rotation_is_applied_to_the_recorded_size(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    image_folder(root, {"a": 3})
    bad_corpus(root / "b")
    intake = prepare_dataset(PrepareParams(source=root, max_pixels=250 * 250))
    rotated = next(r for r in intake.records if r.shown == "b/rotated.jpg")
    assert (rotated.width, rotated.height) == (20, 40)


def test_unreadable_file_is_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = image_folder(tmp_path / "ds", {"a": 3, "b": 3})
    secret = solid(root / "a" / "secret.png", (1, 1, 1))
    secret.chmod(0)  # enough for an ordinary user; root reads anything, so also fake EACCES
    real_read = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "secret.png":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    try:
        intake = prepare_dataset(PrepareParams(source=root))
    finally:
        secret.chmod(0o644)
    found = [f for f in intake.findings if f.path == "a/secret.png"]
    assert [(f.kind, f.action) for f in found] == [("unreadable", "skipped")]
    assert "Permission denied" in found[0].reason


def test_split_folders_are_kept_and_cross_split_duplicates_leave_val(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    image_folder(root / "train", {"cat": 4, "dog": 4})
    image_folder(root / "val", {"cat": 2, "dog": 2})
    shutil.copy(root / "train" / "cat" / "000.png", root / "val" / "cat" / "copy.png")
    intake = prepare_dataset(PrepareParams(source=root))

    assert intake.layout.startswith("split folders")
    assert intake.counts() == {"train": {"cat": 4, "dog": 4}, "val": {"cat": 2, "dog": 2}}
    dropped = [f for f in intake.findings if f.kind == "cross_split_duplicate"]
    assert [(f.path, f.action) for f in dropped] == [("val/cat/copy.png", "dropped from val")]
    val_hashes = {r.sha256 for r in intake.records if r.split == "val"}
    train_hashes = {r.sha256 for r in intake.records if r.split == "train"}
    assert not val_hashes & train_hashes


def test_keep_policy_keeps_cross_split_duplicates_but_reports_them(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    image_folder(root / "train", {"cat": 3, "dog": 3})
    image_folder(root / "val", {"cat": 1, "dog": 1})
    shutil.copy(root / "train" / "dog" / "000.png", root / "val" / "dog" / "copy.png")
    intake = prepare_dataset(PrepareParams(source=root, cross_split_duplicates="keep"))
    dups = [(f.path, f.action) for f in intake.findings if f.kind == "cross_split_duplicate"]
    assert dups == [("val/dog/copy.png", "kept")]
    assert intake.counts()["val"] == {"cat": 1, "dog": 2}


def test_one_root_is_split_stratified_and_seeded(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "ds", {"a": 20, "b": 10})
    params = PrepareParams(source=root, val_fraction=0.2, test_fraction=0.1, seed=3)
    first = prepare_dataset(params)
    again = prepare_dataset(params)
    other_seed = prepare_dataset(params.model_copy(update={"seed": 4}))

    assert first.counts() == {
        "train": {"a": 14, "b": 7},
        "val": {"a": 4, "b": 2},
        "test": {"a": 2, "b": 1},
    }
    splits = [(r.shown, r.split) for r in first.records]
    assert splits == [(r.shown, r.split) for r in again.records]
    assert {r.shown for r in first.records if r.split == "val"} != {
        r.shown for r in other_seed.records if r.split == "val"
    }


def test_identical_files_stay_on_one_side_of_a_split(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "ds", {"a": 10, "b": 10})
    for i in range(3):
        shutil.copy(root / "a" / "000.png", root / "a" / f"copy{i}.png")
    intake = prepare_dataset(PrepareParams(source=root, val_fraction=0.3))
    origin = next(r for r in intake.records if r.shown == "a/000.png")
    copies = [r for r in intake.records if r.sha256 == origin.sha256]
    assert len(copies) == 4 and {r.split for r in copies} == {origin.split}
    assert sum(f.kind == "duplicate" for f in intake.findings) == 3


def test_label_conflicts_small_and_empty_classes_are_reported(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "ds", {"a": 5, "b": 5, "tiny": 1})
    (root / "empty").mkdir()
    shutil.copy(root / "a" / "001.png", root / "b" / "stolen.png")
    intake = prepare_dataset(PrepareParams(source=root))

    by_kind = Counter(f.kind for f in intake.findings)
    assert by_kind["label_conflict"] == 2  # both copies
    assert by_kind["small_class"] == 1 and by_kind["empty_class"] == 1
    assert intake.classes == ["a", "b"]
    assert not any(r.shown in {"a/001.png", "b/stolen.png"} for r in intake.records)


def test_a_single_class_is_fatal_and_still_reported(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "ds", {"only": 5})
    (root / "broken").mkdir()
    (root / "broken" / "x.jpg").write_bytes(b"nope")
    intake = prepare_dataset(PrepareParams(source=root))
    assert intake.fatal and "one class" in intake.fatal
    text = format_report(intake.summary())
    assert "CANNOT CONTINUE" in text and "broken/x.jpg" in text


def test_csv_manifest_rejects_escapes_missing_files_and_bad_splits(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "ds", {"a": 4, "b": 4})
    solid(tmp_path / "outside.png", (1, 2, 3))
    rows = [
        "path,label,split",
        *(f"a/{i:03d}.png,a,{'val' if i == 0 else 'train'}" for i in range(4)),
        *(f"b/{i:03d}.png,b,{'valid' if i == 0 else 'train'}" for i in range(4)),
        "../outside.png,a,train",
        f"{tmp_path / 'outside.png'},a,train",
        "a/missing.png,a,train",
        "a/000.png,a,holdout",
        ",a,train",
    ]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    intake = prepare_dataset(PrepareParams(source=root / "labels.csv"))

    kinds = Counter(f.kind for f in intake.findings)
    assert kinds["outside_root"] == 2
    assert kinds["missing"] == 1 and kinds["bad_split"] == 1 and kinds["bad_row"] == 1
    assert intake.counts() == {"train": {"a": 3, "b": 3}, "val": {"a": 1, "b": 1}}


def test_csv_without_required_columns_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("file,class\nx.png,a\n")
    with pytest.raises(DataError, match="path,label"):
        prepare_dataset(PrepareParams(source=tmp_path / "m.csv"))


def test_a_missing_or_flat_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        prepare_dataset(PrepareParams(source=tmp_path / "nope"))
    solid(tmp_path / "flat" / "x.png", (1, 1, 1))
    with pytest.raises(DataError, match="no class folders"):
        prepare_dataset(PrepareParams(source=tmp_path / "flat"))


def test_manifest_round_trip(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "ds", {"a": 3, "b": 3})
    intake = prepare_dataset(PrepareParams(source=root))
    write_manifest(tmp_path / "manifest.csv", intake.records)
    back = read_manifest(tmp_path / "manifest.csv")
    assert [(Path(r.path).resolve(), r.label, r.split, r.sha256) for r in back] == [
        (r.path.resolve(), r.label, r.split, r.sha256) for r in intake.records
    ]
    header = (tmp_path / "manifest.csv").read_text().splitlines()[0]
    assert header == "path,label,split,sha256,width,height,mode"


def test_a_frozen_holdout_keeps_the_evaluation_images_as_the_folder_grows(tmp_path: Path) -> None:
    from transferpilot.intake import write_holdout

    image_folder(tmp_path / "images", {"red": 10, "green": 10}, size=8)
    cfg = PrepareParams(source=tmp_path / "images", test_fraction=0.3, holdout=tmp_path / "h.csv")
    first = prepare_dataset(cfg).records
    test = [r for r in first if r.split == "test"]
    write_holdout(cfg.holdout, test)
    assert prepare_dataset(cfg).records == first  # freezing the draw changes nothing

    for i in range(10, 30):  # new images: they join training, never the evaluation split
        solid(tmp_path / "images" / "red" / f"{i:03d}.png", (220, 30, 30), size=8)
    grown = prepare_dataset(cfg).records
    assert {r.sha256 for r in grown if r.split == "test"} == {r.sha256 for r in test}
    new = [r for r in grown if int(Path(r.shown).stem) >= 10]
    assert len(new) == 20 and {r.split for r in new} <= {"train", "val"}


def test_a_damaged_holdout_list_is_a_clear_error(tmp_path: Path) -> None:
    image_folder(tmp_path / "images", {"red": 4, "green": 4}, size=8)
    (tmp_path / "h.csv").write_text("path\nred/000.png\n")
    with pytest.raises(DataError, match=r"h\.csv: not a holdout list"):
        prepare_dataset(PrepareParams(source=tmp_path / "images", holdout=tmp_path / "h.csv"))
