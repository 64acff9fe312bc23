"""Image batches with captions: ImageData plus "tokens" (int32[b, max_words]) per example.

  data = CaptionedImageData(config.data, global_batch_size=32, seed=0, max_words=16)
  batch = next(data.train_iterator())   # {"image", "label", "tokens"}

Training batch k gives example i the phrasing `captions.caption_ids(label, i, k, seed)` of
the "train" split; the iterator state is ImageData's (k is its batch position), so a
resumed run sees the same captions. Eval batches use `eval_captions` ("heldout" by
default: the eval loss measures phrasings never trained on) at step 0, so they are the
same at every eval.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from genjax.errors import ConfigError
from genjax.data import captions
from genjax.data.caption_tokenizer import CaptionTokenizer, caption_table
from genjax.data.image_loader import ImageData


def _add_tokens(batch: dict, table_CxPxL: np.ndarray, step: int, seed: int,
                split: str) -> dict:
    index = batch.pop("index")
    real = index >= 0  # eval padding rows have index -1: null caption
    ids = captions.caption_ids(batch["label"], np.where(real, index, 0), step, seed=seed,
                               split=split)
    tokens = table_CxPxL[batch["label"], ids]
    batch["tokens"] = np.where(real[:, None], tokens, 0).astype(np.int32)
    return batch


class CaptionedIterator:
    """Wraps ImageData's train iterator; same state (JSON)."""

    def __init__(self, inner, table, seed: int):
        self._inner, self._table, self._seed = inner, table, seed

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        step = self._inner.get_state()["next_batch"]
        return _add_tokens(next(self._inner), self._table, step, self._seed, "train")

    def get_state(self) -> dict[str, Any]:
        return self._inner.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self._inner.set_state(state)


class CaptionedImageData:
    """The family data contract (genjax/families/__init__.py) for text-to-image."""

    def __init__(self, data_cfg, *, global_batch_size: int, seed: int, max_words: int,
                 eval_captions: str = "heldout", process_index: int = 0,
                 process_count: int = 1):
        if eval_captions not in captions.SPLITS:
            raise ConfigError(f"config.data.eval_captions={eval_captions!r}: choose one of "
                              f"{captions.SPLITS}")
        if "train_images" in data_cfg and data_cfg.train_images:
            raise ConfigError("config.data.train_images is not supported with text "
                              "conditioning (captions are drawn per real image)")
        self.images = ImageData(data_cfg, global_batch_size=global_batch_size, seed=seed,
                                process_index=process_index, process_count=process_count,
                                include_index=True)
        try:
            captions.check_class_names(self.images.class_names)
        except ValueError as e:
            raise ConfigError(f"config.data.name={data_cfg.name!r}: {e}") from None
        self.seed, self.eval_captions = int(seed), eval_captions
        self.tokenizer = CaptionTokenizer.from_captions(max_words)
        self._tables = {s: caption_table(self.tokenizer, s) for s in captions.SPLITS}
        self.class_names, self.image_shape = self.images.class_names, self.images.image_shape

    @property
    def splits(self) -> list[str]:
        return self.images.splits

    def train_iterator(self, split: str = "train") -> CaptionedIterator:
        return CaptionedIterator(self.images.train_iterator(split), self._tables["train"],
                                 self.seed)

    def eval_batches(self, split: str = "test", batch_size: int = 256,
                     max_batches: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        table = self._tables[self.eval_captions]
        for batch in self.images.eval_batches(split, batch_size, max_batches):
            yield _add_tokens(batch, table, 0, self.seed, self.eval_captions)

    def meta(self) -> dict[str, Any]:
        return {**self.images.meta(), "caption_tokenizer": self.tokenizer.to_json(),
                "eval_captions": self.eval_captions}

    @property
    def card(self) -> dict[str, Any]:
        return {**self.images.card, "captions": "genjax/data/captions.py"}

    def eval_kwargs(self) -> dict[str, Any]:
        return {}
