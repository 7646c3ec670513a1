"""A run's settings: every way to ask for one (flow parameters, CLI options) as DVC ``-S``
overrides, checked before any stage runs, applied to ``params.yaml`` atomically, and the
workspace put back after the run (the run lives on in its DVC experiment)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transferpilot.errors import ConfigError, DataError
from transferpilot.io import atomic_open
from transferpilot.orchestrate.dvc import _Dvc


def _source(data: Path, project: Path) -> str:
    """The dataset path as params.yaml should hold it: relative inside the project."""
    full = Path(data).expanduser().resolve()
    try:
        return str(full.relative_to(project.resolve()))
    except ValueError:
        return str(full)


def requested_overrides(
    project: Path,
    data: Path | None = None,
    model: str | None = None,
    strategy: str | None = None,
    params: Mapping[str, Any] | None = None,
    overrides: Sequence[str] | None = None,
) -> list[str]:
    """Every way a run can ask for a setting (the flow's parameters, the CLI's options),
    as DVC ``-S`` overrides; later ones win."""
    named: dict[str, Any] = {}
    if data is not None:
        named["prepare.source"] = _source(data, project)
    if model is not None:
        named["model.name"] = model
    if strategy is not None:
        named["decide.strategy"] = strategy
    return to_overrides(named | dict(params or {})) + list(overrides or [])


def to_overrides(params: Mapping[str, Any]) -> list[str]:
    """``{"train.epochs": 3, "prepare.source": "my data"}`` as DVC ``-S`` overrides."""
    out = []
    for key, value in params.items():
        if isinstance(value, Path):
            value = str(value)
        out.append(f"{key}={json.dumps(value)}")  # JSON is valid Hydra override syntax
    return out


def _with_add_prefix(overrides: Sequence[str], data: Any) -> list[str]:
    """``key=value`` for a key params.yaml lacks becomes ``++key=value`` (add or override)."""
    out = []
    for item in overrides:
        key = item.split("=", 1)[0]
        node, present = data, True
        for part in key.lstrip("+~").split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                present = False
                break
        out.append(item if present or key.startswith(("+", "~")) else f"++{item}")
    return out


def check_source(project: Path, params: Any) -> None:
    """The data source ``prepare.source`` exists and can be read, else :class:`DataError`
    (exit 3) naming it: checked before any stage runs, so DVC never fails on it."""
    source = Path(params.prepare.source).expanduser()
    full = source if source.is_absolute() else project / source
    if not full.exists():
        raise DataError(f"prepare.source: {source} does not exist (an image folder or a CSV file)")
    if not os.access(full, os.R_OK | (os.X_OK if full.is_dir() else 0)):
        raise DataError(f"prepare.source: {source} cannot be read (permissions)")


def check_run(project: Path, overrides: Sequence[str], params_file: str = "params.yaml"):
    """What a run with ``overrides`` would use, checked, with nothing written: the params
    (:class:`ConfigError` naming a bad key or value) and the data source (:class:`DataError`)."""
    params = _overridden(project, overrides, params_file, write=False)
    check_source(project, params)
    return params


def apply_overrides(project: Path, overrides: Sequence[str], params_file: str = "params.yaml"):
    """Apply DVC ``-S`` overrides to ``params.yaml``, validated first, replaced atomically.

    Returns the validated :class:`~transferpilot.config.Params`; a bad override
    raises :class:`ConfigError` naming it, a missing data source :class:`DataError`,
    and either leaves ``params.yaml`` untouched.
    """
    return _overridden(project, overrides, params_file, write=True)


def _overridden(project: Path, overrides: Sequence[str], params_file: str, *, write: bool):
    import yaml

    from transferpilot.config import load_params

    path = project / params_file
    if not overrides:
        params = load_params(path)
        check_source(project, params)
        return params
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. train.epochs=3)")
    current = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}
    fd, tmp_name = tempfile.mkstemp(prefix=".params.", suffix=".yaml", dir=project)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if path.exists():
            shutil.copyfile(path, tmp)
        try:
            _Dvc.apply_overrides(tmp, _with_add_prefix(overrides, current or {}))
        except ValueError as err:
            raise ConfigError(f"overrides {list(overrides)}: {err}") from None
        params = load_params(tmp)  # raises ConfigError naming the key
        check_source(project, params)
        if write:
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        return params
    finally:
        tmp.unlink(missing_ok=True)


#: What a run with overrides changes in the workspace, and :func:`restore_workspace` puts back.
WORKSPACE_FILES = ("params.yaml", "dvc.lock")


def snapshot_workspace(project: Path) -> dict[str, bytes | None]:
    """``params.yaml`` and ``dvc.lock`` as they are, to put back after a run with overrides."""
    return {
        name: (project / name).read_bytes() if (project / name).exists() else None
        for name in WORKSPACE_FILES
    }


def restore_workspace(project: Path, saved: dict[str, bytes | None]) -> bool:
    """The workspace as :func:`snapshot_workspace` saw it: ``params.yaml`` and ``dvc.lock``
    put back (atomically), then the outputs checked out of DVC's cache to match, as ``dvc
    exp run --temp`` would have left it: ``dvc status`` as clean as before. True when
    anything had changed. A run's overrides, lock and outputs live on in its DVC
    experiment (``dvc exp apply NAME``)."""
    changed = False
    for name, before in saved.items():
        path = project / name
        if (path.read_bytes() if path.exists() else None) == before:
            continue
        changed = True
        if before is None:
            path.unlink(missing_ok=True)
            continue
        with atomic_open(path, "wb") as fh:
            fh.write(before)
        os.chmod(path, 0o644)
    if changed and saved.get("dvc.lock") is not None:
        _Dvc(project).checkout()
    return changed
