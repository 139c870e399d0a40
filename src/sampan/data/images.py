"""Image datasets: ImageFolder trees and CSV manifests, and the one image decoder."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from sampan.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
# Decompression-bomb guard: larger images are refused before their pixels are decoded.
MAX_PIXELS = 64_000_000
_RESAMPLE = {"bilinear": 2, "nearest": 0, "bicubic": 3}  # PIL.Image.Resampling values


def _files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def scan_image_folder(root: Path) -> tuple[list[Path], list[str], list[str], list[bool] | None]:
    """(paths, label per path, sorted labels, validation mask or None) of an ImageFolder tree.

    root/<label>/*.png; or root/train/<label>/... with root/val/<label>/... as a fixed split.
    """
    if not root.exists():
        raise DataError(
            f"Data folder {root} does not exist; pass an ImageFolder tree "
            "(root/<label>/<image>) or a CSV with path,label columns."
        )
    if not root.is_dir():
        raise DataError(f"{root} is not a folder or a .csv file.")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = {p.name for p in subdirs}
    fixed_split = {"train", "val"} <= names
    parts = [("train", False), ("val", True)] if fixed_split else [("", False)]
    paths: list[Path] = []
    per_path: list[str] = []
    mask: list[bool] = []
    labels: set[str] = set()
    for part, is_val in parts:
        base = root / part if part else root
        class_dirs = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        for class_dir in class_dirs:
            labels.add(class_dir.name)
            files = _files(class_dir)
            paths += files
            per_path += [class_dir.name] * len(files)
            mask += [is_val] * len(files)
    if not labels:
        raise DataError(
            f"Data folder {root} has no class folders: put each class's images in root/<label>/."
        )
    counts = {label: per_path.count(label) for label in labels}
    empty = sorted(label for label, n in counts.items() if n == 0)
    if empty:
        raise DataError(
            f"Class folder(s) {', '.join(empty)} in {root} hold no images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}); add images or remove them."
        )
    return paths, per_path, sorted(labels), (mask if len(parts) == 2 else None)


def scan_csv(path: Path) -> tuple[list[Path], list[str], list[str]]:
    """(paths, label per path, sorted labels) of a CSV manifest with path,label columns."""
    if not path.is_file():
        raise DataError(f"CSV manifest {path} does not exist.")
    try:
        rows, fields = _read_csv(path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(
            f"{path} is not a readable UTF-8 CSV ({exc}); save it as UTF-8 CSV."
        ) from None
    if "path" not in fields or "label" not in fields:
        raise DataError(
            f"{path} must have a header row with 'path' and 'label' columns "
            f"(found: {', '.join(fields) or 'nothing'})."
        )
    return _csv_rows(path, rows)


def _read_csv(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    # utf-8-sig: spreadsheet programs often start the file with a byte-order mark.
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [name.strip().lower() for name in reader.fieldnames or []]
        rows = [
            {k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader
        ]
    return rows, fields


def _csv_rows(path: Path, rows: list[dict[str, str]]) -> tuple[list[Path], list[str], list[str]]:
    paths, labels = [], []
    for line, row in enumerate(rows, start=2):
        if not row["path"] or not row["label"]:
            raise DataError(f"{path} line {line}: path and label must both be set.")
        file_path = Path(row["path"])
        paths.append(file_path if file_path.is_absolute() else path.parent / file_path)
        labels.append(row["label"])
    if not paths:
        raise DataError(f"CSV manifest {path} lists no images.")
    return paths, labels, sorted(set(labels))


def open_image(raw: Any) -> Any:
    """A PIL image from a path, bytes, a PIL image or a uint8 array; DataError if unreadable."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(raw, Image.Image):
        return raw
    if isinstance(raw, np.ndarray):
        if raw.dtype != np.uint8 or raw.ndim not in (2, 3):
            raise DataError("Image arrays must be uint8 with shape (H, W) or (H, W, C).")
        if raw.ndim == 3 and raw.shape[2] == 1:
            raw = raw[:, :, 0]
        return Image.fromarray(raw)
    try:
        source = io.BytesIO(raw) if isinstance(raw, (bytes, bytearray)) else raw
        image = Image.open(source)
        if image.width * image.height > MAX_PIXELS:
            raise DataError(
                f"Image of {image.width}x{image.height} pixels is over the "
                f"{MAX_PIXELS:,}-pixel limit; downscale it first."
            )
        image.load()
        return image
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as exc:
        name = raw if isinstance(raw, (str, Path)) else "input"
        raise DataError(f"Cannot read image {name}: {exc}".replace("\n", " ")) from None


def to_8bit(image: Any) -> Any:
    """16-bit and float images scaled to 8 bits (PIL's convert would clip them to white).

    16-bit integers are taken as full-range (0-65535, divided by 257); floats as 0-1.
    """
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64) / 257.0
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64) * 255.0
    else:
        return image
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))


def decode_image(raw: Any, size: tuple[int, int], channels: int, resample: str) -> np.ndarray:
    """Decode and resize one image to uint8 (H, W, C): the one decoder every station uses."""
    image = to_8bit(open_image(raw))
    height, width = size
    # A grayscale image for a colour model is resized before its channel is copied three
    # times: a third of the resizing work, and the same pixels (PIL resizes each 8-bit
    # channel alike; tests/data/test_images.py checks it).
    if image.mode == "L" and image.size != (width, height):
        image = image.resize((width, height), resample=_RESAMPLE[resample])
    if image.mode != ("L" if channels == 1 else "RGB"):
        image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), resample=_RESAMPLE[resample])
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


# SOFn markers of JPEG (baseline, progressive, lossless, arithmetic): they carry the size.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def header_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) read from a PNG, BMP or JPEG header without decoding, or None for
    other formats (a GIF's screen size can be smaller than its first frame, which PIL then
    grows to) and truncated headers. Reading a few bytes here costs about 1 us;
    opening the image with PIL to read the same header costs about 20 us, which the server
    paid on every small upload."""
    if raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR" and len(raw) >= 24:
        return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    if raw[:2] == b"BM" and len(raw) >= 26:
        if int.from_bytes(raw[14:18], "little") == 12:  # the old OS/2 header: 16-bit sizes
            return int.from_bytes(raw[18:20], "little"), int.from_bytes(raw[20:22], "little")
        width = int.from_bytes(raw[18:22], "little", signed=True)
        return abs(width), abs(int.from_bytes(raw[22:26], "little", signed=True))
    if raw[:2] == b"\xff\xd8":
        return _jpeg_size(raw)
    return None


def _jpeg_size(raw: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 9 <= len(raw):
        if raw[at] != 0xFF:
            return None
        marker = raw[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_SOF:
            height = int.from_bytes(raw[at + 5 : at + 7], "big")
            return int.from_bytes(raw[at + 7 : at + 9], "big"), height
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            at += 2
            continue
        at += 2 + int.from_bytes(raw[at + 2 : at + 4], "big")
    return None


def is_grayscale(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.mode in ("1", "L", "I", "I;16", "F", "LA")
    except Exception:  # an unreadable file says nothing about the others
        return True
