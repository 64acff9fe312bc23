"""LM samples: diversity and memorisation of the training text.

Samples: `num_samples` continuations of `prompt` (prompt excluded), sampled with the
settings' temperature / top_k / top_p, sliding the context window past max_len.

  distinct_n        |distinct word n-grams| / |word n-grams| over all samples pooled
                    (Li et al. 2016); words are whitespace-separated. 1 = no n-gram occurs
                    twice anywhere; low = the samples repeat themselves or each other.
  repetition_rate   share of word n-grams (n = repetition_n) that already occurred
                    earlier *in the same sample*, pooled over samples: 0 = a sample never
                    repeats itself; -> 1 for a sample stuck in a loop.
  memorised_share   share of the samples' span_chars-character windows (every offset)
                    found verbatim in the training text (genjax/evaluators/text_match.py).
  word_share        share of the samples' words found in the training text's vocabulary
                    (genjax/evaluators/words.py): real words vs plausible-looking nonsense.
  longest_copied_chars  the longest substring of any sample found verbatim in the
                    training text; its play, character offset and line are in the report.
Floors: the same numbers for excerpts of `reference_split` (held-out text the model never
saw) with the samples' lengths: what real unseen text scores.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
from ml_collections import ConfigDict

from genjax.evaluators import text_match, words

NEEDS = ("sample_text", "text_tokenizer")
SAMPLES = ("text",)  # or texts given in a file (genjax.evaluate --samples)


def settings(**overrides) -> ConfigDict:
    """config.evals.text: the keys and their defaults (unknown overrides fail)."""
    s = ConfigDict()
    s.during_training = False      # True: also at each periodic eval (sampling is slow)
    s.num_samples = 16             # continuations of `prompt`, decoded in one batch
    s.max_new_tokens = 400         # per sample (past max_len the context window slides)
    s.prompt = "\n"                # a neutral start: plays' speeches follow blank lines
    s.temperature = 1.0            # 1 = the model's own distribution
    s.top_k = 0                    # 0 = off
    s.top_p = 1.0                  # 1 = off
    s.seed = 0                     # sampling seed (plus EvalContext.seed: --seed)
    s.max_n = 3                    # distinct_1 .. distinct_<max_n>
    s.repetition_n = 3             # n of the repetition rate's word n-grams
    s.span_chars = 50              # memorisation window (characters)
    s.reference_split = "validation"  # floors from this held-out split ("" = none)
    s.show_samples = 3             # samples printed in the report (first 500 characters)
    from genjax.evaluators import with_overrides
    return with_overrides("text", s, overrides)


# ----------------------------------------------------------------------- metrics
def ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams, pooled over `texts` (0 if none)."""
    grams = [g for t in texts for g in ngrams(t.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(texts: list[str], n: int = 3) -> float:
    """Share of word n-grams that repeat an earlier n-gram of the same text (pooled)."""
    repeats = total = 0
    for t in texts:
        grams = ngrams(t.split(), n)
        total += len(grams)
        repeats += sum(c - 1 for c in Counter(grams).values())
    return repeats / total if total else 0.0


def memorised_share(index: text_match.SpanIndex, texts: list[str], k: int) -> float:
    """Share of all k-character windows of `texts` found verbatim in the index's text;
    NaN when no text has k characters (nothing to judge, which 0.0 would hide)."""
    found = [f for f in index.find(texts, k) if len(f)]
    total = sum(len(f) for f in found)
    return float(sum(int((f >= 0).sum()) for f in found)) / total if total else float("nan")


def text_metrics(index: text_match.SpanIndex, texts: list[str], s,
                 vocab: frozenset[str]) -> tuple[dict, object]:
    """The module docstring's metrics of `texts`, and the longest copy (a Match or None)."""
    m = {f"distinct_{n}": distinct_n(texts, n) for n in range(1, int(s.max_n) + 1)}
    m["repetition_rate"] = repetition_rate(texts, int(s.repetition_n))
    m["word_share"] = words.word_share(texts, vocab)
    m["memorised_share"] = memorised_share(index, texts, int(s.span_chars))
    longest = index.longest(texts, int(s.span_chars))
    m["longest_copied_chars"] = float(longest.length if longest else 0)
    return m, longest


def excerpts(text: str, lengths: list[int]) -> list[str]:
    """len(lengths) pieces of `text` with those lengths, evenly spaced over it."""
    if not text or not lengths:
        return []
    starts = np.linspace(0, max(len(text) - max(lengths), 0), len(lengths)).astype(int)
    return [text[s:s + n] for s, n in zip(starts, lengths)]


def _quote(text: str, limit: int = 500) -> list[str]:
    body = text[:limit] + (" [...]" if len(text) > limit else "")
    return ["```text", body.replace("```", "'''"), "```"]


def evaluate(ctx, settings) -> dict:
    data, s = ctx.data, settings
    samples = ctx.sample_texts(int(s.num_samples), prompt=str(s.prompt),
                               max_new_tokens=int(s.max_new_tokens),
                               temperature=float(s.temperature), top_k=int(s.top_k),
                               top_p=float(s.top_p), seed=int(s.seed) + int(ctx.seed))
    train_text = data.text("train")
    index = text_match.index_for(train_text)
    vocab = words.vocabulary(train_text)
    metrics, longest = text_metrics(index, samples, s, vocab)
    metrics["mean_chars"] = float(np.mean([len(t) for t in samples])) if samples else 0.0

    floors, ref_longest = {}, None
    ref_split = str(s.reference_split)
    if ref_split and ref_split in getattr(data, "splits", []):
        reference = excerpts(data.text(ref_split), [len(t) for t in samples])
        floors, ref_longest = text_metrics(index, reference, s, vocab)

    location = None
    if longest is not None:
        docs = data.documents("train") if hasattr(data, "documents") else [("train", train_text)]
        sep = getattr(getattr(data, "builder", None), "SEPARATOR", "")
        location = text_match.locate(docs, sep, longest.text_start)
        location.update(sample=longest.query, sample_offset=longest.query_start,
                        chars=longest.length,
                        text=train_text[longest.text_start:longest.text_start + longest.length])

    if ctx.given is None:
        made = (f"{len(samples)} samples of up to {s.max_new_tokens} tokens after prompt "
                f"{str(s.prompt)!r} (temperature {s.temperature}, top_k {s.top_k}, top_p "
                f"{s.top_p}), {ctx.source}.")
    else:
        made = f"{len(samples)} {ctx.source}."
    md = [f"{made} Floors: {ref_split or 'none'} excerpts of the same lengths.", ""]
    if location:
        md += [f"Longest copied span: {location['chars']} characters of sample "
               f"{location['sample'] + 1}, from `{location['document']}` offset "
               f"{location['offset']} (line {location['line']}):", ""] + _quote(location["text"])
    else:
        md += ["No character of the samples is found in the training text."]
    for i, t in enumerate(samples[:int(s.show_samples)]):
        md += ["", f"Sample {i + 1}:", ""] + _quote((str(s.prompt) if ctx.given is None
                                                     else "") + t)
    details = {"samples": samples, "longest": location,
               "reference_longest_chars": ref_longest.length if ref_longest else 0,
               "settings": s.to_dict()}
    return {"metrics": metrics, "floors": floors, "figures": [], "markdown": "\n".join(md),
            "details": details}
