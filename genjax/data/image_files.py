"""Reading one image file of an image folder with Pillow: its native format, and the
image centre-cropped and resized. A file Pillow cannot read is a ValueError naming it."""
from __future__ import annotations

import contextlib

import numpy as np


@contextlib.contextmanager
def _open_image(path: str):
    """PIL's image at `path`; ValueError naming the file if PIL cannot read it (not an
    image, truncated), which genjax.data prints as one line."""
    from PIL import Image  # only image folders need Pillow
    try:
        with Image.open(path) as im:
            yield im
    except OSError as e:  # PIL.UnidentifiedImageError, truncated or unreadable data
        raise ValueError(f"image {path} cannot be read ({e}); remove or replace it") from None


def load_image(path: str, size: int, channels: int) -> np.ndarray:
    """uint8[size, size, channels]: centre-cropped to a square, resized (bicubic) with PIL."""
    from PIL import Image
    with _open_image(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # PIL clips these to 255: rescale
            im = Image.fromarray((np.asarray(im).astype(np.int64) >> 8).clip(0, 255)
                                 .astype(np.uint8))
        elif im.mode == "F":
            raise ValueError(f"image {path} is floating point (mode F): convert it to 8 or "
                             f"16-bit integers")
        im = im.convert("L" if channels == 1 else "RGB")
        w, h = im.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        im = im.crop((left, top, left + s, top + s))
        if s != size:
            im = im.resize((size, size), Image.Resampling.BICUBIC)
        x = np.asarray(im, dtype=np.uint8)
    return x[..., None] if channels == 1 else x


def native_format(path: str) -> tuple[int, int]:
    """(shorter side, 1 for grayscale modes else 3) of one image file."""
    with _open_image(path) as im:
        return min(im.size), 1 if im.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
