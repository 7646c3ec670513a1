"""Stage ``prepare``: intake of ``prepare.source`` into ``data/prepared/``.

Writes ``manifest.csv`` (the usable images), ``validation.json`` and
``validation.txt`` (every file skipped or converted, and why). When nothing
usable remains it writes the report, removes any stale manifest and raises.
"""

from __future__ import annotations

import logging
from typing import Any

from transferpilot.config import PrepareParams
from transferpilot.errors import DataError
from transferpilot.intake import format_report, prepare_dataset, write_manifest
from transferpilot.io import write_json, write_text
from transferpilot.stages import Paths, register_stage

log = logging.getLogger(__name__)


@register_stage("prepare", sections=("prepare",))
def run(params: PrepareParams, paths: Paths) -> dict[str, Any]:
    intake = prepare_dataset(params)
    summary = intake.summary()
    out = paths.prepared
    write_json(out / "validation.json", summary)
    write_text(out / "validation.txt", format_report(summary))
    manifest = out / "manifest.csv"
    if intake.fatal:
        manifest.unlink(missing_ok=True)
        raise DataError(f"{params.source}: {intake.fatal}; see {out / 'validation.txt'}")
    write_manifest(manifest, intake.records)
    totals = summary["totals"]
    log.info(
        "prepare: %d usable of %d files (%s), %d findings; wrote %s",
        totals["usable"],
        totals["files_seen"],
        ", ".join(f"{s} {totals[s]}" for s in ("train", "val", "test") if totals[s]),
        len(intake.findings),
        manifest,
    )
    return {"manifest": str(manifest), **totals, "findings": summary["findings_by_kind"]}
