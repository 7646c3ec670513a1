"""Benchmark: what orchestration costs — direct library calls, `dvc repro`, the Prefect flow.

    python -m benchmarks.overhead

The same work three ways, in one run, each in a fresh copy of the project
(its own empty feature, probe and throughput caches, the embedded default data, git + DVC):

1. direct: one Python process calls every stage function in DVC's order, each timed;
2. ``dvc repro``;
3. ``make run`` (``transferpilot digits`` + ``transferpilot run``: the Prefect
   flow with a temporary server, one task per stage) on a ready virtualenv —
   the time to result a newcomer sees after the install.

Then the cost of a re-run with nothing changed (median of three each):
``dvc repro``, and ``transferpilot run`` with its temporary server and
against a ``prefect server`` already running — the flow's fixed overhead. Targets: that overhead
<= 15 s over ``dvc repro``; ``make run`` <= 3 minutes; a no-change re-run in
seconds.
Writes ``benchmarks/results/overhead.{json,md}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks._common import machine, print_table, stamp, write_results

ROOT = Path(__file__).resolve().parents[1]
COPY_FILES = (
    "dvc.yaml", "params.yaml", ".dvcignore", "prefect.yaml", "holdout.csv", "Makefile",
    "pyproject.toml",
)  # fmt: skip
COPY_DIRS = ("transferpilot", "flows", "tasks")
DIRECT = """
import json, time
from transferpilot.config import load_params
from transferpilot.orchestrate import stage_order
from transferpilot.stages import Paths, run_stage
from pathlib import Path
params = load_params()
seconds = {}
for stage, _ in stage_order(Path(".")):
    start = time.perf_counter()
    run_stage(stage, params, Paths())
    seconds[stage] = time.perf_counter() - start
Path("stage_seconds.json").write_text(json.dumps(seconds))
"""


def env() -> dict[str, str]:
    out = {**os.environ, "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
    out["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out['PATH']}"
    return out


def sh(cmd: list[str], cwd: Path, api: str | None = None) -> float:
    start = time.perf_counter()
    environ = env() | ({"PREFECT_API_URL": api} if api else {})
    environ["TRANSFERPILOT_CACHE"] = str(cwd / ".user-cache")  # throughput: measured per copy
    result = subprocess.run(cmd, cwd=cwd, env=environ, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{cmd} failed in {cwd}:\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - start


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """A `prefect server` on a free loopback port (its own home); yields the API URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    home.mkdir(parents=True)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
           "--port", str(port), "--no-ui"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env() | {"PREFECT_HOME": str(home)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        yield api
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def project_copy(work: Path, *, digits: bool) -> Path:
    work.mkdir(parents=True)
    for name in COPY_FILES:
        shutil.copy2(ROOT / name, work / name)  # keeps mtimes: make sees the venv is current
    shutil.copytree(ROOT / ".dvc", work / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    for name in COPY_DIRS:
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    venv = ROOT / ".venv"
    (work / ".venv").symlink_to(venv)  # a ready virtualenv: make finds its install stamp
    (work / ".gitignore").write_text(".venv\n")
    if digits:
        sh([sys.executable, "-m", "transferpilot.cli", "digits", "data/digits"], work)
    sh(["git", "init", "-q"], work)
    sh(["git", "add", "-A"], work)
    sh(["git", "-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "copy"], work)
    return work


REPEATS = 3


def median_of(measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(REPEATS))


def main() -> None:
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        direct = project_copy(base / "direct", digits=True)
        repro = project_copy(base / "repro", digits=True)
        flow = project_copy(base / "flow", digits=False)
        results["direct_s"] = sh([sys.executable, "-c", DIRECT], direct)
        # where the time goes: each stage in that one process (the first to import PyTorch
        # and timm pays for it; in `dvc repro` every stage process does)
        results["direct_stage_s"] = json.loads((direct / "stage_seconds.json").read_text())
        results["dvc_repro_s"] = sh(["dvc", "repro"], repro)
        # -o: never remake the install stamp (the venv is shared through a symlink)
        results["make_run_s"] = sh(["make", "-o", ".venv/.installed", "run"], flow)
        results["digits_s"] = sh([sys.executable, "-m", "transferpilot.cli", "digits", "d2"], flow)
        # no-change re-runs: the median of REPEATS each (seconds each, and this machine is noisy)
        results["dvc_repro_nochange_s"] = median_of(lambda: sh(["dvc", "repro"], repro))
        results["flow_nochange_s"] = median_of(lambda: sh(["transferpilot", "run"], flow))
        with prefect_server(base / "prefect-home") as api:  # the flow against a running server
            results["flow_server_nochange_s"] = median_of(
                lambda: sh(["transferpilot", "run"], flow, api=api)
            )
    flow_s = results["make_run_s"] - results["digits_s"]
    results["flow_s"] = flow_s
    results["dvc_over_direct_s"] = results["dvc_repro_s"] - results["direct_s"]
    results["flow_over_dvc_s"] = flow_s - results["dvc_repro_s"]
    r = results
    rows = [
        ["direct library calls (one process)", f"{r['direct_s']:.1f}", "reference", ""],
        ["dvc repro", f"{r['dvc_repro_s']:.1f}", f"+{r['dvc_over_direct_s']:.1f} s", ""],
        ["Prefect flow (transferpilot run)", f"{flow_s:.1f}",
         f"+{r['flow_over_dvc_s']:.1f} s over dvc", ""],
        ["make run on a ready venv", f"{results['make_run_s']:.1f}", "time to result", "<= 180 s"],
        ["dvc repro, nothing changed (median of 3)", f"{r['dvc_repro_nochange_s']:.1f}", "",
         "seconds"],
        ["transferpilot run, nothing changed (median of 3)", f"{r['flow_nochange_s']:.1f}",
         f"+{r['flow_nochange_s'] - r['dvc_repro_nochange_s']:.1f} s fixed", "<= +15 s"],
        ["... with a prefect server already running", f"{r['flow_server_nochange_s']:.1f}",
         f"+{r['flow_server_nochange_s'] - r['dvc_repro_nochange_s']:.1f} s fixed", "<= +15 s"],
    ]  # fmt: skip
    m = machine()
    table = print_table(
        f"Orchestration overhead, embedded default (1,797 digits), cold feature cache — "
        f"{stamp(m)}, {m['cpu']}, {m['cores']} cores",
        ["run", "seconds", "overhead", "target"],
        rows,
    )
    stages = results["direct_stage_s"]
    table += "\n\n" + print_table(
        f"Where the direct calls' time goes, by stage (one process) — {stamp(m)}",
        ["stage", "seconds", "share"],
        [[k, f"{v:.1f}", f"{v / r['direct_s']:.0%}"] for k, v in stages.items()],
    )
    write_results("overhead", {"machine": m, "results": results}, table)


if __name__ == "__main__":
    main()
