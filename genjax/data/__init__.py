"""Data: cleaned text -> TFDS array_record datasets -> deterministic grain loaders.

  shakespeare.py    the plays' markdown -> "NAME:\\nverse" text; the split by whole play
  tokenizer.py      CharTokenizer and `tokenizer_from_json` (JSON shared by all kinds)
  text_builders.py  TFDS builders (Shakespeare, any text file) and `prepare`
  lm_loader.py      LMData: shuffled training windows, eval windows, resumable state

Names from text_builders and lm_loader load on first use, so `import genjax.data`
(e.g. to decode samples) does not pull in TFDS and grain.
"""
import importlib

from genjax.data.tokenizer import CharTokenizer, load_tokenizer, tokenizer_from_json

_LAZY = {"LMData": "lm_loader", "prepare": "text_builders", "GenjaxShakespeare": "text_builders",
         "GenjaxTextFile": "text_builders", "load_plays": "shakespeare"}

__all__ = ["CharTokenizer", "load_tokenizer", "tokenizer_from_json", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"genjax.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'genjax.data' has no attribute {name!r}")
