"""Benchmark: extraction on a Dask cluster through Prefect, against one plain process.

    python -m benchmarks.scale_out [DATASET]      # default ../shared/datasets/hymenoptera

In one copy of the project (prepare run on DATASET), three extractions of the same
images, each into an empty feature cache of its own (the ONNX graph exported
beforehand, untimed, so each row is the forward passes and what surrounds them):

1. plain: :func:`transferpilot.features.fill_cache` in this process (ONNX Runtime on
   every core, images decoded in a DataLoader worker) — what the ``extract`` stage does;
2. ``--cluster local:1`` and 3. ``--cluster local:2``: the flow's ``extract on dask``
   subflow (prefect-dask's ``DaskTaskRunner`` over a ``LocalCluster`` of 1 or 2
   processes, one shard task at a time per worker, ``cores / workers`` model threads
   each, images decoded in the worker).

"wall" is the whole call: for the cluster rows the cluster's start (worker processes
import torch and load the model) and its shutdown are in it; "in shards" is the time
the shard tasks spent computing (summed over shards), the part that grows with the
data. The features are compared with the plain run's, bit for bit.
Writes ``benchmarks/results/scale_out.{json,md}``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks._common import machine, print_table, stamp, write_results
from benchmarks.overhead import project_copy, sh

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "datasets" / "hymenoptera"


def set_cache(project: Path, cache: Path) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["extract"]["cache_dir"] = str(cache)
    path.write_text(yaml.safe_dump(params))


def cached_rows(settings, backbone, items) -> dict[str, np.ndarray]:
    from transferpilot.features import open_cache, output_names

    return open_cache(backbone, settings).read([s for _, s in items], output_names(backbone))


def main() -> None:
    from prefect import flow

    from flows.pipeline import extract_on_cluster
    from transferpilot import orchestrate
    from transferpilot.config import load_params
    from transferpilot.features._extract import fill_cache, forward_graph, open_cache
    from transferpilot.intake import read_manifest
    from transferpilot.stages import Paths
    from transferpilot.zoo import create_backbone

    orchestrate.offline_environment()
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    if not data.is_dir():
        raise SystemExit(f"{data}: not found (needs ../shared/datasets)")
    m = machine()
    work = Path(tempfile.mkdtemp(prefix="tp-scale-out-"))
    try:
        project = project_copy(work / "project", digits=False)
        params_file = project / "params.yaml"
        params = yaml.safe_load(params_file.read_text())
        params["prepare"]["source"] = str(data.resolve())
        params_file.write_text(yaml.safe_dump(params))
        sh([sys.executable, "-m", "transferpilot.cli", "stage", "prepare"], project)
        records = read_manifest(Paths(project).manifest)
        items = [(project / r.path, r.sha256) for r in records]
        backbone = create_backbone(load_params(params_file).model.name)

        def fresh(name: str):
            cache = work / f"cache-{name}"
            set_cache(project, cache)
            settings = load_params(params_file).extract
            forward_graph(backbone, open_cache(backbone, settings), settings)  # untimed
            return settings

        @flow(name="warm-up")
        def warm_up() -> None:  # the temporary Prefect server starts here, untimed
            return None

        warm_up()
        rows, reference = [], None
        settings = fresh("plain")
        start = time.perf_counter()
        _, stats = fill_cache(backbone, items, settings)
        wall = time.perf_counter() - start
        reference = cached_rows(settings, backbone, items)
        n = stats.computed
        rows.append(["plain (1 process)", n, wall, n / wall, stats.seconds, "-", "yes"])
        for workers in (1, 2):
            spec = f"local:{workers}"
            cluster = orchestrate.parse_cluster(spec)
            settings = fresh(f"dask{workers}")
            start = time.perf_counter()
            runner = cluster.task_runner()
            done = extract_on_cluster.with_options(task_runner=runner)(project, spec)
            wall = time.perf_counter() - start
            got = cached_rows(settings, backbone, items)
            same = all(np.array_equal(got[k], reference[k]) for k in reference)
            in_shards = sum(done["shard_seconds"])
            rows.append(
                [f"Dask {spec}", done["computed"], wall, done["computed"] / wall, in_shards,
                 cluster.threads, "yes" if same else "NO"]
            )  # fmt: skip
        header = ["run", "images", "wall s", "images/s (wall)", "in shards s",
                  "model threads/worker", "features = plain"]  # fmt: skip
        title = (
            f"Extraction on Dask vs one process: {data.name}, {len(items)} images, "
            f"{backbone.spec} at {backbone.data_config.input_size[1]} px, ONNX Runtime on "
            f"{m['cores']} cores ({stamp(m)})"
        )
        table = print_table(title, header, rows)
        payload = {
            "machine": m,
            "dataset": data.name,
            "images": len(items),
            "rows": [dict(zip(header, r, strict=True)) for r in rows],
        }
        write_results("scale_out", payload, table)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
