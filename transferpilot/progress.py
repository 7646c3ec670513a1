"""Progress for long loops: a bar in a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def track(
    items: Iterable[T],
    *,
    total: int,
    description: str,
    logger: logging.Logger,
    unit: str = "images",
    every_s: float = 10.0,
    count: Callable[[T], int] | None = None,
) -> Iterator[T]:
    """Yield ``items``, showing progress and throughput (``unit``/s).

    ``count(item)`` says how many units an item holds (a batch of images); 1 by default.

    In a terminal this is a rich progress bar; elsewhere (CI, DVC, Prefect logs)
    a log line every ``every_s`` seconds and one at the end.
    """
    start = time.perf_counter()
    if sys.stderr.isatty():
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8.1f} " + unit + "/s"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task(description, total=total, rate=0.0)
            done = 0
            for item in items:
                yield item
                step = count(item) if count else 1
                done += step
                rate = done / max(time.perf_counter() - start, 1e-9)
                bar.update(task, advance=step, rate=rate)
    else:
        last = start
        done = 0
        for item in items:
            yield item
            done += count(item) if count else 1
            now = time.perf_counter()
            if now - last >= every_s:
                last = now
                rate = done / (now - start)
                logger.info("%s: %d/%d %s (%.1f %s/s)", description, done, total, unit, rate, unit)
    elapsed = time.perf_counter() - start
    rate = total / elapsed if elapsed > 0 else float("inf")
    logger.info("%s: %d %s in %.1f s (%.1f %s/s)", description, total, unit, elapsed, rate, unit)
