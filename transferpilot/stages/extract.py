"""Stage ``extract``: features of every prepared image into ``data/features/``.

The folder is one :class:`~transferpilot.features.FeatureTable` (its module says
what each file holds). The per-image work is cached by content under
``extract.cache_dir``, so only new images cost a forward pass.

On a cluster, :func:`plan_shards` and :func:`fill_shard` fill that cache first, one
shard of the manifest per task (the flow maps them over Dask workers); the stage
then finds every image cached and only assembles the table.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

from transferpilot.config import (
    DecideParams,
    ExtractParams,
    ModelParams,
    Params,
    ProfileParams,
    load_params,
)
from transferpilot.device import resolve_device
from transferpilot.features import fill_cache, missing_shards, write_table
from transferpilot.intake import read_manifest
from transferpilot.io import fresh_dir, write_json
from transferpilot.stages import Paths, register_stage
from transferpilot.zoo import create_backbone

log = logging.getLogger(__name__)


@register_stage("extract", sections=("model", "extract", "profile", "decide"))
def run(
    model: ModelParams,
    params: ExtractParams,
    profile: ProfileParams,
    decide: DecideParams,
    paths: Paths,
) -> dict[str, Any]:
    records = read_manifest(paths.manifest)
    from transferpilot.profile.select import select_model  # scikit-learn: only when run

    model, ranking = select_model(records, model, params, profile, decide)  # auto: rank first
    backbone = create_backbone(model.name, arch=model.arch)
    device = resolve_device(params.device)
    with fresh_dir(paths.features) as out:
        meta, stats = write_table(backbone, records, out, params, device=device)
        if ranking is not None:
            write_json(out / paths.backbones.path.name, ranking.to_dict())
    log.info(
        "extract: %d images, %d computed in %.1f s (%.1f images/s) on %s, %d outputs -> %s",
        len(records),
        stats.computed,
        stats.seconds,
        stats.images_per_s,
        device,
        len(meta.outputs),
        paths.features,
    )
    return {"images": len(records), "computed": stats.computed, "seconds": stats.seconds}


def _settings(project: Path) -> tuple[Params, ExtractParams]:
    """The project's params, the feature cache's folder made absolute (a Dask worker's
    working directory is not the project's)."""
    params = load_params(project / "params.yaml")
    cache_dir = project / params.extract.cache_dir  # an absolute cache_dir stays as it is
    return params, params.extract.model_copy(update={"cache_dir": cache_dir})


def _backbone(model: ModelParams) -> Any:
    """One backbone per worker process and model, whatever the number of shards it runs;
    a ``file:`` model is built again when its file changes (a long-lived worker)."""
    stamp = None
    if model.name.startswith("file:"):
        with contextlib.suppress(OSError):  # a missing file: create_backbone says so
            found = Path(model.name.removeprefix("file:")).expanduser().stat()
            stamp = (found.st_mtime_ns, found.st_size)
    return _built(model.name, model.arch, stamp)


@cache
def _built(name: str, arch: str | None, stamp: tuple[int, int] | None) -> Any:
    return create_backbone(name, arch=arch)


def plan_shards(project: Path, shards: int) -> tuple[str, list[list[tuple[str, str]]]]:
    """The backbone to extract with and the images of ``project``'s manifest the feature
    cache lacks, as lists of ``(path, sha256)`` grouped by image hash (see
    :func:`~transferpilot.features.missing_shards`); empty when all are cached. Runs in
    the flow's process, once per run: the backbone is built afresh. With ``model.name:
    auto`` the candidates are ranked first, as the stage ranks them (from the same
    caches, so the stage's own ranking then costs little and agrees)."""
    params, settings = _settings(project)
    records = read_manifest(Paths(project).manifest)
    profile = params.profile
    if profile.cache_dir is not None:  # the project's probe cache, wherever the flow runs
        profile = profile.model_copy(update={"cache_dir": project / profile.cache_dir})
    absolute = [replace(r, path=project / r.path) for r in records]
    from transferpilot.profile.select import select_model

    model, _ = select_model(absolute, params.model, settings, profile, params.decide)
    items = [(project / r.path, r.sha256) for r in records]
    backbone = create_backbone(model.name, arch=model.arch)
    groups = missing_shards(backbone, items, settings, shards, resolve_device(settings.device))
    return model.name, [[(str(path), sha) for path, sha in group] for group in groups]


def fill_shard(
    project: Path,
    items: list[tuple[str, str]],
    name: str,
    threads: int | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """Compute one shard of :func:`plan_shards` into the feature cache: ``threads``
    cores for the model, images decoded in this process, a batch ahead in a thread (a
    Dask worker may not start processes of its own). Idempotent: a retry computes only
    what is still missing. ``model`` is the backbone :func:`plan_shards` chose (default:
    ``model.name``)."""
    params, settings = _settings(project)
    if threads:
        import torch

        torch.set_num_threads(threads)
    backbone = _backbone(params.model.model_copy(update={"name": model or params.model.name}))
    device = resolve_device(settings.device)
    settings = settings.model_copy(update={"workers": 0})
    pairs = [(Path(path), sha) for path, sha in items]
    _, stats = fill_cache(
        backbone, pairs, settings, device, lock=f"extract-{name}", threads=threads
    )
    log.info(
        "shard %s: %d images, %d computed in %.1f s (%.1f images/s, pid %d)",
        name,
        len(items),
        stats.computed,
        stats.seconds,
        stats.images_per_s,
        os.getpid(),
    )
    return {
        "shard": name,
        "images": len(items),
        "computed": stats.computed,
        "seconds": stats.seconds,
    }
