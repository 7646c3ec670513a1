"""The feature cache, as a user checks it: forward passes counted, nothing corrupt ever read."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.images import image_folder
from transferpilot.config import ExtractParams
from transferpilot.errors import DataError
from transferpilot.features import (
    MEAN_PREFIX,
    SQ_PREFIX,
    FeatureCache,
    FeatureTable,
    extract_features,
    write_table,
)
from transferpilot.features._extract import cache_key
from transferpilot.intake import Record
from transferpilot.zoo import PRE_LOGITS, Backbone, create_backbone


def opts(cache: Path, **changes: object) -> ExtractParams:
    """Small batches and shards, decoding in-process, the cache in ``cache``; PyTorch, whose
    forward passes the tests count (ONNX Runtime has tests of its own below)."""
    settings = {
        "batch_size": 4,
        "workers": 0,
        "shard_size": 3,
        "cache_dir": cache,
        "runtime": "torch",
    }
    return ExtractParams.model_validate(settings | changes)


class Counting(nn.Module):
    """Wraps ``backbone.features``, counting images through it; can fake OOM above a size."""

    def __init__(self, inner: nn.Module, oom_above: int | None = None) -> None:
        super().__init__()
        self.inner, self.oom_above, self.images = inner, oom_above, 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.oom_above is not None and len(x) > self.oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory (injected by the test)")
        self.images += len(x)
        return self.inner(x)


@pytest.fixture(scope="module")
def tiny() -> Backbone:
    torch.manual_seed(0)
    return create_backbone("timm:test_efficientnet", pretrained=False)


def counted(backbone: Backbone, **kwargs: object) -> tuple[Backbone, Counting]:
    counter = Counting(backbone.features, **kwargs)
    return dataclasses.replace(backbone, features=counter), counter


def items_of(folder: Path) -> list[tuple[Path, str]]:
    files = sorted(folder.rglob("*.png"))
    return [(p, hashlib.sha256(p.read_bytes()).hexdigest()) for p in files]


@pytest.fixture
def data(tmp_path: Path) -> list[tuple[Path, str]]:
    return items_of(image_folder(tmp_path / "imgs", {"a": 5, "b": 5}))


def test_unchanged_rerun_does_no_forward_pass(tiny: Backbone, data, tmp_path: Path) -> None:
    backbone, counter = counted(tiny)
    first = extract_features(backbone, data, opts(tmp_path / "c"))
    assert counter.images == 10 and first.stats.computed == 10
    again = extract_features(backbone, data, opts(tmp_path / "c"))
    assert counter.images == 10 and again.stats.computed == 0
    for name, array in first.arrays.items():
        np.testing.assert_array_equal(array, again.arrays[name])


def test_adding_n_images_costs_n_passes_removing_costs_nothing(
    tiny: Backbone, data, tmp_path: Path
) -> None:
    backbone, counter = counted(tiny)
    extract_features(backbone, data[:7], opts(tmp_path / "c"))
    assert counter.images == 7
    grown = extract_features(backbone, data, opts(tmp_path / "c"))
    assert counter.images == 10 and grown.stats.computed == 3
    shrunk = extract_features(backbone, data[2:5], opts(tmp_path / "c"))
    assert counter.images == 10
    np.testing.assert_array_equal(shrunk.arrays[PRE_LOGITS], grown.arrays[PRE_LOGITS][2:5])


def test_duplicate_images_are_computed_once(tiny: Backbone, data, tmp_path: Path) -> None:
    backbone, counter = counted(tiny)
    feats = extract_features(backbone, data + data[:4], opts(tmp_path / "c"))
    assert counter.images == 10
    np.testing.assert_array_equal(feats.arrays[PRE_LOGITS][10:], feats.arrays[PRE_LOGITS][:4])


def test_another_model_or_preprocessing_has_its_own_entries(
    tiny: Backbone, data, tmp_path: Path
) -> None:
    backbone, counter = counted(tiny)
    extract_features(backbone, data, opts(tmp_path / "c"))
    other_weights = dataclasses.replace(backbone, weights_digest="0" * 64)
    extract_features(other_weights, data, opts(tmp_path / "c"))
    assert counter.images == 20
    resized = dataclasses.replace(
        backbone, data_config=dataclasses.replace(backbone.data_config, input_size=(3, 96, 96))
    )
    extract_features(resized, data, opts(tmp_path / "c"))
    assert counter.images == 30
    extract_features(backbone, data, opts(tmp_path / "c"))  # still cached
    assert counter.images == 30
    assert len(list((tmp_path / "c").iterdir())) == 3


def test_features_are_the_models_own_outputs(tiny: Backbone, data, tmp_path: Path) -> None:
    from transferpilot.images import open_rgb

    feats = extract_features(tiny, data[:2], opts(tmp_path / "c"))
    x = torch.stack([tiny.data_config.transform()(open_rgb(p)) for p, _ in data[:2]])
    with torch.no_grad():
        direct = tiny.features(x)
    np.testing.assert_allclose(feats.arrays[PRE_LOGITS], direct[PRE_LOGITS].numpy(), atol=1e-4)
    layer = tiny.layers[0].name
    pooled = direct[layer].mean((2, 3)).numpy()
    np.testing.assert_allclose(feats.arrays[layer], pooled, atol=1e-4)


def test_a_2x2_grid_keeps_four_cells_per_channel(tiny: Backbone, data, tmp_path: Path) -> None:
    feats = extract_features(tiny, data[:3], opts(tmp_path / "c", pool_grid=2))
    for layer in tiny.layers:
        assert feats.arrays[layer.name].shape == (3, layer.channels * 4)
    assert feats.arrays[PRE_LOGITS].shape == (3, tiny.num_features)


def records_of(data: list[tuple[Path, str]], splits: list[str]) -> list[Record]:
    return [
        Record(path, path.parent.name, split, sha, 32, 32, "RGB", str(path))
        for (path, sha), split in zip(data, splits, strict=True)
    ]


def test_moments_are_recorded_at_batchnorm_inputs(tiny: Backbone, data, tmp_path: Path) -> None:
    out = tmp_path / "table"
    out.mkdir()
    meta, _ = write_table(tiny, records_of(data, ["train"] * 10), out, opts(tmp_path / "c"))
    moments = FeatureTable([], meta, out).moments()
    assert len(moments) >= len(tiny.layers)
    for bn, m in moments.items():
        channels = tiny.model.get_submodule(bn).num_features
        assert m.mean.shape == m.var.shape == (channels,) and m.count == 10
        assert (m.var >= 0).all()


def test_a_shard_killed_mid_write_is_never_read(
    tiny: Backbone, data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backbone, counter = counted(tiny)
    real_replace = os.replace
    calls = {"n": 0}

    def dies_on_second_shard(src: str, dst: str) -> None:
        if str(dst).endswith(".npz"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt("killed")  # the temp file is written, never renamed
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dies_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        extract_features(backbone, data, opts(tmp_path / "c"))
    monkeypatch.setattr(os, "replace", real_replace)
    assert counter.images == 8  # two batches of 4: one shard completed, one killed
    assert not list((tmp_path / "c").rglob(".*.tmp"))  # an interrupted write cleans up;
    shards = next((tmp_path / "c").rglob("shards"))  # what a SIGKILL would leave behind:
    (shards / ".0123abcd.npz.tmp").write_bytes(b"torn")

    feats = extract_features(backbone, data, opts(tmp_path / "c"))
    assert counter.images == 8 + 6  # never read: the first shard (4) is reused, 6 recomputed
    assert feats.arrays[PRE_LOGITS].shape == (10, tiny.num_features)


def test_corrupt_shards_and_torn_index_lines_are_skipped(
    tiny: Backbone, data, tmp_path: Path
) -> None:
    backbone, _ = counted(tiny)
    first = extract_features(backbone, data, opts(tmp_path / "c"))
    cache = FeatureCache(tmp_path / "c", cache_key(tiny, 1))
    shard = sorted(cache.shards.glob("*.npz"))[0]
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with open(cache.dir / "index.jsonl", "a") as fh:
        fh.write('{"shard": "half-writ')
    again = extract_features(backbone, data, opts(tmp_path / "c"))
    assert 0 < again.stats.computed < 10
    np.testing.assert_allclose(again.arrays[PRE_LOGITS], first.arrays[PRE_LOGITS], atol=1e-5)


def test_out_of_memory_halves_the_batch_and_continues(
    tiny: Backbone, data, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reference = extract_features(tiny, data, opts(tmp_path / "ref"))
    backbone, counter = counted(tiny, oom_above=1)
    feats = extract_features(backbone, data, opts(tmp_path / "c"))
    assert feats.stats.batch_size == 1 and counter.images == 10
    assert "batch size halved to 2" in caplog.text and "batch size halved to 1" in caplog.text
    np.testing.assert_allclose(feats.arrays[PRE_LOGITS], reference.arrays[PRE_LOGITS], atol=1e-4)


def test_a_file_changed_since_prepare_is_a_clear_error(
    tiny: Backbone, data, tmp_path: Path
) -> None:
    path, _ = data[0]
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(DataError, match="changed since the prepare stage"):
        extract_features(tiny, data, opts(tmp_path / "c"))


def test_decoding_in_worker_processes_gives_the_same_features(
    tiny: Backbone, data, tmp_path: Path
) -> None:
    inline = extract_features(tiny, data, opts(tmp_path / "a"))
    workers = extract_features(tiny, data, opts(tmp_path / "b", workers=2))
    np.testing.assert_allclose(workers.arrays[PRE_LOGITS], inline.arrays[PRE_LOGITS], atol=1e-5)


def test_the_written_table_equals_the_cache_rows(tiny: Backbone, data, tmp_path: Path) -> None:
    splits = ["train"] * 6 + ["val"] * 4
    feats = extract_features(tiny, data, opts(tmp_path / "c"))
    out = tmp_path / "out"
    out.mkdir()
    meta, stats = write_table(
        tiny, records_of(data, splits), out, opts(tmp_path / "c"), chunk_rows=3
    )
    assert stats.computed == 0  # the cache served every row
    table = FeatureTable(records_of(data, splits), meta, out)
    for name, array in feats.arrays.items():
        on_disk = table.array(name)
        assert on_disk.dtype == np.float32 and meta.outputs[name] == array.shape[1]
        np.testing.assert_array_equal(on_disk, array)
    first, last = meta.layer_names[0], meta.layer_names[-1]  # a joined input: side by side
    np.testing.assert_array_equal(
        table.array(f"{first}+{last}"), np.hstack([feats.arrays[first], feats.arrays[last]])
    )
    # per split: the mean of the per-image moments the cache holds
    cache = FeatureCache(tmp_path / "c", cache_key(tiny, 1))
    points = list(table.moments("all"))
    rows = cache.read(
        [sha for _, sha in data], [p + b for b in points for p in (MEAN_PREFIX, SQ_PREFIX)]
    )
    for split, picked in (("val", slice(6, 10)), ("all", slice(None))):
        moments = table.moments(split)
        for bn in points:
            mean = rows[MEAN_PREFIX + bn][picked].astype(np.float64).mean(0)
            sq = rows[SQ_PREFIX + bn][picked].astype(np.float64).mean(0)
            np.testing.assert_allclose(moments[bn].mean, mean, rtol=1e-6)
            np.testing.assert_allclose(
                moments[bn].var, np.maximum(sq - mean**2, 0), rtol=1e-5, atol=1e-9
            )
            assert moments[bn].count == (4 if split == "val" else 10)
    imagenet = table.moments("imagenet")
    for bn in points:
        np.testing.assert_allclose(imagenet[bn].mean, tiny.model.get_submodule(bn).running_mean)


@pytest.mark.parametrize("grid", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_onnx_runtime_features_equal_pytorch_and_the_graph_is_exported_once(
    tiny: Backbone, data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grid: int
) -> None:
    from transferpilot.features import _extract

    eager = extract_features(tiny, data, opts(tmp_path / "c", pool_grid=grid))
    exports = []
    real_export = _extract.export_forward
    monkeypatch.setattr(_extract, "export_forward", lambda *a: exports.append(a) or real_export(*a))
    ort_opts = opts(tmp_path / "c", runtime="onnxruntime", pool_grid=grid)
    ort = extract_features(tiny, data, ort_opts)
    assert ort.stats.computed == len(data)  # its own cache entries: not PyTorch's rows
    for name, array in eager.arrays.items():
        scale = np.abs(array).max()
        np.testing.assert_allclose(ort.arrays[name], array, rtol=1e-4, atol=1e-4 * scale)
    # the BatchNorm moments too: every key the forward pass records
    from transferpilot.features._extract import ForwardOutputs

    keys = ForwardOutputs(tiny, grid).keys
    shas = [sha for _, sha in data]
    torch_rows = FeatureCache(tmp_path / "c", cache_key(tiny, grid, "torch")).read(shas, keys)
    ort_cache = FeatureCache(tmp_path / "c", cache_key(tiny, grid, "onnxruntime"))
    ort_rows = ort_cache.read(shas, keys)
    for key in keys:
        scale = np.abs(torch_rows[key]).max()
        np.testing.assert_allclose(ort_rows[key], torch_rows[key], rtol=1e-4, atol=1e-4 * scale)
    graph = ort_cache.dir / "forward.onnx"
    assert graph.is_file() and len(exports) == 1
    new = items_of(image_folder(tmp_path / "more", {"c": 3}))
    extract_features(tiny, data + new, ort_opts)
    assert len(exports) == 1  # new images reuse the exported graph


def test_a_damaged_graph_is_exported_again(tiny: Backbone, data, tmp_path: Path) -> None:
    extract_features(tiny, data[:2], opts(tmp_path / "c", runtime="onnxruntime"))
    graph = FeatureCache(tmp_path / "c", cache_key(tiny, 1, "onnxruntime")).dir / "forward.onnx"
    graph.write_bytes(b"not a graph")
    feats = extract_features(tiny, data, opts(tmp_path / "c", runtime="onnxruntime"))
    assert feats.stats.computed == len(data) - 2 and graph.stat().st_size > 1000


def test_prefetched_batches_keep_their_order_errors_and_stop_early() -> None:
    import time

    from transferpilot.features._extract import _prefetched

    assert list(_prefetched(iter(range(50)))) == list(range(50))

    def failing():
        yield 1
        raise ValueError("cannot decode")

    got = _prefetched(failing())
    assert next(got) == 1
    with pytest.raises(ValueError, match="cannot decode"):
        next(got)

    start = time.monotonic()
    early = _prefetched(iter(range(10_000)))
    assert next(early) == 0
    early.close()  # the consumer stops (a bad image): the producer must not hang
    assert time.monotonic() - start < 2
