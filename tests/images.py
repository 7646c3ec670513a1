"""Generated images for tests: good ones per class, and a corpus of bad inputs."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def solid(path: Path, color: tuple[int, int, int], size: int = 16, mode: str = "RGB") -> Path:
    """A small image of one colour with a little noise (so files differ), saved by extension.
    The noise is seeded by the last three parts of its path (split or dataset folder,
    class, name), not where the test's temporary folder happens to be: the same image in
    every run, and different images in train/ and val/."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32("/".join(Path(path).parts[-3:]).encode()))
    base = np.array(color, dtype=np.int16)[None, None, :]
    arr = np.clip(base + rng.integers(-20, 21, size=(size, size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr, "RGB").convert(mode).save(path)
    return path


def image_folder(root: Path, classes: dict[str, int], *, size: int = 16) -> Path:
    """``root/<class>/<i>.png`` with distinct images, ``classes[name]`` per class."""
    colors = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 220, 40), (200, 40, 200)]
    for c, (name, n) in enumerate(classes.items()):
        for i in range(n):
            solid(root / name / f"{i:03d}.png", colors[c % len(colors)], size=size)
    return root


def png16(path: Path, size: int = 8) -> Path:
    """A 16-bit grayscale PNG whose values span 0..65535 (so naive clipping would saturate)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    values = np.linspace(0, 65535, size * size).reshape(size, size).astype(">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in values)
    ihdr = struct.pack(">IIBBBBB", size, size, 16, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data + chunk(b"IEND", b""))
    return path


def exif_rotated(path: Path) -> Path:
    """A 40x20 JPEG tagged Orientation=6 (rotate 90°): upright it is 20x40."""
    img = Image.new("RGB", (40, 20), (10, 120, 200))
    exif = Image.Exif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, exif=exif.tobytes())
    return path


def bad_corpus(cls_dir: Path) -> dict[str, str]:
    """Write bad or unusual files into one class folder; returns ``{file name: kind}``.

    Kinds are those of the validation report: files that must be skipped map to
    their reason kind, files that are kept with a note map to that note's kind.
    """
    cls_dir.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}

    (cls_dir / "empty.jpg").write_bytes(b"")
    expected["empty.jpg"] = "empty"

    good = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(good, "JPEG")
    (cls_dir / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    expected["truncated.jpg"] = "corrupt"

    (cls_dir / "random.jpg").write_bytes(os.urandom(2048))
    expected["random.jpg"] = "not_image"
    (cls_dir / "notes.txt").write_text("not an image\n")
    expected["notes.txt"] = "not_image"

    frames = [Image.new("RGB", (10, 10), (80 * i, 40, 200 - 60 * i)) for i in range(3)]
    frames[0].save(cls_dir / "animated.gif", save_all=True, append_images=frames[1:])
    expected["animated.gif"] = "animated"

    Image.new("CMYK", (12, 12), (0, 128, 128, 0)).save(cls_dir / "cmyk.jpg")
    expected["cmyk.jpg"] = "converted"
    png16(cls_dir / "sixteen.png")
    expected["sixteen.png"] = "converted"
    Image.new("RGBA", (12, 12), (0, 0, 255, 100)).save(cls_dir / "rgba.png")
    expected["rgba.png"] = "converted"
    Image.new("P", (12, 12), 3).save(cls_dir / "palette.png")
    expected["palette.png"] = "converted"
    solid(cls_dir / "one pixel é.png", (1, 2, 3), size=1)
    expected["one pixel é.png"] = "ok"
    solid(cls_dir / "big.png", (9, 9, 9), size=300)  # over a test's max_pixels of 250x250
    expected["big.png"] = "too_large"
    exif_rotated(cls_dir / "rotated.jpg")
    expected["rotated.jpg"] = "ok"
    solid(cls_dir / "new\nline.png", (5, 80, 5))
    expected["new\nline.png"] = "ok"
    solid(cls_dir / "nested" / "deeper.png", (90, 80, 5))
    expected["nested/deeper.png"] = "ok"
    (cls_dir / ".DS_Store").write_bytes(b"\x00\x01")
    expected[".DS_Store"] = "hidden"
    os.symlink(cls_dir / "loop.png", cls_dir / "loop.png")
    expected["loop.png"] = "symlink_loop"
    os.symlink(cls_dir, cls_dir / "nested" / "back")
    expected["nested/back"] = "symlink_loop"
    return expected
