"""The one image loader: every mode becomes sensible 8-bit RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.images import exif_rotated, png16
from transferpilot.images import ImageTooLarge, open_rgb, to_rgb


def test_sixteen_bit_is_rescaled_not_clipped(tmp_path: Path) -> None:
    img = open_rgb(png16(tmp_path / "x.png"))
    arr = np.asarray(img)
    assert img.mode == "RGB"
    assert arr.min() == 0 and arr.max() == 255
    assert len(np.unique(arr[..., 0])) > 32  # a ramp, not saturated white


def test_transparency_is_composited_on_white() -> None:
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(to_rgb(clear)).min() == 255
    half = Image.new("LA", (2, 2), (0, 128))
    assert 120 < np.asarray(to_rgb(half)).mean() < 135


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1", "I", "F"])
def test_other_modes_convert(mode: str) -> None:
    assert to_rgb(Image.new(mode, (3, 3))).mode == "RGB"


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    assert open_rgb(exif_rotated(tmp_path / "r.jpg")).size == (20, 40)


def test_pixel_limit(tmp_path: Path) -> None:
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    with pytest.raises(ImageTooLarge, match="10,000 pixels"):
        open_rgb(tmp_path / "big.png", max_pixels=9_999)
