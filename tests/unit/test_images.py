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


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize(("size", "crop_pct"), [(224, 0.875), (64, 0.875), (260, 0.89), (32, 1.0)])
def test_eval_pixels_are_timms_transform_to_the_last_bit(
    interpolation: str, size: int, crop_pct: float
) -> None:
    """The predictor prepares images without PyTorch; it must see what the network saw."""
    from transferpilot.images import eval_pixels
    from transferpilot.zoo import DataConfig

    config = {"input_size": (3, size, size), "interpolation": interpolation,
              "crop_pct": crop_pct, "crop_mode": "center"}  # fmt: skip
    timm = DataConfig(**config, mean=(0.0,) * 3, std=(1.0,) * 3).transform()
    rng = np.random.default_rng(size)
    for w, h in [(8, 8), (31, 17), (17, 31), (300, 200), (256, 256), (999, 640), (size, size)]:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        np.testing.assert_array_equal(eval_pixels(img, config), timm(img).numpy())


def test_eval_pixels_declines_what_it_does_not_reproduce() -> None:
    from transferpilot.images import eval_pixels

    img = Image.new("RGB", (40, 30))
    base = {"input_size": (3, 32, 32), "interpolation": "bicubic", "crop_pct": 0.875}
    assert eval_pixels(img, base) is not None
    for change in ({"crop_mode": "squash"}, {"input_size": (3, 32, 48)}, {"crop_pct": 1.2},
                   {"interpolation": "random"}):  # fmt: skip
        assert eval_pixels(img, base | change) is None
