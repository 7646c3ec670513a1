"""Stage ``extract``: features of every prepared image into ``data/features/``.

The folder is one :class:`~transferpilot.features.FeatureTable` (its module says
what each file holds). The per-image work is cached by content under
``extract.cache_dir``, so only new images cost a forward pass.
"""

from __future__ import annotations

import logging
from typing import Any

from transferpilot.config import ExtractParams, ModelParams
from transferpilot.device import resolve_device
from transferpilot.features import write_table
from transferpilot.intake import read_manifest
from transferpilot.io import fresh_dir
from transferpilot.stages import Paths, register_stage
from transferpilot.zoo import create_backbone

log = logging.getLogger(__name__)


@register_stage("extract", sections=("model", "extract"))
def run(model: ModelParams, params: ExtractParams, paths: Paths) -> dict[str, Any]:
    records = read_manifest(paths.manifest)
    backbone = create_backbone(model.name, arch=model.arch)
    device = resolve_device(params.device)
    with fresh_dir(paths.features) as out:
        meta, stats = write_table(backbone, records, out, params, device=device)
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
