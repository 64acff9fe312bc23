"""Synthetic image preference pairs, offline: winner = a real image, loser = the same image
with its p x p patches permuted (one fixed permutation from `seed`): the garment's parts
are all there, in the wrong places. Both keep the image's label (the prompt).

Batches: {"image": float32[b, 2, H, W, C] (0 winner, 1 loser), "label": int32[b]} (+ "mask"
float32[b] in eval batches). Wraps an ImageData (genjax/data/image_loader.py): same order,
same resumable iterator state.
"""
from __future__ import annotations

import numpy as np

from genjax.errors import ConfigError


def patch_permutation(image_size: int, patch: int, seed: int) -> np.ndarray:
    """A permutation of the (image_size // patch)^2 patches that moves every patch."""
    n = (image_size // patch) ** 2
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        if np.all(perm != np.arange(n)):
            return perm


def scramble(images_BxHxWxC: np.ndarray, perm: np.ndarray, patch: int) -> np.ndarray:
    """Images with their patches moved by `perm` (H, W divisible by patch)."""
    b, h, w, c = images_BxHxWxC.shape
    g = h // patch
    x = images_BxHxWxC.reshape(b, g, patch, g, patch, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, g * g, patch, patch, c)[:, perm]
    return x.reshape(b, g, g, patch, patch, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def to_pairs(batch: dict, perm: np.ndarray, patch: int) -> dict:
    image = np.asarray(batch["image"], np.float32)
    out = {**batch, "image": np.stack([image, scramble(image, perm, patch)], axis=1)}
    return out


class _PairIterator:
    def __init__(self, inner, perm, patch):
        self._inner, self._perm, self._patch = inner, perm, patch

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return to_pairs(next(self._inner), self._perm, self._patch)

    def get_state(self):
        return self._inner.get_state()

    def set_state(self, state) -> None:
        self._inner.set_state(state)


class ImagePairs:
    """The preference view of `images` (an ImageData)."""

    def __init__(self, images, *, patch: int, seed: int):
        h = images.image_shape[0]
        if not 0 < int(patch) < h or h % int(patch):
            raise ConfigError(f"data.pair_patch={patch}: must divide the image size {h} into "
                              f"at least 2 x 2 patches (e.g. {h // 4})")
        self.images, self.patch = images, int(patch)
        self.perm = patch_permutation(h, self.patch, seed)
        self.image_shape, self.class_names = images.image_shape, images.class_names
        self.splits = images.splits

    def train_iterator(self):
        return _PairIterator(self.images.train_iterator(), self.perm, self.patch)

    def eval_batches(self, split: str = "test", batch_size: int = 256, max_batches=None):
        for batch in self.images.eval_batches(split, batch_size, max_batches):
            yield to_pairs(batch, self.perm, self.patch)

    def meta(self) -> dict:
        return {**self.images.meta(), "pairs": {"loser": "patches permuted",
                                                "patch": self.patch,
                                                "permutation": self.perm.tolist()}}

    @property
    def card(self) -> dict:
        return {**self.images.card, "pairs": self.meta()["pairs"]}

    def eval_kwargs(self) -> dict:
        return {}
