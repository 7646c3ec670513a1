"""Fine-tuning on two CPU processes with torchrun (DDP over gloo on 127.0.0.1)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.projects import loose_project as project
from tests.projects import start, tp, write_params

pytestmark = pytest.mark.slow

#: One process and two reach the same validation accuracy within this (tiny, separable data).
TOLERANCE = 0.1
TRAIN = {"epochs": 3, "batch_size": 8, "input_size": 32, "workers": 0, "export": False}


def ready_to_train(tmp_path: Path, **train) -> Path:
    root = project(
        tmp_path, {"red": 12, "green": 12}, decide={"strategy": "finetune"}, train=TRAIN | train
    )
    for stage in ("prepare", "extract", "profile", "decide"):
        assert tp("stage", stage, cwd=root).returncode == 0, stage
    return root


def test_two_processes_train_like_one_and_rank_0_alone_writes(tmp_path: Path) -> None:
    root = ready_to_train(tmp_path)
    one = tp("stage", "train", cwd=root)
    assert one.returncode == 0, one.stderr
    single = json.loads((root / "models" / "train" / "train.json").read_text())
    (root / "models" / "checkpoints").rename(root / "single-checkpoints")

    write_params(root, {"train": TRAIN | {"nproc_per_node": 2}})
    assert tp("stage", "decide", cwd=root).returncode == 0
    two = tp("stage", "train", cwd=root)
    assert two.returncode == 0, two.stderr
    assert "with torchrun" in two.stderr
    double = json.loads((root / "models" / "train" / "train.json").read_text())
    assert abs(double["val_accuracy"] - single["val_accuracy"]) <= TOLERANCE
    assert double["epochs_run"] == single["epochs_run"]
    # one reporter: each epoch is logged once, and one set of checkpoints is written
    assert two.stderr.count("epoch 1/3:") == 1
    names = sorted(p.name for p in (root / "models" / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (root / "single-checkpoints").iterdir())
    last = json.loads((root / "models" / "checkpoints" / "last.json").read_text())
    assert len(last["history"]) == 3 and last["config"]["nproc_per_node"] == 2


def test_a_rank_that_dies_fails_the_stage_clearly_and_a_re_run_resumes(tmp_path: Path) -> None:
    root = ready_to_train(tmp_path, nproc_per_node=2, epochs=8, patience=100)
    last = root / "models" / "checkpoints" / "last.json"
    proc = start("stage", "train", cwd=root)
    try:
        deadline = time.monotonic() + 300
        while not (last.exists() and json.loads(last.read_text())["epoch"] >= 1):
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint of epoch 2"
            time.sleep(0.05)
        (victim,) = [
            child
            for child in psutil.Process(proc.pid).children(recursive=True)
            if child.environ().get("LOCAL_RANK") == "1"
        ]
        victim.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)  # no hang: torchrun stops rank 0
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 1, out
    (line,) = [x for x in out.splitlines() if x.startswith("error:")]
    assert "distributed fine-tuning failed: rank 1 exited with code -9 (signal 9)" in line
    assert not (root / "models" / "train" / "train.json").exists()

    killed_at = json.loads(last.read_text())["epoch"]
    again = tp("stage", "train", cwd=root)
    assert again.returncode == 0, again.stderr
    assert f"resuming from the checkpoint of epoch {killed_at + 1}" in again.stderr
    trained = json.loads((root / "models" / "train" / "train.json").read_text())
    assert trained["epochs_run"] == 8
