"""Extraction sharded over a real Dask ``LocalCluster`` (2 processes on 127.0.0.1) through
prefect-dask: the same features as one process, and workers killed mid-shard cost a
retry, never a half-written cache."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from tests.projects import working_copy, write_params
from transferpilot.config import load_params
from transferpilot.features import write_table
from transferpilot.intake import read_manifest
from transferpilot.orchestrate import parse_cluster

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent / "transferpilot"


def dask_workers(proc: subprocess.Popen) -> list[psutil.Process]:
    """The Dask worker processes a run started (multiprocessing-spawned children)."""
    found = []
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def cache_index(project: Path) -> list[dict]:
    lines = []
    for index in (project / "data" / "cache" / "features").glob("*/index.jsonl"):
        lines += [json.loads(x) for x in index.read_text().splitlines() if x.strip()]
    return lines


def test_a_cluster_run_matches_one_process_and_survives_killed_workers(
    tmp_path: Path, project_root: Path, lite0
) -> None:
    project = working_copy(tmp_path / "project", project_root, {"red": 36, "green": 36})
    # small cache shards: a worker has written part of its task when it is killed
    write_params(project, {"extract": {"batch_size": 4, "shard_size": 4}})
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1"}
    env["PATH"] = f"{BIN.parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.Popen(
        [str(BIN), "run", "--cluster", "local:2"], cwd=project, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not cache_index(project):  # the first shard of rows is in: workers are busy
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no feature was ever cached"
            time.sleep(0.02)
        killed = dask_workers(proc)
        assert killed, "no Dask worker process found"
        for worker in killed:
            worker.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    assert "Dask" in out and "extract shard" in out and "killed by signal 9" in out
    # the workers report to the run's own Prefect API, not to servers of their own
    assert out.count("Starting temporary server") == 1, out
    assert "0 computed" in out.split("Running stage 'extract'")[1]  # the stage only assembled

    # Run again with nothing changed and no server configured: dvc status says so, and no
    # temporary server is started for a flow run nobody would see.
    again = subprocess.run(
        [str(BIN), "run"], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    said = again.stdout + again.stderr
    assert again.returncode == 0, said
    assert "every stage is up to date" in said and "Starting temporary server" not in said
    assert "Report: reports/report.md" in again.stdout

    # Every indexed cache shard is whole; no temporary file is left behind.
    (key,) = (project / "data" / "cache" / "features").iterdir()
    for line in cache_index(project):
        data = (key / "shards" / line["shard"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == line["digest"]
    assert {p.suffix for p in (key / "shards").iterdir()} == {".npz"}

    # The features equal those of one plain process with a cache of its own.
    params = load_params(project / "params.yaml")
    records = read_manifest(project / "data" / "prepared" / "manifest.csv")
    records = [dataclasses.replace(r, path=project / r.path) for r in records]
    plain = tmp_path / "plain"
    plain.mkdir()
    settings = params.extract.model_copy(update={"cache_dir": tmp_path / "plain-cache"})
    write_table(lite0, records, plain, settings, device=torch.device("cpu"))
    for array in sorted((project / "data" / "features").glob("*.npy")):
        assert np.array_equal(np.load(array), np.load(plain / array.name)), array.name


def test_a_cluster_is_local_n_or_a_scheduler_address() -> None:
    assert parse_cluster("local:2").workers == 2
    assert parse_cluster("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    assert parse_cluster(None) is None
    for bad in ("local:0", "local", "dask://x:1", "tcp://host"):
        with pytest.raises(Exception, match="local:N"):
            parse_cluster(bad)


def task_runs_of(flow_run_id: object) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return [r.name for r in runs if r.state and r.state.is_completed()]


def test_a_running_scheduler_takes_the_shards(
    tmp_path: Path, project_root: Path, prefect_harness: None
) -> None:
    """``--cluster tcp://…``: a `dask scheduler` and a `dask worker` started by hand on
    127.0.0.1, the worker in the project folder with the run's PREFECT_API_URL
    (docs/scaling-out.md)."""
    from flows.pipeline import extract_on_cluster
    from tests.projects import run, tiny_model
    from transferpilot.orchestrate import OFFLINE, current_api_url

    project = working_copy(tmp_path / "project", project_root, {"red": 6, "green": 6})
    write_params(project, {"model": tiny_model(tmp_path / "tiny.safetensors")})
    run(["transferpilot", "stage", "prepare"], project)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    dask = str(BIN.parent / "dask")
    env = {**os.environ, **OFFLINE, "PREFECT_API_URL": current_api_url()}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    scheduler = subprocess.Popen(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], **quiet
    )
    worker = subprocess.Popen(
        [dask, "worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard"],
        cwd=project,
        **quiet,
    )
    try:
        runner = parse_cluster(address).task_runner()
        state = extract_on_cluster.with_options(task_runner=runner)(
            project, address, return_state=True
        )
        done = state.result()
        assert done["computed"] == 12 and done["shards"] >= 1
        # the shards ran on the worker and reported to the run's API: they are in the UI
        assert sorted(task_runs_of(state.state_details.flow_run_id)) == sorted(
            f"extract shard {i + 1}-of-{done['shards']}" for i in range(done["shards"])
        )
        assembled = run(["transferpilot", "stage", "extract"], project)
        assert "12 images, 0 computed" in assembled.stderr
    finally:
        for proc in (worker, scheduler):
            proc.terminate()
            proc.wait(timeout=30)
