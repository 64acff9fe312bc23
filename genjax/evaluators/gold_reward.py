"""The gold preference for Shakespeare-like text: one programmatic number a reader shares.

  gold = 0.5 * word_share + 0.5 * complete_lines - repeated_3grams      in [-1, 1]

  word_share       share of the text's words found in the training text's vocabulary
                   (genjax/evaluators/words.py: letter runs, lower-cased): real words,
                   not plausible-looking nonsense. 0 if the text has no word.
  complete_lines   share of the non-empty lines (stripped) that end complete: in one of
                   . , ; : ! ? ' (a speaker line "ROMEO:" ends in ':'). A line cut
                   mid-word counts as incomplete, the last one too. 0 if no line.
  repeated_3grams  share of whitespace-separated word 3-grams that repeat an earlier
                   3-gram of the same text (text.repetition_rate, n = 3): loops cost.

Each term is in [0, 1], so a fluent, well-punctuated, non-repeating text scores 1, and a
loop of one nonsense phrase without punctuation tends to -1. The weights are `WEIGHTS`;
`definition()` is what a data card or a report writes down.
"""
from __future__ import annotations

from genjax.evaluators import text, words

WEIGHTS = {"word_share": 0.5, "complete_lines": 0.5, "repeated_3grams": -1.0}
LINE_ENDS = tuple(".,;:!?'")


def complete_lines(t: str) -> float:
    """Share of the non-empty (stripped) lines of `t` ending in one of LINE_ENDS."""
    lines = [line.strip() for line in t.split("\n") if line.strip()]
    return sum(line.endswith(LINE_ENDS) for line in lines) / len(lines) if lines else 0.0


def components(t: str, vocab: frozenset[str]) -> dict[str, float]:
    """The three terms of the gold reward of text `t` (module docstring)."""
    return {"word_share": words.word_share([t], vocab),
            "complete_lines": complete_lines(t),
            "repeated_3grams": text.repetition_rate([t], 3)}


def gold_reward(t: str, vocab: frozenset[str]) -> float:
    """The gold reward of `t` in [-1, 1]: WEIGHTS . components."""
    c = components(t, vocab)
    return float(sum(WEIGHTS[k] * v for k, v in c.items()))


def gold_rewards(texts: list[str], vocab: frozenset[str]) -> list[float]:
    return [gold_reward(t, vocab) for t in texts]


def definition() -> dict:
    """The reward as data: formula, weights, term definitions (for data cards, reports)."""
    return {"name": "gold_reward", "module": __name__,
            "formula": "0.5 * word_share + 0.5 * complete_lines - repeated_3grams",
            "weights": dict(WEIGHTS), "range": [-1.0, 1.0],
            "terms": {
                "word_share": "share of the text's words (letter runs, lower-cased) found in "
                              "the training text's vocabulary",
                "complete_lines": f"share of non-empty lines ending in one of "
                                  f"{''.join(LINE_ENDS)} (speaker lines end in ':')",
                "repeated_3grams": "share of whitespace word 3-grams repeating an earlier "
                                   "3-gram of the same text"}}
