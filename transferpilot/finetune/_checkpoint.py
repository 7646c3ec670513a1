"""Checkpoints: safetensors tensors plus a JSON record; never pickled, written atomically.

A checkpoint ``<stem>`` is ``<stem>.json`` (epoch, metrics, scheduler and optimizer
scalars, and the names and digests of its tensor files) with the tensor files it names:
``<stem>-epoch<N>.safetensors`` (model weights) and ``<stem>-epoch<N>.optim.safetensors``
(optimizer tensors, "last" only). Each epoch's tensors go to files of their own and the
JSON, written last, is the one commit point: a kill while epoch N+1 is being written
leaves epoch N's record and files intact, so the re-run resumes from epoch N. Files no
record names any more are removed after the record is replaced.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from transferpilot.io import sha256_file, write_json

log = logging.getLogger(__name__)


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> str:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=meta
    )
    os.replace(tmp, path)
    return sha256_file(path)


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [
        {k: v for k, v in g.items() if k != "params"} | {"params": g["params"]}
        for g in state["param_groups"]
    ]
    return tensors, {"scalars": scalars, "param_groups": groups}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, scalars in rest["scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    return {"state": state, "param_groups": rest["param_groups"]}


def save_checkpoint(
    directory: Path,
    stem: str,
    model: torch.nn.Module,
    record: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Write ``<stem>.*`` under ``directory`` (see the module docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    record = dict(record)
    generation = f"{stem}-epoch{record.get('epoch', 0)}"
    record["model_file"] = f"{generation}.safetensors"
    record["model_sha256"] = _save_tensors(directory / record["model_file"], model.state_dict(), {})
    if optimizer is not None:
        tensors, rest = _flatten_optimizer(optimizer.state_dict())
        record["optimizer"] = rest
        record["optimizer_file"] = f"{generation}.optim.safetensors"
        record["optimizer_sha256"] = _save_tensors(
            directory / record["optimizer_file"], tensors, {}
        )
    write_json(directory / f"{stem}.json", record)  # the commit point
    kept = {record["model_file"], record.get("optimizer_file")}
    for stale in directory.glob(f"{stem}-epoch*.safetensors"):
        if stale.name not in kept:
            stale.unlink(missing_ok=True)


def load_checkpoint(directory: Path, stem: str) -> dict[str, Any] | None:
    """The record of ``<stem>`` with its tensors (``model``, ``optimizer``), or None if absent
    or incomplete (a file missing or not matching its digest)."""
    meta_path = directory / f"{stem}.json"
    if not meta_path.exists():
        return None
    try:
        record = json.loads(meta_path.read_text(encoding="utf-8"))
        model_path = directory / record.get("model_file", f"{stem}.safetensors")
        if sha256_file(model_path) != record["model_sha256"]:
            raise ValueError("model weights do not match the record")
        record["model"] = load_file(str(model_path))
        if "optimizer_sha256" in record:
            optim_path = directory / record.get("optimizer_file", f"{stem}.optim.safetensors")
            if sha256_file(optim_path) != record["optimizer_sha256"]:
                raise ValueError("optimizer state does not match the record")
            record["optimizer"] = _unflatten_optimizer(
                load_file(str(optim_path)), record["optimizer"]
            )
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        log.warning("ignoring checkpoint %s: %s", directory / stem, err)
        return None
    return record
