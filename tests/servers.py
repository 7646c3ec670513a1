"""A real ``prefect server`` for integration tests: started on a free loopback port with its
own home and database, and the calls a test makes to it (the CLI, the REST API)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, sig: int) -> None:
    """Signal the process group; kill it if it has not exited 20 s later."""
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``(api_url, env)`` of a server bound to 127.0.0.1, with its home and database in
    ``home``; ``env`` is a user's shell pointed at it (offline, this venv on PATH)."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "DVC_NO_ANALYTICS": "1",
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port), "--no-ui"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prefect server did not start: {(home / 'server.log').read_text()}")
            time.sleep(0.5)
        yield api, env
    finally:
        stop(proc, signal.SIGTERM)
        log.close()


def prefect(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=cwd, env=env | {"PWD": str(cwd)}, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, f"prefect {args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def run_logs(api: str, flow_run_id: str) -> str:
    logs = httpx.post(
        f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}}
    ).json()
    return "\n".join(entry["message"] for entry in logs)


def run_deployment(api: str, env: dict[str, str], project: Path, *args: str) -> str:
    """Start a run of the nightly deployment, let a worker run it; its id, once completed."""
    started = prefect(["deployment", "run", "transferpilot/nightly", *args], project, env)
    flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", started).group(1)
    prefect(["worker", "start", "--pool", "transferpilot", "--run-once"], project, env, timeout=900)
    deadline = time.monotonic() + 300
    while True:
        run = httpx.get(f"{api}/flow_runs/{flow_run_id}").json()
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        assert time.monotonic() < deadline, f"flow run still {run['state']['type']}"
        time.sleep(2)
    assert run["state"]["type"] == "COMPLETED", run_logs(api, flow_run_id)
    return flow_run_id
