"""Shared helpers for the benchmark scripts: machine description, tables, JSON output."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def commit() -> str:
    """The commit the figures are measured at (``+dirty`` when the tree has changes),
    read when the benchmark started: an edit while it runs does not change what ran."""
    return _STARTED_AT


def _commit_now() -> str:
    from transferpilot.orchestrate import code_version

    return code_version(Path(__file__).resolve().parents[1]) or "unknown"


_STARTED_AT = _commit_now()


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def stamp(m: dict[str, Any]) -> str:
    """When and at which commit: every table title carries it."""
    return f"{m['date']}, commit {m['commit']}"


def timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    """Run ``fn`` ``repeats`` times; wall times in seconds and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def median(values: list[float]) -> float:
    return statistics.median(values)


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    cells = [header, *[[f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [f"| {' | '.join(c.ljust(w) for c, w in zip(r, widths, strict=True))} |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    text = f"{title}\n\n" + "\n".join(lines)
    print(text)
    return text


def write_results(name: str, payload: dict[str, Any], table: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(table + "\n")
    print(f"\nwrote {path}")
    return path


def publish(
    name: str, title: str, header: list[str], rows: list[list[Any]], args: Any, results: Any
) -> Path:
    """Print the table, titled with when, at which commit and on what it was measured,
    and write it with the machine, the arguments and ``results`` as ``results/<name>``."""
    m = machine()
    text = print_table(f"{title} — {stamp(m)}, {m['cpu']}, {m['cores']} cores", header, rows)
    arguments = json.loads(json.dumps(vars(args), default=str))
    return write_results(name, {"machine": m, "args": arguments, "results": results}, text)


def dataset_arguments(description: str, **defaults: Any) -> Any:
    """The arguments the dataset benchmarks share: dataset folders (default: theirs in
    ``../shared/datasets``), ``--seeds``, ``--cache``; then ``defaults`` as options."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("datasets", nargs="*", type=Path)
    parser.add_argument("--seeds", type=int, default=defaults.pop("seeds", 1))
    parser.add_argument("--cache", type=Path, default=Path("data/cache/features"))
    for name, value in defaults.items():
        parser.add_argument(f"--{name}", type=type(value), default=value)
    return parser


@contextlib.contextmanager
def feature_table(backbone: Any, folder: Path, cache: Path) -> Iterator[Any]:
    """The feature table of every image ``folder`` holds (the prepare stage's intake),
    extracted through the feature cache at ``cache``, for as long as the block runs."""
    from transferpilot.config import ExtractParams, PrepareParams
    from transferpilot.features import FeatureTable, write_table
    from transferpilot.intake import prepare_dataset

    intake = prepare_dataset(PrepareParams(source=folder))
    with tempfile.TemporaryDirectory() as tmp:
        meta, _ = write_table(backbone, intake.records, Path(tmp), ExtractParams(cache_dir=cache))
        yield FeatureTable(intake.records, meta, Path(tmp))


def dataset_setup(
    description: str, default: tuple[str, ...], **options: Any
) -> tuple[Any, list[Path], Any]:
    """``(args, dataset folders, Lite0)`` for a benchmark over datasets: the shared
    arguments (:func:`dataset_arguments`), the folders asked for (default: ``default`` in
    ``../shared/datasets``), warnings-only logging and the pretrained backbone."""
    import logging

    from transferpilot.zoo import create_backbone

    args = dataset_arguments(description, **options).parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    return (
        args,
        args.datasets or [SHARED / name for name in default],
        create_backbone("efficientnet_lite0"),
    )
