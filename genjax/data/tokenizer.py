"""Character tokenizer and the JSON form every tokenizer shares.

JSON: {"kind": "char", "vocab": ["\\n", " ", "!", ...]}. `kind` picks the class in
`tokenizer_from_json`, so the byte-level BPE tokenizer ({"kind": "bpe", ...}, bpe.py) is
saved in checkpoints and data dirs the same way.
"""
from __future__ import annotations

import importlib
import json
import os

import numpy as np


class CharTokenizer:
    """One id per character; ids follow the sorted vocabulary."""

    kind = "char"
    end_of_text_id = None  # no end-of-text token (BPETokenizer: GPT-2's <|endoftext|>)

    def __init__(self, vocab: list[str] | str):
        vocab = list(vocab)
        if not vocab:
            raise ValueError("empty vocabulary (no training text?)")
        if any(len(c) != 1 for c in vocab) or len(set(vocab)) != len(vocab):
            raise ValueError("a char vocabulary holds distinct single characters")
        self.vocab = sorted(vocab)
        self._codes = np.array([ord(c) for c in self.vocab], np.int64)  # sorted

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        """Vocabulary = the distinct characters of `text`."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """text -> int32 ids; ValueError naming any characters outside the vocabulary."""
        # a lone surrogate (argv decoded with surrogateescape) has no UTF-32: it is named
        # below as the other characters the vocabulary lacks
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32).astype(np.int64)
        ids = np.searchsorted(self._codes, codes)
        ok = self._codes[np.minimum(ids, len(self._codes) - 1)] == codes
        if not ok.all():
            unknown = sorted({chr(c) for c in codes[~ok]})
            raise ValueError(f"characters not in the vocabulary ({len(unknown)}): "
                             f"{', '.join(repr(c) for c in unknown)}")
        return ids.astype(np.int32)

    def decode(self, ids) -> str:
        ids = np.asarray(ids, np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"ids must be in [0, {self.vocab_size}); got "
                             f"[{ids.min()}, {ids.max()}]")
        return "".join(self.vocab[i] for i in ids.tolist())

    def to_json(self) -> dict:
        return {"kind": self.kind, "vocab": list(self.vocab)}

    @classmethod
    def from_json(cls, d: dict) -> CharTokenizer:
        if d.get("kind") != cls.kind:
            raise ValueError(f"not a {cls.kind!r} tokenizer: kind={d.get('kind')!r}")
        return cls(d["vocab"])

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, ensure_ascii=False)

    @staticmethod
    def load(path: str | os.PathLike) -> CharTokenizer:
        with open(path, encoding="utf-8") as f:
            return CharTokenizer.from_json(json.load(f))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


KINDS = {"char": "genjax.data.tokenizer:CharTokenizer",
         "bpe": "genjax.data.bpe:BPETokenizer"}  # imported on use: `tokenizers` only for BPE


def tokenizer_class(kind: str):
    if kind not in KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; known: {sorted(KINDS)}")
    module, name = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def tokenizer_from_json(d: dict):
    """The tokenizer a `to_json()` dict describes, by its "kind"."""
    return tokenizer_class(d.get("kind")).from_json(d)


def load_tokenizer(path: str | os.PathLike):
    """A tokenizer saved by `save(path)`, whatever its kind."""
    with open(path, encoding="utf-8") as f:
        return tokenizer_from_json(json.load(f))
