"""Labelled images held in memory, with the interface of image_loader.ImageData.

For training on images that exist only as arrays (CAS: a classifier trained on generated
samples), without writing them to disk:

  data = ArrayData({"train": (x_NxHxWxC, y_N), "test": (x2, y2)}, class_names,
                   global_batch_size=128, seed=0)
  genjax.train.train(config, workdir, data=data)

Images float32 in [-1, 1], labels int32; an example may hold several images (preference
pairs: float32[N, 2, H, W, C], genjax/data/sampled_image_pairs.py). Same batch semantics
as ImageData: a seeded permutation per epoch for training (seed + epoch), each example
once with a "mask" for evaluation; process p takes its slice of every global batch.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import numpy as np

from genjax.data import position
from genjax.errors import ConfigError


class ArrayTrainIterator:
    """Infinite shuffled batches; state = {"next_batch": k, ...identity}."""

    def __init__(self, images, labels, *, global_batch_size: int, seed: int,
                 process_index: int, process_count: int, identity: dict):
        self.images, self.labels = images, labels
        self.g, self.seed = global_batch_size, seed
        self.p, self.pc = process_index, process_count
        self.next_batch = 0
        self._identity = identity
        self._perm_epoch, self._perm = -1, None

    def __iter__(self) -> "ArrayTrainIterator":
        return self

    def _rows(self, positions: np.ndarray) -> np.ndarray:
        """Stream positions -> rows (epoch e uses permutation(seed + e))."""
        n = len(self.labels)
        out = np.empty(len(positions), np.int64)
        for i, pos in enumerate(positions):
            epoch = int(pos) // n
            if epoch != self._perm_epoch:
                self._perm = np.random.default_rng(self.seed + epoch).permutation(n)
                self._perm_epoch = epoch
            out[i] = self._perm[int(pos) % n]
        return out

    def __next__(self) -> dict[str, np.ndarray]:
        b = self.g // self.pc
        positions = self.next_batch * self.g + self.p * b + np.arange(b)
        rows = self._rows(positions)
        self.next_batch += 1
        return {"image": self.images[rows], "label": self.labels[rows]}

    def get_state(self) -> dict[str, Any]:
        return {"next_batch": self.next_batch, **self._identity}

    def set_state(self, state: dict[str, Any]) -> None:
        position.check(state, self._identity)
        self.next_batch = int(state["next_batch"])


class ArrayData:
    """In-memory labelled images: {split: (images float32[N, ..., H, W, C], labels int32[N])}.
    `identity`: extra entries of the train iterator's state that a resume must match (e.g.
    the checksum of the file the arrays came from)."""

    dataset = None  # no stable identity: nothing derived from it is cached

    def __init__(self, splits: dict[str, tuple[np.ndarray, np.ndarray]],
                 class_names: Sequence[str], *, global_batch_size: int, seed: int = 0,
                 process_index: int = 0, process_count: int = 1,
                 identity: dict[str, Any] | None = None):
        if global_batch_size % process_count:
            raise ConfigError(f"batch size {global_batch_size} is not divisible by the "
                              f"process count {process_count}")
        self._splits = {}
        shapes = set()
        for name, (x, y) in splits.items():
            x, y = np.asarray(x, np.float32), np.asarray(y, np.int32)
            if x.ndim < 4 or len(x) != len(y):
                raise ValueError(f"split {name!r}: need images [N, (...,) H, W, C] and N "
                                 f"labels, got {x.shape} and {y.shape}")
            if len(y) and (y.min() < 0 or y.max() >= len(class_names)):
                raise ValueError(f"split {name!r}: labels outside 0..{len(class_names) - 1}")
            self._splits[name] = (x, y)
            shapes.add(x.shape[1:])
        if len(shapes) != 1:
            raise ValueError(f"splits have different image shapes: {sorted(shapes)}")
        self.example_shape = tuple(int(d) for d in shapes.pop())  # one example's images
        self.image_shape = self.example_shape[-3:]
        self._identity = dict(identity or {})
        self.class_names = list(class_names)
        self.global_batch_size, self.seed = int(global_batch_size), int(seed)
        self.process_index, self.process_count = int(process_index), int(process_count)

    def _split(self, split: str):
        if split not in self._splits:
            raise ConfigError(f"in-memory data has no split {split!r}; it has {self.splits}")
        return self._splits[split]

    @property
    def splits(self) -> list[str]:
        return sorted(self._splits)

    def num_examples(self, split: str) -> int:
        return len(self._split(split)[1])

    def train_iterator(self, split: str = "train") -> ArrayTrainIterator:
        x, y = self._split(split)
        if len(y) < self.global_batch_size:
            raise ConfigError(f"{split} has {len(y)} examples, fewer than one batch "
                              f"({self.global_batch_size})")
        identity = {"split": split, "seed": self.seed, "global_batch_size": self.global_batch_size,
                    "num_examples": len(y), **self._identity}
        return ArrayTrainIterator(x, y, global_batch_size=self.global_batch_size, seed=self.seed,
                                  process_index=self.process_index,
                                  process_count=self.process_count, identity=identity)

    def eval_batches(self, split: str = "test", batch_size: int = 256,
                     max_batches: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Each example once in order; rows past the end are padding (mask 0)."""
        if batch_size % self.process_count:
            raise ConfigError(f"eval batch size {batch_size} is not divisible by the process "
                              f"count {self.process_count}")
        x, y = self._split(split)
        n, b = len(y), batch_size // self.process_count
        num = math.ceil(n / batch_size)
        if max_batches is not None:
            num = min(num, int(max_batches))
        for k in range(num):
            rows = k * batch_size + self.process_index * b + np.arange(b)
            real = rows[rows < n]
            batch = {"image": np.full((b, *self.example_shape), -1.0, np.float32),
                     "label": np.zeros((b,), np.int32),
                     "mask": (np.arange(b) < len(real)).astype(np.float32)}
            batch["image"][:len(real)] = x[real]
            batch["label"][:len(real)] = y[real]
            yield batch

    def meta(self) -> dict[str, Any]:
        return {"dataset": "in-memory arrays", "class_names": self.class_names,
                "image_shape": list(self.image_shape),
                "splits": {s: self.num_examples(s) for s in self.splits}}

    def eval_kwargs(self) -> dict[str, Any]:
        return {}
