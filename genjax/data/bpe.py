"""Byte-level BPE tokenizer, trained on a dataset's training split with HF `tokenizers`.

Why `tokenizers` rather than our own BPE: its Rust trainer learns 512 merges on the plays
(4M characters) in seconds; byte-level pre-tokenization (GPT-2's) has all 256 bytes in the
base vocabulary and no normalizer, so *any* UTF-8 text encodes without unknown tokens and
decodes to exactly itself; and the whole tokenizer serialises to one JSON document, which
we embed in checkpoints and data dirs:

    {"kind": "bpe", "vocab_size": 512, "tokenizer": {...the `tokenizers` JSON...}}

No special tokens and no prefix space are added: ids are the text and nothing else, like
the char tokenizer's. Decoding ids that cut a multi-byte character yields U+FFFD there.
"""
from __future__ import annotations

import json
import os
import re
from typing import Iterator

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

NUM_BYTES = 256
CHUNK_CHARS = 1 << 16  # text is encoded in chunks of about this size, in parallel
# A newline between two non-space characters is a GPT-2 pre-token of its own, so chunks cut
# after it encode exactly as the whole text does (tested). After a space or a newline it
# is not ("\n\n" at a chunk's end would be one piece, two inside the text).
_CUT = re.compile(r"(?<=\S)\n(?=\S)")


def _chunks(text: str, size: int = CHUNK_CHARS) -> Iterator[str]:
    start = 0
    while start < len(text):
        end = start + size
        if end < len(text):
            m = _CUT.search(text, end)
            end = m.end() if m else len(text)
        yield text[start:end]
        start = end


END_OF_TEXT = "<|endoftext|>"


class BPETokenizer:
    """Byte-level BPE; ids are those of the wrapped `tokenizers.Tokenizer`."""

    kind = "bpe"

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer

    @classmethod
    def train(cls, text: str, vocab_size: int) -> BPETokenizer:
        """Learns vocab_size - 256 merges from `text` (fewer if the text runs out of pairs)."""
        if vocab_size < NUM_BYTES:
            raise ValueError(f"BPE vocab_size={vocab_size}: must be >= {NUM_BYTES} "
                             f"(one token per byte, then merges)")
        if not text:
            raise ValueError("empty training text for the BPE tokenizer")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      special_tokens=[])
        tok.train_from_iterator(_chunks(text), trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    @property
    def end_of_text_id(self) -> int | None:
        """The id of GPT-2's end-of-text token where the vocabulary has it (an imported
        GPT-2's 50256), else None (genjax's own BPE learns no special tokens)."""
        return self._tok.token_to_id(END_OF_TEXT)

    def encode(self, text: str) -> np.ndarray:
        """text -> int32 ids (never fails: every byte has a token)."""
        parts = self._tok.encode_batch_fast(list(_chunks(text)))
        ids = [np.asarray(p.ids, np.int32) for p in parts]
        return np.concatenate(ids) if ids else np.zeros((0,), np.int32)

    def decode(self, ids) -> str:
        ids = np.asarray(ids, np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"ids must be in [0, {self.vocab_size}); got "
                             f"[{ids.min()}, {ids.max()}]")
        return self._tok.decode(ids.tolist(), skip_special_tokens=False)

    def sample_tokens(self, n: int = 20) -> list[str]:
        """The first n learned tokens (merges, in order), decoded."""
        first = NUM_BYTES
        return [self._tok.decode([i]) for i in range(first, min(first + n, self.vocab_size))]

    def to_json(self) -> dict:
        return {"kind": self.kind, "vocab_size": self.vocab_size,
                "tokenizer": json.loads(self._tok.to_str())}

    @classmethod
    def from_json(cls, d: dict) -> BPETokenizer:
        if d.get("kind") != cls.kind:
            raise ValueError(f"not a {cls.kind!r} tokenizer: kind={d.get('kind')!r}")
        if "tokenizer" not in d:
            raise ValueError("a 'bpe' tokenizer's JSON needs its 'tokenizer' document")
        return cls(Tokenizer.from_str(json.dumps(d["tokenizer"])))

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, ensure_ascii=False)

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"
