"""``--cluster``: where the extraction shards run (a Dask cluster, through prefect-dask)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from transferpilot.errors import ConfigError
from transferpilot.orchestrate.environment import OFFLINE, current_api_url


@dataclass(frozen=True)
class Cluster:
    """Where the extraction shards run (``--cluster``): ``local:N`` starts a Dask
    ``LocalCluster`` of N worker processes on 127.0.0.1 for the run; ``tcp://HOST:PORT``
    uses a running Dask scheduler, whose workers must see the project folder, the images
    and ``extract.cache_dir`` at the same paths (a shared mount)."""

    spec: str
    address: str | None = None
    workers: int = 0

    @property
    def threads(self) -> int | None:
        """Cores for each local worker's model (all of a remote worker's machine)."""
        return max(1, (os.cpu_count() or 1) // self.workers) if self.workers else None

    @property
    def shards(self) -> int:
        """Shards to map at least: two per local worker (a slow one is not waited for),
        else eight; :func:`~transferpilot.features.missing_shards` adds more for big sets."""
        return 2 * self.workers if self.workers else 8

    def task_runner(self) -> Any:
        """prefect-dask's ``DaskTaskRunner`` for this cluster. Local workers are handed the
        Prefect API this process reports to (else each would start a temporary server of
        its own and its task runs would not appear in the run's UI); a remote cluster's
        workers are started with ``PREFECT_API_URL`` set by whoever runs them."""
        from prefect_dask import DaskTaskRunner

        if self.address:
            return DaskTaskRunner(address=self.address)
        env = {key: os.environ.get(key, value) for key, value in OFFLINE.items()}
        env["PREFECT_API_URL"] = current_api_url()
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": self.workers,
                "threads_per_worker": 1,  # one shard at a time; its model gets `threads` cores
                "processes": True,
                "host": "127.0.0.1",
                "dashboard_address": "127.0.0.1:0",  # loopback, any free port
                "env": env,
            },
        )


_CLUSTER = re.compile(r"^(?:local:(?P<workers>\d+)|(?P<address>tcp://[^\s:/]+:\d+))$")


def parse_cluster(spec: str | None) -> Cluster | None:
    """``local:N`` or ``tcp://HOST:PORT`` (else :class:`ConfigError`); None for none."""
    if not spec:
        return None
    found = _CLUSTER.match(spec.strip())
    if not found or (found["workers"] is not None and int(found["workers"]) < 1):
        raise ConfigError(
            f"--cluster {spec!r}: expected local:N (N Dask worker processes here) or"
            " tcp://HOST:PORT (a running Dask scheduler)"
        )
    if found["workers"] is not None:
        return Cluster(spec, workers=int(found["workers"]))
    return Cluster(spec, address=found["address"])
