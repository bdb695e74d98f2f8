"""Images in prepared data: stored as encoded bytes, decoded to H x W x C uint8 only when read.

Preparation keeps each image's bytes as the raw files ship them (a COCO JPEG stays that JPEG) when it is
RGB or grayscale, and re-encodes only the others (CMYK, palette, alpha) once, in RGB, so every image reads
back as H x W x 3 the way TFDS's Image feature gives it. Reading an example never decodes its image: a
`LazyImage` stands in until something asks for the pixels (`np.asarray`, `Example.image`), so references,
ids and prompts of a split are read without touching a pixel.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# What an image value from a plugin's generator may be, as TFDS's Image feature accepts it.
ImageValue = str | os.PathLike | bytes | io.IOBase | np.ndarray


def decode_image(data: bytes, channels: int = 3) -> np.ndarray:
    """Encoded bytes -> H x W x `channels` uint8 (grayscale expanded, as TFDS decodes an Image feature)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
        pixels = np.asarray(image if image.mode == mode else image.convert(mode))
    return pixels[..., None] if channels == 1 else pixels


def image_size(data: bytes) -> tuple[int, int]:
    """(height, width) from the image's header, without decoding its pixels."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.height, image.width


def encoded_bytes(value: ImageValue, encoding: str, where: str) -> tuple[str, bytes]:
    """(identity, bytes to store) of one image value from a plugin's generator.

    The identity is what makes "the same image" for storing it once: the resolved file for a path (the
    questions of one COCO image name the same file), the bytes' sha256 otherwise."""
    if isinstance(value, str | os.PathLike):
        path = Path(value)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise _data_error(f"{where}: cannot read image {path}: {e.strerror}") from None
        return f"file:{path.resolve()}", _rgb_or_gray(data, encoding, where)
    if isinstance(value, np.ndarray):
        data = _encode_array(value, encoding)
    elif isinstance(value, bytes):
        data = value
    elif hasattr(value, "read"):
        data = value.read()
    else:
        raise _data_error(f"{where}: an image must be a path, bytes, a file object or an array, "
                          f"got {type(value).__name__}")
    data = _rgb_or_gray(data, encoding, where)
    return f"sha256:{hashlib.sha256(data).hexdigest()}", data


def _rgb_or_gray(data: bytes, encoding: str, where: str) -> bytes:
    """The bytes as they are when the image is RGB or grayscale, else the image in RGB, re-encoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode in ("RGB", "L"):
                return data
            return _encode_array(np.asarray(image.convert("RGB")), encoding)
    except (UnidentifiedImageError, OSError) as e:
        raise _data_error(f"{where}: not a readable image ({e})") from None


def _encode_array(pixels: np.ndarray, encoding: str) -> bytes:
    from PIL import Image

    pixels = np.asarray(pixels, dtype=np.uint8)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    buf = io.BytesIO()
    fmt = "JPEG" if encoding.lower() in ("jpeg", "jpg") else "PNG"
    Image.fromarray(pixels).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _data_error(message: str) -> Exception:
    from tasks.errors import DataError

    return DataError(message)


class LazyImage:
    """An image of prepared data, decoded on first use: `np.asarray(lazy)` or `lazy.decode()`.

    `load()` returns the encoded bytes; nothing is read before the pixels or the size are asked for.
    """

    __slots__ = ("_load", "channels")

    def __init__(self, load: Callable[[], bytes], channels: int = 3):
        self._load, self.channels = load, channels

    def encoded(self) -> bytes:
        return self._load()

    def decode(self) -> np.ndarray:
        return decode_image(self._load(), self.channels)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(height, width, channels) from the header: no pixels decoded."""
        return (*image_size(self._load()), self.channels)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        pixels = self.decode()
        return pixels if dtype is None else pixels.astype(dtype)

    def __repr__(self) -> str:
        return f"LazyImage(channels={self.channels})"
