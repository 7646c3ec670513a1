"""The environment the pipeline runs in: offline (no analytics, no telemetry), this
interpreter's scripts first; and the Prefect API this process reports to."""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: No analytics or telemetry, a patient ephemeral Prefect server.
OFFLINE = {
    "DVC_NO_ANALYTICS": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "HF_HUB_OFFLINE": "1",
}


def offline_environment() -> None:
    """Set :data:`OFFLINE` in this process (each unless already set); entry points call it
    before Prefect starts (the CLI's ``main``, ``python flows/pipeline.py``)."""
    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)


def subprocess_env() -> dict[str, str]:
    """The environment for DVC and the stages: offline, this interpreter's scripts first
    on PATH (a copy: this process's environment is left alone)."""
    env = dict(os.environ)
    for key, value in OFFLINE.items():
        env.setdefault(key, value)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TRANSFERPILOT_LOG_TIME"] = "0"  # the flow's logger stamps each line already
    return env


def current_api_url() -> str:
    """The Prefect API this process reports to (a temporary server's too)."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url)
