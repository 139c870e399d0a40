"""The image decoder's fast paths give what the plain path gives."""

import io

import numpy as np
import pytest
from PIL import Image

from sampan.data.images import decode_image, header_size


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mode", "options"),
    [
        ("PNG", "L", {}),
        ("PNG", "RGBA", {}),
        ("BMP", "RGB", {}),
        ("JPEG", "RGB", {}),
        ("JPEG", "L", {"progressive": True}),
        ("JPEG", "RGB", {"exif": Image.Exif()}),
    ],
)
def test_header_size_reads_what_pil_reads(fmt, mode, options):
    rng = np.random.default_rng(0)
    for width, height in ((1, 1), (37, 5), (640, 480), (300, 1201)):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels, "RGB").convert(mode)
        raw = _encoded(image, fmt, **options)
        assert header_size(raw) == Image.open(io.BytesIO(raw)).size == (width, height)


def test_header_size_gives_up_on_other_or_broken_headers():
    gif = _encoded(Image.new("P", (9, 4)), "GIF")  # its frames may outgrow its screen size
    assert header_size(gif) is None
    tiff = _encoded(Image.new("RGB", (9, 4)), "TIFF")
    png = _encoded(Image.new("L", (9, 4)), "PNG")
    assert header_size(tiff) is None
    assert header_size(png[:20]) is None  # cut inside IHDR
    assert header_size(b"\xff\xd8\xff\xe0\x00\x10JFIF") is None  # no frame header yet
    assert header_size(b"") is None


@pytest.mark.parametrize("resample", ["nearest", "bilinear", "bicubic"])
def test_grayscale_for_a_colour_model_decodes_as_converting_first_would(resample):
    """decode_image resizes a grayscale image before copying its channel: same pixels."""
    rng = np.random.default_rng(1)
    modes = {"nearest": 0, "bilinear": 2, "bicubic": 3}
    for _ in range(20):
        height, width, out_h, out_w = (int(v) for v in rng.integers(1, 200, 4))
        gray = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), "L")
        expected = np.asarray(gray.convert("RGB").resize((out_w, out_h), modes[resample]))
        got = decode_image(_encoded(gray, "PNG"), (out_h, out_w), 3, resample)
        assert got.shape == (out_h, out_w, 3) and np.array_equal(got, expected)
