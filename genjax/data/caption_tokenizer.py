"""Word-level tokenizer for captions and text-to-image prompts.

  tok = CaptionTokenizer.from_captions(max_words=16)
  ids_L = tok.encode("a pair of sandals")     # int32[16]: word ids, then PAD (0)
  tok.unknown_words("a pair of sandlas")      # ['sandlas'] (encoded as UNK)

Ids: 0 = PAD (also the null caption of classifier-free guidance: all PAD), 1 = UNK, then
the sorted words of the *training* captions (genjax/data/captions.py), so a word only a
held-out phrasing or a user uses maps to UNK rather than to an embedding no gradient ever
reached. There are no other special tokens: the text encoder's summary slot is a learned
vector, not an id, so no input text can produce a control token. Untrusted text is split
into words by `captions.words` (NFKC, case-folded; punctuation, control characters and
markup like "<pad>" only separate words), and each word is looked up; nothing in the text
can select an id other than a vocabulary word or UNK.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from genjax.errors import UserError
from genjax.data import captions

PAD, UNK = 0, 1
SPECIALS = ("<pad>", "<unk>")


@dataclasses.dataclass(frozen=True)
class CaptionTokenizer:
    vocab: tuple[str, ...]   # id -> word; vocab[:2] == SPECIALS
    max_words: int           # prompt limit; encode() returns int32[max_words]

    def __post_init__(self):
        if tuple(self.vocab[:2]) != SPECIALS:
            raise ValueError(f"vocab must start with {SPECIALS}")
        if self.max_words < 1:
            raise ValueError(f"max_words={self.max_words}: must be >= 1")
        object.__setattr__(self, "_ids", {w: i for i, w in enumerate(self.vocab) if i >= 2})

    @classmethod
    def from_captions(cls, max_words: int = 16) -> "CaptionTokenizer":
        """The words of every training caption (both forms of every training synonym)."""
        found = {w for label in range(len(captions.FASHION_MNIST_CLASSES))
                 for text in captions.phrasings(label, "train") for w in captions.words(text)}
        return cls(SPECIALS + tuple(sorted(found)), int(max_words))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in captions.words(text) if w not in self._ids]

    def encode(self, text: str) -> np.ndarray:
        """int32[max_words]. Raises UserError for a prompt with no words or too many."""
        ws = captions.words(text)
        if not ws:
            raise UserError(f"empty prompt {text!r}: write a few words, e.g. 'a pair of sandals'")
        if len(ws) > self.max_words:
            raise UserError(f"prompt has {len(ws)} words; the limit is {self.max_words} "
                            f"(the text encoder's max_words)")
        out = np.full((self.max_words,), PAD, np.int32)
        out[:len(ws)] = [self._ids.get(w, UNK) for w in ws]
        return out

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        """int32[N, max_words]."""
        return np.stack([self.encode(t) for t in texts]) if texts else \
            np.zeros((0, self.max_words), np.int32)

    def decode(self, ids_L) -> str:
        return " ".join(self.vocab[int(i)] for i in np.asarray(ids_L).reshape(-1) if i != PAD)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "caption_words", "vocab": list(self.vocab), "max_words": self.max_words}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "CaptionTokenizer":
        if d.get("kind") != "caption_words":
            raise ValueError(f"not a caption tokenizer: kind={d.get('kind')!r}")
        return cls(tuple(d["vocab"]), int(d["max_words"]))


def caption_table(tokenizer: CaptionTokenizer, split: str) -> np.ndarray:
    """int32[C, P, max_words]: every phrasing of every class, tokenized (rows past a
    class's count are PAD; all classes have the same count in our split)."""
    rows = [[tokenizer.encode(t) for t in captions.phrasings(c, split)]
            for c in range(len(captions.FASHION_MNIST_CLASSES))]
    P = max(len(r) for r in rows)
    table = np.zeros((len(rows), P, tokenizer.max_words), np.int32)
    for c, r in enumerate(rows):
        table[c, :len(r)] = r
    return table
