"""Labelled uint8 images in one .npz: what genjax.data.sample_image_preferences writes, the
image data path reads (config.data.train_images, config.data.pairs) and
`genjax.evaluate --samples` reads (the same `images` / `labels` keys).

  images       uint8[N, H, W, C] (one image per example) or uint8[N, 2, H, W, C] (a
               preference pair: 0 winner, 1 loser), 0..255 (model images: (x + 1) * 127.5)
  labels       int32[N]            the class (the prompt) of each example
  class_names  str[K]              label names, in label order
  rewards      float32[N] | [N, 2] optional: the reward of each image
A file that cannot be read or has the wrong arrays is a UserError naming it (one line).
"""
from __future__ import annotations

import os
import zipfile
from typing import Sequence

import numpy as np

from genjax.errors import UserError


def write(path: str, images_u8: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
          **extra: np.ndarray) -> None:
    """Writes the arrays (module docstring) to `path` (atomic: temporary name, then rename)."""
    arrays = {"images": np.asarray(images_u8, np.uint8),
              "labels": np.asarray(labels, np.int32),
              "class_names": np.asarray(list(class_names), dtype=str), **extra}
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def read(path: str, *, per_example: int) -> dict[str, np.ndarray]:
    """{"images", "labels", "class_names", ["rewards"]} of `path`, checked: `per_example`
    images per example (1: [N, H, W, C]; 2: pairs [N, 2, H, W, C]), labels inside
    class_names. UserError (one line naming the file) otherwise."""
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist")
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: not a readable .npz file ({type(e).__name__})") from None
    missing = [k for k in ("images", "labels", "class_names") if k not in arrays]
    if missing:
        raise UserError(f"{path}: no {missing} array(s) (the file has {sorted(arrays)})")
    x, y, names = arrays["images"], arrays["labels"], arrays["class_names"]
    want = 4 if per_example == 1 else 5
    if (x.dtype != np.uint8 or x.ndim != want or (per_example == 2 and x.shape[1] != 2)
            or not len(x)):
        shape = "[N, H, W, C]" if per_example == 1 else "[N, 2, H, W, C]"
        raise UserError(f"{path}: images are {x.dtype} {list(x.shape)}; expected uint8 "
                        f"{shape} with N >= 1")
    if y.dtype.kind not in "iu" or y.shape != (len(x),):
        raise UserError(f"{path}: labels are {y.dtype} {list(y.shape)}; expected integers "
                        f"[{len(x)}]")
    if names.ndim != 1 or y.min() < 0 or y.max() >= len(names):
        raise UserError(f"{path}: labels span {int(y.min())}..{int(y.max())}, outside the "
                        f"file's {len(names)} class_names")
    out = {"images": x, "labels": y.astype(np.int32), "class_names": [str(n) for n in names]}
    if "rewards" in arrays:
        out["rewards"] = arrays["rewards"].astype(np.float32)
    return out


class Records:
    """uint8 images + labels as a random-access record source for ImageData:
    records {"image": uint8[H, W, C], "label": int, "index": row}."""

    def __init__(self, images_u8: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images_u8, np.asarray(labels, np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        return {"image": self.images[i], "label": int(self.labels[i]), "index": i}

    def __getitems__(self, idx: Sequence[int]) -> list[dict]:
        return [self[i] for i in idx]
