"""Matplotlib without a display, and figures saved atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from transferpilot.io import atomic_open


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (complete or not at all) and close it."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    pyplot().close(fig)
    with atomic_open(Path(path), "wb") as fh:
        fh.write(buffer.getvalue())
    return Path(path)
