"""The `transferpilot` command as a user runs it: exit codes, messages, outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.images import bad_corpus, image_folder, solid
from tests.projects import run_stages, tp, tp_imports


def test_bad_params_exit_2_with_the_key_and_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("prepare:\n  val_fraction: 2\n  colour: red\n")
    result = tp("stage", "prepare", cwd=tmp_path)
    assert result.returncode == 2
    assert "prepare.val_fraction" in result.stderr and "prepare.colour" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_prepare_stage_writes_manifest_and_report(tmp_path: Path) -> None:
    image_folder(tmp_path / "images", {"red": 6, "green": 6})
    bad_corpus(tmp_path / "images" / "blue")
    (tmp_path / "params.yaml").write_text("prepare:\n  source: images\n  max_pixels: 62500\n")
    result = tp("stage", "prepare", cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    out = tmp_path / "data" / "prepared"
    with open(out / "manifest.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["label"] for r in rows} == {"red", "green", "blue"}
    assert all(len(r["sha256"]) == 64 and r["split"] in {"train", "val"} for r in rows)
    assert all(Path(r["path"]).is_relative_to("images") for r in rows)  # relative to project
    report = json.loads((out / "validation.json").read_text())
    assert report["findings_by_kind"]["corrupt"] == 1
    text = (out / "validation.txt").read_text()
    assert "blue/truncated.jpg: corrupt or truncated" in text
    assert not list(tmp_path.joinpath("images").rglob("*.tmp"))  # nothing written next to data


def test_prepare_with_nothing_usable_exits_3_and_keeps_the_report(tmp_path: Path) -> None:
    (tmp_path / "images" / "a").mkdir(parents=True)
    (tmp_path / "images" / "a" / "x.jpg").write_bytes(b"junk")
    (tmp_path / "images" / "b").mkdir()
    (tmp_path / "images" / "b" / "y.jpg").write_bytes(b"")
    (tmp_path / "params.yaml").write_text("prepare:\n  source: images\n")
    result = tp("stage", "prepare", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "no usable images" in result.stderr and "Traceback" not in result.stderr
    assert "a/x.jpg" in (tmp_path / "data" / "prepared" / "validation.txt").read_text()
    assert not (tmp_path / "data" / "prepared" / "manifest.csv").exists()


def test_predict_json(tmp_path: Path, sample_images: dict[str, Path]) -> None:
    result = tp("predict", str(sample_images["flower.jpg"]), "--json", "-k", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)
    assert entry["image"].endswith("flower.jpg")
    assert [set(t) for t in entry["top"]] == [{"label", "index", "prob"}] * 3
    assert entry["top"][0]["label"] == "daisy"


def test_unknown_model_exits_4_listing_valid_names(tmp_path: Path) -> None:
    result = tp("models", "vgg_sixteen", cwd=tmp_path)
    assert result.returncode == 4
    assert "efficientnet_lite0" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_digits_dataset_is_written_once(tmp_path: Path) -> None:
    result = tp("digits", "out/digits", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    files = sorted((tmp_path / "out" / "digits").rglob("*.png"))
    assert len(files) == 1797
    classes = sorted(p.name for p in (tmp_path / "out" / "digits").iterdir())
    assert classes == [str(i) for i in range(10)]


def test_extract_stage_writes_aligned_features_and_reuses_the_cache(tmp_path: Path) -> None:
    import numpy as np

    image_folder(tmp_path / "images", {"red": 5, "green": 5}, size=24)
    (tmp_path / "params.yaml").write_text(
        "prepare:\n  source: images\nextract:\n  batch_size: 4\n  workers: 1\n"
    )
    assert tp("stage", "prepare", cwd=tmp_path).returncode == 0
    first = tp("stage", "extract", cwd=tmp_path)
    assert first.returncode == 0, first.stderr

    assert "10 computed" in first.stderr
    out = tmp_path / "data" / "features"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["model"] == "efficientnet_lite0" and meta["images"] == 10
    assert np.load(out / "pre_logits.npy").shape == (10, 1280)
    assert np.load(out / "logits.npy").shape == (10, 1000)
    for layer in meta["layers"]:
        assert np.load(out / f"{layer['name']}.npy").shape == (10, layer["dim"])
    assert meta["moments"]["scopes"] == ["all", "train", "val", "imagenet"]
    moments = np.load(out / "moments.npz")
    assert moments["mean"].shape == (4, sum(meta["moments"]["channels"]))
    assert (tmp_path / "data" / "cache" / "features").is_dir()
    files = {p.name: p.read_bytes() for p in out.iterdir()}

    again = tp("stage", "extract", cwd=tmp_path)
    assert again.returncode == 0
    assert "0 computed" in again.stderr  # the cache served every image
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files  # byte for byte


@pytest.mark.slow
def test_the_profile_command_and_the_pipeline_agree_on_a_folder(tmp_path: Path) -> None:
    """`transferpilot profile DIR` and prepare -> extract -> profile -> decide: one decision."""
    assert tp("digits", "digits", cwd=tmp_path).returncode == 0
    for digit in (tmp_path / "digits").iterdir():  # real handwritten digits, 12 per class
        for extra in sorted(digit.iterdir())[12:]:
            extra.unlink()
    (tmp_path / "params.yaml").write_text("prepare:\n  source: digits\n")
    cli = tp("profile", "digits", "--json", "--sample", "0", cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    out = json.loads(cli.stdout)
    run_stages(tmp_path, "prepare", "extract", "profile", "decide")  # as dvc repro runs them
    profile = json.loads((tmp_path / "data" / "profile" / "profile.json").read_text())
    decision = json.loads((tmp_path / "data" / "decision" / "decision.json").read_text())
    assert out["n_images"] == profile["size"]["n_images"] == 120
    assert out["similarity"] == profile["similarity"]["score"]
    assert out["quadrant"] == decision["quadrant"] and out["strategy"] == decision["strategy"]
    assert out["layer"] == decision["layer"] and out["reason"] == decision["reason"]


@pytest.mark.slow
def test_profile_json_has_what_a_script_needs(tmp_path: Path) -> None:
    image_folder(tmp_path / "images", {"red": 8, "green": 8, "blue": 8}, size=24)
    image_folder(tmp_path / "reference", {"any": 6}, size=24)
    (tmp_path / "params.yaml").write_text("profile:\n  reference: reference\n")
    result = tp("profile", "images", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    for key in (
        "n_images",
        "n_classes",
        "images_per_class",
        "size",
        "similarity",
        "domain",
        "quadrant",
        "strategy",
        "layer",
        "reason",
        "layers",
    ):
        assert key in out, key
    assert out["n_images"] == 24 and out["n_classes"] == 3 and out["size"] == "small"
    assert 0.0 <= out["similarity"] <= 1.0 and out["domain"] in {"similar", "different"}
    assert out["strategy"] in {"linear", "svm"} and out["quadrant"].startswith("small/")
    assert {row["layer"] for row in out["layers"]} >= {"blocks.0", "pre_logits", "logits"}
    assert all(row["probe_accuracy"] is not None for row in out["layers"])
    assert out["reference"]["images"] == 6 and out["reference"]["frechet_pre_logits"] >= 0
    assert out["throughput"]["train_images_per_s"] > 0
    issues = out["label_issues"]  # counted on the profiled images, as the train stage would
    assert issues["checked"] > 0 and issues["count"] == len(issues["issues"])
    assert issues["source"].startswith("softmax regression on ") and issues["words"]
    human = tp("profile", "images", cwd=tmp_path)
    assert human.returncode == 0 and "quadrant" in human.stdout and "Decision:" in human.stdout
    assert issues["words"].split(" (")[0] in " ".join(human.stdout.split())


def test_run_with_a_missing_data_folder_fails_at_once_and_changes_nothing(
    tmp_path: Path, project_root: Path
) -> None:
    """Checked before the Prefect server starts or DVC runs: exit 3, one line, no retry."""
    import shutil
    import time

    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(project_root / name, tmp_path / name)
    before = (tmp_path / "params.yaml").read_text()
    start = time.perf_counter()
    result = tp("run", "--data", str(tmp_path / "nonexistent"), cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "nonexistent does not exist" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Starting temporary server" not in result.stdout + result.stderr
    assert time.perf_counter() - start < 30  # seconds, not a server start and retries
    bad = tp("run", "-S", "train.colour=red", cwd=tmp_path)  # a bad key: exit 2, the key named
    assert bad.returncode == 2 and "train.colour" in bad.stderr, bad.stderr
    assert (tmp_path / "params.yaml").read_text() == before


def test_profile_names_every_skipped_file_and_why(tmp_path: Path) -> None:
    image_folder(tmp_path / "images", {"red": 8, "green": 8}, size=24)
    expected = bad_corpus(tmp_path / "images" / "green")
    (tmp_path / "params.yaml").write_text("profile:\n  measure_throughput: false\n")
    result = tp("-q", "profile", "images", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    skipped = {Path(s["file"]).name: s for s in json.loads(result.stdout)["skipped"]}
    for name in ("empty.jpg", "truncated.jpg", "random.jpg", "notes.txt"):
        assert skipped[name]["kind"] == expected[name] and skipped[name]["reason"], name
    assert "cmyk.jpg" not in skipped  # converted and kept, not skipped
    human = tp("profile", "images", cwd=tmp_path)
    assert human.returncode == 0, human.stderr
    assert "files skipped" in human.stdout and "truncated.jpg" in human.stdout


@pytest.mark.slow
def test_profile_asked_again_reuses_its_result_and_never_loads_pytorch(tmp_path: Path) -> None:
    image_folder(tmp_path / "images", {"red": 8, "green": 8}, size=24)
    (tmp_path / "params.yaml").write_text("profile:\n  measure_throughput: false\n")
    first = tp("-q", "profile", "images", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again, imported = tp_imports("-q", "profile", "images", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    before, after = json.loads(first.stdout), json.loads(again.stdout)
    assert before.pop("reused") is False and after.pop("reused") is True
    assert after == before  # the same answer, every number
    assert "transferpilot" in imported and not imported & {"torch", "timm", "sklearn"}

    human = tp("profile", "images", cwd=tmp_path)
    assert human.returncode == 0 and "reused" in human.stdout
    solid(tmp_path / "images" / "red" / "new.png", (90, 10, 10), size=24)
    changed = json.loads(tp("-q", "profile", "images", "--json", cwd=tmp_path).stdout)
    assert changed["reused"] is False and changed["n_images"] == before["n_images"] + 1
