"""Faults a user meets: a run killed mid-extraction or mid-training, a full disk, and two
runs sharing one feature cache. Nothing is lost, nothing corrupt is read, the user is told."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.projects import cli_env as env
from tests.projects import kill_when, run, start, tiny_model, tp, working_copy, write_params
from tests.projects import loose_project as project

pytestmark = pytest.mark.slow


def index_lines(root: Path) -> list[dict]:
    found = list((root / "data" / "cache" / "features").glob("*/index.jsonl"))
    if not found:
        return []
    return [json.loads(line) for line in found[0].read_text().splitlines() if line.strip()]


def test_killed_extraction_resumes_and_never_reads_a_corrupt_shard(tmp_path: Path) -> None:
    root = project(tmp_path, {"red": 20, "green": 20})
    assert tp("stage", "prepare", cwd=root).returncode == 0
    proc = start("stage", "extract", cwd=root)
    kill_when(proc, lambda: len(index_lines(root)) >= 3)
    done = index_lines(root)
    assert not (root / "data" / "features").exists()  # nothing half-written for DVC to record

    cache_dir = next((root / "data" / "cache" / "features").iterdir())
    shard = cache_dir / "shards" / done[0]["shard"]
    shard.write_bytes(shard.read_bytes()[:-100] + b"\x00" * 100)  # a corrupt shard

    again = tp("-v", "stage", "extract", cwd=root)
    assert again.returncode == 0, again.stderr
    computed = int(re.search(r"features: (\d+) of 40 images to compute", again.stderr).group(1))
    saved = sum(len(d["rows"]) for d in done[1:])
    assert computed == 40 - saved  # the intact shards were reused; the corrupt one recomputed
    assert "corrupt" in again.stderr

    resumed = np.load(root / "data" / "features" / "pre_logits.npy")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in ("params.yaml", "images"):
        os.symlink(root / name, fresh / name)
    assert tp("stage", "prepare", cwd=fresh).returncode == 0
    assert tp("stage", "extract", cwd=fresh).returncode == 0
    np.testing.assert_allclose(
        resumed, np.load(fresh / "data" / "features" / "pre_logits.npy"), rtol=1e-5, atol=1e-5
    )


def test_killed_finetuning_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    train = {"epochs": 3, "batch_size": 8, "input_size": 32, "workers": 0, "export": False}
    root = project(tmp_path, {"red": 8, "green": 8}, decide={"strategy": "finetune"}, train=train)
    for stage in ("prepare", "extract", "profile", "decide"):
        assert tp("stage", stage, cwd=root).returncode == 0, stage
    last = root / "models" / "checkpoints" / "last.json"
    proc = start("stage", "train", cwd=root)
    kill_when(proc, lambda: last.exists() and json.loads(last.read_text())["epoch"] >= 1)
    killed_at = json.loads(last.read_text())["epoch"]

    again = tp("stage", "train", cwd=root)
    assert again.returncode == 0, again.stderr
    resumed = json.loads((root / "models" / "train" / "train.json").read_text())
    assert f"resuming from the checkpoint of epoch {killed_at + 1}" in again.stderr  # from 1 there

    (root / "models" / "checkpoints").rename(root / "killed-checkpoints")
    whole = tp("stage", "train", cwd=root)  # the same run, uninterrupted
    assert whole.returncode == 0, whole.stderr
    uninterrupted = json.loads((root / "models" / "train" / "train.json").read_text())
    assert "resuming" not in whole.stderr
    assert resumed == uninterrupted  # the same epochs, the same best, the same record


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs util-linux prlimit")
def test_a_write_error_is_reported_and_dvc_records_nothing(
    tmp_path: Path, project_root: Path
) -> None:
    work = working_copy(tmp_path / "w", project_root)
    write_params(work, {"model": tiny_model(tmp_path / "tiny.safetensors")})
    run(["dvc", "repro", "prepare"], work)
    lock_before = (work / "dvc.lock").read_text()
    # A "full disk" for the stage only: its files may not grow past 16 KiB, and with
    # SIGXFSZ ignored (inherited through exec) a larger write fails with EFBIG.
    pipeline = (work / "dvc.yaml").read_text()
    limited = pipeline.replace(
        "cmd: transferpilot stage extract", "cmd: prlimit --fsize=16384 transferpilot stage extract"
    )
    (work / "dvc.yaml").write_text(limited)
    failed = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "extract"],
        cwd=work, env=env(), capture_output=True, text=True, timeout=600,
        preexec_fn=lambda: signal.signal(signal.SIGXFSZ, signal.SIG_IGN),
    )  # fmt: skip
    out = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "File too large" in out and "exited with 5" in out, out
    assert "Traceback" not in out
    assert (work / "dvc.lock").read_text() == lock_before  # extract not recorded
    assert not (work / "data" / "features").exists()

    (work / "dvc.yaml").write_text(pipeline)
    run(["dvc", "repro", "extract"], work)  # room again: the re-run completes
    assert "extract" in (work / "dvc.lock").read_text()


def test_two_runs_share_one_feature_cache(tmp_path: Path) -> None:
    shared_cache = tmp_path / "shared-cache"
    roots = []
    for name in ("a", "b"):  # the same model file and images: one cache key
        root = project(tmp_path / name, {"red": 12, "green": 12}, tmp_path / "tiny.safetensors")
        if roots:  # the same image files (noise is seeded by path)
            shutil.rmtree(root / "images")
            shutil.copytree(roots[0] / "images", root / "images")
        write_params(root, {"extract": {"cache_dir": str(shared_cache)}})
        assert tp("stage", "prepare", cwd=root).returncode == 0
        roots.append(root)
    procs = [start("-v", "stage", "extract", cwd=root) for root in roots]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    computed = sorted(
        int(re.search(r"features: (\d+) of 24 images to compute", out).group(1))
        if "to compute" in out
        else 0
        for out in outputs
    )
    assert computed == [0, 24]  # one run computed, the other waited and reused
    a, b = (np.load(r / "data" / "features" / "pre_logits.npy") for r in roots)
    np.testing.assert_array_equal(a, b)
