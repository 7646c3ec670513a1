"""Small file helpers: atomic writes, content digests and a standard output kept clean.

Every output file is written to a temporary sibling first and renamed into
place, so a killed run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from transferpilot.errors import DataError

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _flush_c_stdio() -> None:
    with contextlib.suppress(Exception):  # no C library to ask (not on this platform)
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def stdout_redirected(to: int | None = None) -> Iterator[None]:
    """Everything written to standard output inside the block goes to file descriptor
    ``to`` (``None``: discarded): Python's ``print`` and a C++ library writing to file
    descriptor 1 alike, such as the TorchScript exporter dumping a graph it could not
    export. ``--json`` output uses it so that stdout holds one JSON document."""
    sys.stdout.flush()
    _flush_c_stdio()
    saved = os.dup(1)
    sink = os.open(os.devnull, os.O_WRONLY) if to is None else os.dup(to)
    python_sink: IO[str] = sys.stderr if to == 2 else io.StringIO()
    try:
        os.dup2(sink, 1)
        with contextlib.redirect_stdout(python_sink):
            yield
    finally:
        sys.stdout.flush()
        _flush_c_stdio()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(sink)


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success rename it over ``path``.

    >>> with atomic_open(Path("out.txt")) as fh:  # doctest: +SKIP
    ...     fh.write("done")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON to ``path``."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def fresh_dir(path: Path) -> Iterator[Path]:
    """Build a folder under a temporary name; on success it replaces ``path`` whole.

    Files of an earlier run that this run does not write do not survive, and a
    failed run leaves the earlier folder untouched.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path: Path, *, produced_by: str) -> Any:
    """An earlier stage's JSON output, or a clear error naming the stage to run first."""

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} not found: run the {produced_by} stage first") from None


def save_npy(path: Path, array: Any) -> None:
    """Atomically write one array as ``.npy`` (no pickles)."""
    import numpy as np

    with atomic_open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def save_npz(path: Path, **arrays: Any) -> None:
    """Atomically write arrays as an ``.npz`` that ``np.load`` reads, byte-for-byte the same
    for the same arrays: :func:`numpy.savez` stamps each member with the current time."""
    import zipfile

    import numpy as np

    with atomic_open(path, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as npz:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with npz.open(member, "w") as out:
                np.lib.format.write_array(out, np.asanyarray(array), allow_pickle=False)
