"""Sample grids: images in [-1, 1] -> one PNG."""
from __future__ import annotations

import math
import os

import numpy as np


def to_uint8(images_NxHxWxC) -> np.ndarray:
    x = (np.asarray(images_NxHxWxC, np.float32) + 1.0) * 127.5
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def grid(images_NxHxWxC, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """Tiles N images into one uint8 [rows*(H+pad)+pad, cols*(W+pad)+pad, C] array."""
    imgs = to_uint8(images_NxHxWxC)
    n, h, w, c = imgs.shape
    ncol = ncol or int(math.ceil(math.sqrt(n)))
    nrow = int(math.ceil(n / ncol))
    out = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, np.uint8)
    for i, img in enumerate(imgs):
        r, q = divmod(i, ncol)
        out[pad + r * (h + pad):pad + r * (h + pad) + h,
            pad + q * (w + pad):pad + q * (w + pad) + w] = img
    return out


def save_grid(images_NxHxWxC, path: str, ncol: int | None = None, scale: int = 2) -> str:
    from PIL import Image
    g = grid(images_NxHxWxC, ncol)
    if g.shape[-1] == 1:
        g = g[..., 0]
    img = Image.fromarray(g)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img.save(path)
    return path
