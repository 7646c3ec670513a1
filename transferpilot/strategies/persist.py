"""Saving trained heads: joblib plus a JSON sidecar that must match before loading.

joblib files are pickles, so transferpilot loads only the files it wrote: the
sidecar records the file's sha256, and a file whose digest differs, whose
sidecar is missing, or that was made for another model, layer or
scikit-learn version is refused before anything is unpickled.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn

import transferpilot
from transferpilot.errors import ModelError
from transferpilot.io import atomic_open, sha256_file, write_json


def _versions() -> dict[str, str]:
    return {
        "transferpilot": transferpilot.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def sidecar_path(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def save_classifier(
    estimator: Any,
    path: Path,
    *,
    model: str,
    layer: str,
    classes: Sequence[str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``estimator`` to ``path`` (joblib) and its sidecar; returns the sidecar."""
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        joblib.dump(estimator, fh)
    meta = {
        "file": path.name,
        "sha256": sha256_file(path),
        "model": model,
        "layer": layer,
        "classes": list(classes),
        "versions": _versions(),
        **(extra or {}),
    }
    write_json(sidecar_path(path), meta)
    return meta


def load_classifier(
    path: Path, *, model: str | None = None, layer: str | None = None
) -> tuple[Any, dict[str, Any]]:
    """Load a head saved by :func:`save_classifier`, after checking its sidecar."""
    path = Path(path)
    side = sidecar_path(path)
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(
            f"{path}: no readable sidecar {side.name} ({err}); refusing to load"
        ) from None
    if not path.is_file() or sha256_file(path) != meta.get("sha256"):
        raise ModelError(f"{path}: content does not match its sidecar digest; refusing to load")
    if model is not None and meta.get("model") != model:
        raise ModelError(f"{path} was trained on features of {meta.get('model')}, not {model}")
    if layer is not None and meta.get("layer") != layer:
        raise ModelError(f"{path} was trained on layer {meta.get('layer')}, not {layer}")
    saved = meta.get("versions", {}).get("scikit-learn")
    if saved != sklearn.__version__:
        raise ModelError(
            f"{path} was saved with scikit-learn {saved}, this is {sklearn.__version__}; retrain it"
        )
    return joblib.load(path), meta
