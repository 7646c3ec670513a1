"""A content-addressed, sharded, crash-safe cache of per-image features.

Layout under the cache root (``extract.cache_dir``)::

    <key>/meta.json         what the key stands for (model, weights, preprocessing, pooling)
    <key>/shards/<id>.npz   arrays (N, D) per output name, plus the N image sha256s
    <key>/index.jsonl       one line per completed shard: its name, file digest and rows

``<key>`` digests the model id, its weights digest, the preprocessing and the
pooling; inside it an entry is addressed by (output name, image sha256). A
shard is written to a temporary file and renamed, then its index line is
appended under a lock, so a killed run leaves either a complete, indexed shard
or nothing that is ever read. Every shard's digest is checked before use.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from transferpilot.io import atomic_open, write_json

log = logging.getLogger(__name__)

SHA_KEY = "__sha256__"
FORMAT_VERSION = 2  # 2: every entry also holds the baseline's pixels


@dataclass(frozen=True)
class CacheKey:
    """What makes two feature vectors of the same image interchangeable."""

    model: str
    weights_digest: str
    preprocessing: Mapping[str, Any]
    pool_grid: int
    runtime: str = "torch"  # features of another runtime differ in the last bits: kept apart

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "model": self.model,
            "weights_digest": self.weights_digest,
            "preprocessing": dict(self.preprocessing),
            "pool_grid": self.pool_grid,
            "runtime": self.runtime,
        }

    @property
    def digest(self) -> str:
        text = json.dumps(self.as_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class _Entry:
    shard: str
    row: int


class FeatureCache:
    """Per-image feature rows for one :class:`CacheKey`.

    >>> cache = FeatureCache(Path("data/cache/features"), key)  # doctest: +SKIP
    >>> missing = cache.missing(shas)  # doctest: +SKIP
    >>> cache.write_shard(new_shas, {"pre_logits": array})  # doctest: +SKIP
    >>> cache.read(shas, ["pre_logits"])["pre_logits"].shape  # doctest: +SKIP
    """

    def __init__(self, root: Path, key: CacheKey) -> None:
        self.key = key
        self.dir = Path(root) / key.digest
        self.shards = self.dir / "shards"
        self.shards.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.exists():
            write_json(meta, key.as_dict())
        self._verified: dict[str, bool] = {}

    # -- index -------------------------------------------------------------
    def _index_lines(self) -> list[dict[str, Any]]:
        path = self.dir / "index.jsonl"
        if not path.exists():
            return []
        lines = []
        for raw in path.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(raw)
                if {"shard", "digest", "rows"} <= item.keys():
                    lines.append(item)
            except json.JSONDecodeError:
                log.warning("feature cache: ignoring a torn index line in %s", path)
        return lines

    def _shard_ok(self, name: str, digest: str) -> bool:
        if name not in self._verified:
            path = self.shards / name
            try:
                ok = hashlib.sha256(path.read_bytes()).hexdigest() == digest
            except OSError:
                ok = False
            if not ok:
                log.warning("feature cache: shard %s is missing or corrupt; recomputing it", name)
            self._verified[name] = ok
        return self._verified[name]

    def entries(self) -> dict[str, _Entry]:
        """sha256 -> where its row lives, over verified shards only (first copy wins)."""
        found: dict[str, _Entry] = {}
        for item in self._index_lines():
            if not self._shard_ok(item["shard"], item["digest"]):
                continue
            for row, sha in enumerate(item["rows"]):
                found.setdefault(sha, _Entry(item["shard"], row))
        return found

    def missing(self, shas: Iterable[str]) -> list[str]:
        """The distinct shas without a cached row, in first-seen order."""
        have = self.entries()
        return list(dict.fromkeys(s for s in shas if s not in have))

    # -- writing -----------------------------------------------------------
    def write_shard(self, shas: Sequence[str], arrays: Mapping[str, np.ndarray]) -> str:
        """Store rows for ``shas`` (one per row of every array); returns the shard name."""
        if any(len(a) != len(shas) for a in arrays.values()):
            raise ValueError("every array needs one row per sha")
        buffer = io.BytesIO()
        np.savez(buffer, **{SHA_KEY: np.asarray(shas, dtype="U64")}, **arrays)
        data = buffer.getvalue()
        name = f"{uuid.uuid4().hex}.npz"
        with atomic_open(self.shards / name, "wb") as fh:  # a failed write leaves nothing
            fh.write(data)
        line = json.dumps(
            {"shard": name, "digest": hashlib.sha256(data).hexdigest(), "rows": list(shas)}
        )
        with FileLock(self.dir / "index.lock"):
            index = self.dir / "index.jsonl"
            fd = os.open(index, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"  # a killed append
                os.write(fd, (("\n" if torn else "") + line + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        self._verified[name] = True
        return name

    def extraction_lock(self, name: str = "extract", wait_log_s: float = 10.0) -> _PatientLock:
        """Held while computing missing rows, so two runs never compute the same images.
        Shards of one run computed side by side (disjoint images) each take their own
        ``name``; a shard's retry waits for its first try."""
        return _PatientLock(FileLock(self.dir / f"{name}.lock"), wait_log_s)

    # -- reading -----------------------------------------------------------
    def read(self, shas: Sequence[str], names: Sequence[str]) -> dict[str, np.ndarray]:
        """Rows for ``shas`` (in that order, repeats allowed) of each output in ``names``."""
        have = self.entries()
        absent = [s for s in shas if s not in have]
        if absent:
            raise KeyError(f"{len(absent)} image(s) not in the feature cache, e.g. {absent[0]}")
        by_shard: dict[str, list[tuple[int, int]]] = {}
        for i, sha in enumerate(shas):
            entry = have[sha]
            by_shard.setdefault(entry.shard, []).append((i, entry.row))
        out: dict[str, np.ndarray] = {}
        for shard, pairs in by_shard.items():
            dest = np.fromiter((i for i, _ in pairs), dtype=np.int64, count=len(pairs))
            rows = np.fromiter((r for _, r in pairs), dtype=np.int64, count=len(pairs))
            with np.load(self.shards / shard, allow_pickle=False) as npz:
                for name in names:
                    block = npz[name]
                    if name not in out:
                        out[name] = np.empty((len(shas), *block.shape[1:]), dtype=block.dtype)
                    out[name][dest] = block[rows]
        return out


class _PatientLock:
    """A file lock that says, every so often, that it is waiting for another run."""

    def __init__(self, lock: FileLock, every_s: float) -> None:
        self.lock, self.every_s = lock, every_s

    def __enter__(self) -> _PatientLock:
        start = time.monotonic()
        while True:
            try:
                self.lock.acquire(timeout=self.every_s)
                return self
            except Timeout:
                log.info(
                    "waiting for another run that is extracting with the same model (%.0f s)",
                    time.monotonic() - start,
                )

    def __exit__(self, *exc: object) -> None:
        self.lock.release()
