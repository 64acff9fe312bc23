"""Real words: the share of a text's words found in a vocabulary (the training text's).

A character LM can match the plays' layout while spelling nonsense; this counts how much
of what it writes is made of words the training text contains.

  vocab = vocabulary(train_text)          # frozenset of lower-cased words
  word_share(["Thou art a villain"], vocab) -> 1.0

Words: maximal runs of letters, with inner apostrophes ("o'er", "'tis" -> "tis"),
lower-cased; digits and punctuation separate words. The share is pooled over texts
(every word counts once per occurrence); 0 when there are no words at all.
"""
from __future__ import annotations

import functools
import re

WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")


def words(text: str) -> list[str]:
    """The lower-cased words of `text`, in order."""
    return [w.lower() for w in WORD.findall(text)]


@functools.lru_cache(maxsize=4)
def vocabulary(text: str) -> frozenset[str]:
    """The distinct lower-cased words of `text` (cached: the training text is reused)."""
    return frozenset(words(text))


def word_share(texts: list[str], vocab: frozenset[str]) -> float:
    """Share of all words of `texts` (pooled) that are in `vocab`; 0.0 if no words."""
    found = total = 0
    for t in texts:
        ws = words(t)
        total += len(ws)
        found += sum(w in vocab for w in ws)
    return found / total if total else 0.0
