"""Many small images through prepare and extract: memory stays flat as the data grows,
because features go to shards as computed and are written out in chunks."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path: Path) -> None:
    from benchmarks.scale import measure

    small, large = measure(1000, tmp_path), measure(8000, tmp_path)
    assert large["images"] == 8000 and large["computed"] == 8000
    growth = large["peak_rss_mb"] - small["peak_rss_mb"]
    added = large["features_mb"] - small["features_mb"]
    assert added > 30  # holding every feature in memory would show up
    assert growth < added / 2, f"peak RSS grew {growth:.0f} MB for {added:.0f} MB more features"
