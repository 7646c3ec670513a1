"""A real `prefect server` on a free loopback port: the project's prefect.yaml deployment,
a process work pool and a worker run the flow; the run and its artifacts are read back
through the REST API, as the Prefect UI reads them."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.projects import working_copy
from tests.servers import prefect, prefect_server, run_deployment, run_logs, stop

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """``(api_url, env)`` of a server bound to 127.0.0.1, with its own home and database."""
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as started:
        yield started


def non_loopback_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


def test_the_server_listens_on_loopback_only(server) -> None:
    api, _ = server
    port = int(api.rsplit(":", 1)[1].split("/")[0])
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to probe")
    with pytest.raises(OSError):
        socket.create_connection((address, port), timeout=3).close()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, project_root: Path) -> Path:
    return working_copy(tmp_path_factory.mktemp("served") / "project", project_root)


def finished_runs(api: str, deployment_id: str) -> list[dict]:
    runs = httpx.post(
        f"{api}/flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": [deployment_id]}}}
    ).json()
    return [r for r in runs if r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED")]


def test_a_deployment_runs_on_a_worker_and_its_artifacts_are_visible(server, project: Path) -> None:
    api, env = server
    prefect(["work-pool", "create", "transferpilot", "--type", "process"], project, env)
    deployed = prefect(["--no-prompt", "deploy", "--all"], project, env)
    assert "nightly" in deployed

    deployments = httpx.post(f"{api}/deployments/filter", json={}).json()
    (nightly,) = [d for d in deployments if d["name"] == "nightly"]
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 2 * * *"]
    assert nightly["work_pool_name"] == "transferpilot"

    committed = (project / "params.yaml").read_text()
    # a one-off experiment from the UI or the CLI: its override must not outlive the run
    flow_run_id = run_deployment(api, env, project, "--param", 'overrides=["train.cv_folds=2"]')
    assert (project / "params.yaml").read_text() == committed
    decision = json.loads((project / "data" / "decision" / "decision.json").read_text())
    assert decision["train"]["cv_folds"] == 2  # the run itself used the override

    tasks = httpx.post(
        f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}}
    ).json()
    names = {t["name"] for t in tasks}  # task run names: the stages and helpers, plainly
    assert names >= {"prepare", "extract", "profile", "decide", "train", "evaluate", "publish"}
    assert all(t["state"]["type"] == "COMPLETED" for t in tasks)

    artifacts = httpx.post(
        f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}
    ).json()
    by_key = {a["key"]: a for a in artifacts}
    assert {"transferpilot-decision", "transferpilot-metrics", "transferpilot-report"} <= set(
        by_key
    )
    assert by_key["transferpilot-metrics"]["type"] == "table"
    assert "## Metrics" in by_key["transferpilot-report"]["data"]
    assert (project / "reports" / "report.html").is_file()  # it ran in the project folder

    assert "Running stage 'extract'" in run_logs(api, flow_run_id)
    report = by_key["transferpilot-report"]["data"]
    assert "](data:image/png;base64," in report and str(project) not in report

    # the next run reads the committed params.yaml (asserted equal above); a plain
    # deployment run, its name, tags and artifacts: tests/integration/test_champion.py


def test_transferpilot_serve_runs_the_flow_on_its_cron_schedule(server, project: Path) -> None:
    api, env = server
    log = (project.parent / "serve.log").open("w")
    served = subprocess.Popen(
        [str(Path(sys.executable).parent / "transferpilot"), "serve", "--cron", "* * * * *",
         "--name", "every-minute"],
        cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240  # the next minute, plus the scheduler's loop
        deployment = None
        while time.monotonic() < deadline:
            assert served.poll() is None, "transferpilot serve exited"
            found = httpx.post(f"{api}/deployments/filter", json={}).json()
            deployment = next((d for d in found if d["name"] == "every-minute"), None)
            if deployment and finished_runs(api, deployment["id"]):
                break
            time.sleep(3)
        assert deployment is not None, "the served deployment never appeared"
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["* * * * *"]
        runs = finished_runs(api, deployment["id"])
        assert runs, "no scheduled run finished within four minutes"
        state = runs[0]["state"]
        assert state["type"] == "COMPLETED", f"{state}: {log.name}, {run_logs(api, runs[0]['id'])}"
        assert runs[0]["auto_scheduled"]
    finally:
        stop(served, signal.SIGINT)
        log.close()
