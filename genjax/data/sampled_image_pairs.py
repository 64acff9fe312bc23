"""Preference pairs sampled from a diffusion run and ranked by a reward classifier
(`python -m genjax.data.sample_image_preferences`), read as Diffusion-DPO batches.

  data = SampledImagePairs(DIR, global_batch_size=32, seed=0)
  batch = next(data.train_iterator())  # {"image": float32[b, 2, H, W, C] in [-1, 1]
                                       #  (0 winner, 1 loser), "label": int32[b] (prompt)}
  data.eval_batches("test", 64)        # the held-out prompts' pairs (+ "mask")

Files (genjax/data/image_npz.py): DIR/pairs_train.npz, DIR/pairs_test.npz (held-out prompts,
another seed). Order, resumable state and eval padding: genjax/data/array_data.py; the
state also holds the train file's sha256, so resuming on other pairs fails.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from genjax.data import data_card, image_npz
from genjax.data.array_data import ArrayData
from genjax.errors import UserError

SPLITS = ("train", "test")  # test: held-out prompts (the image configs' eval_split)


def pairs_path(directory: str, split: str) -> str:
    return os.path.join(directory, f"pairs_{split}.npz")


def to_float(images_u8: np.ndarray) -> np.ndarray:
    """uint8[...] -> float32[...] in [-1, 1], as the image loader converts (no padding)."""
    return images_u8.astype(np.float32) * (2.0 / 255.0) - 1.0


class SampledImagePairs(ArrayData):
    """The pairs of a sample_image_preferences folder (module docstring)."""

    def __init__(self, directory: str, *, global_batch_size: int, seed: int,
                 process_index: int = 0, process_count: int = 1):
        directory = os.path.expanduser(str(directory))
        if not os.path.isdir(directory):
            raise UserError(f"config.data.pairs={directory!r} is not a folder (make one with "
                            f"python -m genjax.data.sample_image_preferences)")
        arrays = {s: image_npz.read(pairs_path(directory, s), per_example=2) for s in SPLITS}
        names = arrays["train"]["class_names"]
        if arrays["test"]["class_names"] != names:
            raise UserError(f"{directory}: pairs_train.npz and pairs_test.npz name different "
                            f"classes")
        self.directory = os.path.abspath(directory)
        self.sha256 = data_card.sha256_file(pairs_path(directory, "train"))
        self._card = data_card.read_card(directory) if data_card.has_card(directory) else {}
        super().__init__({s: (to_float(a["images"]), a["labels"]) for s, a in arrays.items()},
                         names, global_batch_size=global_batch_size, seed=seed,
                         process_index=process_index, process_count=process_count,
                         identity={"pairs_sha256": self.sha256})

    def meta(self) -> dict[str, Any]:
        pairs = {"directory": self.directory, "train_sha256": self.sha256,
                 "source": self._card.get("source"), "reward": self._card.get("reward")}
        return {"dataset": "sampled image pairs", "class_names": self.class_names,
                "image_shape": list(self.image_shape), "pairs": pairs,
                "splits": {s: self.num_examples(s) for s in self.splits}}

    @property
    def card(self) -> dict[str, Any]:
        return self.meta()
