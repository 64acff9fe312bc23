"""Post-processing hooks run on every generated output: content filters and format fixes.

  hooks = [strip(), blocklist(["darn"], patterns=[r"\\d{3}-\\d{4}"], action="redact"),
           max_chars(500)]
  records = run_hooks(texts, hooks)
  # {"text": "...", "rejected": False, "reason": None,
  #  "redactions": [{"term": "darn", "span": [12, 16]}], "truncated": False}

A record is a dict; a hook takes a record and returns it (changed or not). Hooks run in
order and stop at the first rejection; a rejected record's "text" is withheld ("") and
"reason" says why. Redaction spans index the text as that hook received it.

Images use the same records ({"image": HxWxC array, ...}) and `run_hooks(images, hooks,
key="image")`; `image_confidence_filter` is the hook signature for rejecting images a
scorer is unsure about.

These are mitigations, not a security boundary. A blocklist misses misspellings,
paraphrases, other languages, spacing and Unicode look-alikes, and meaning spread over
several outputs; regexes and classifiers both have false positives and negatives; and
anyone who can run the model can skip the hooks. Use them to make accidents rarer and to
record what was caught, not as a guarantee about what a model can produce.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Sequence

import numpy as np

Record = dict
Hook = Callable[[Record], Record]
ACTIONS = ("reject", "redact")


def new_record(value: Any, key: str = "text") -> Record:
    return {key: value, "rejected": False, "reason": None, "redactions": [],
            "truncated": False}


def run_hooks(items: Iterable[Any], hooks: Sequence[Hook], key: str = "text") -> list[Record]:
    """One record per item after every hook (stopping at the first rejection)."""
    out = []
    for item in items:
        record = new_record(item, key)
        for hook in hooks:
            record = hook(record)
            if record["rejected"]:
                break
        out.append(record)
    return out


def is_flagged(record: Record) -> bool:
    """True when a hook rejected, redacted or truncated this record (worth reporting)."""
    return bool(record["rejected"] or record["redactions"] or record["truncated"])


def _reject(record: Record, reason: str, key: str = "text") -> Record:
    return {**record, key: "" if key == "text" else None, "rejected": True, "reason": reason}


# ----------------------------------------------------------------------------- filters
def word_pattern(word: str) -> str:
    """Regex matching `word` as a whole word: "ass" matches "ass!" but not "classic"."""
    return r"(?<!\w)" + re.escape(word) + r"(?!\w)"


def blocklist(words: Sequence[str] = (), patterns: Sequence[str] = (), *,
              action: str = "reject", replacement: str = "[REDACTED]",
              ignore_case: bool = True) -> Hook:
    """Rejects (or redacts) text containing a listed word (whole words) or regex match."""
    if action not in ACTIONS:
        raise ValueError(f"blocklist action={action!r}: choose one of {list(ACTIONS)}")
    flags = re.IGNORECASE if ignore_case else 0
    terms = [(w, re.compile(word_pattern(w), flags)) for w in words if w]
    for p in patterns:
        try:
            terms.append((p, re.compile(p, flags)))
        except re.error as e:
            raise ValueError(f"blocklist pattern {p!r}: {e}") from None

    def hook(record: Record) -> Record:
        text = record["text"]
        hits = sorted(((m.start(), m.end(), term) for term, rx in terms
                       for m in rx.finditer(text) if m.end() > m.start()))
        if not hits:
            return record
        if action == "reject":
            start, end, term = hits[0]
            return _reject(record, f"blocklist: {term!r} at [{start}, {end})")
        merged = []  # overlapping matches become one redaction
        for start, end, term in hits:
            if merged and start < merged[-1]["span"][1]:
                merged[-1]["span"][1] = max(merged[-1]["span"][1], end)
            else:
                merged.append({"term": term, "span": [start, end]})
        pieces, last = [], 0
        for r in merged:
            pieces += [text[last:r["span"][0]], replacement]
            last = r["span"][1]
        return {**record, "text": "".join(pieces) + text[last:],
                "redactions": record["redactions"] + merged,
                "reason": f"redacted {len(merged)} match(es)"}
    return hook


def classifier(score_fn: Callable[[str], float], *, threshold: float = 0.5,
               name: str = "classifier") -> Hook:
    """Rejects text whose score_fn(text) (e.g. P(unwanted)) is >= threshold; the score is
    kept in record["scores"][name] either way."""
    def hook(record: Record) -> Record:
        score = float(score_fn(record["text"]))
        record = {**record, "scores": {**record.get("scores", {}), name: score}}
        if score >= threshold:
            return _reject(record, f"{name}: score {score:.3f} >= {threshold}")
        return record
    return hook


# ----------------------------------------------------------------------------- format
def strip() -> Hook:
    """Leading and trailing whitespace removed."""
    return lambda record: {**record, "text": record["text"].strip()}


def last_full_line() -> Hook:
    """Text cut after its last newline (the unfinished last line dropped); one line: kept."""
    def hook(record: Record) -> Record:
        text = record["text"]
        cut = text.rfind("\n")
        if cut < 0 or cut == len(text) - 1:
            return record
        return {**record, "text": text[:cut + 1], "truncated": True}
    return hook


def max_chars(n: int) -> Hook:
    """Text cut to at most n characters."""
    if n < 1:
        raise ValueError(f"max_chars={n}: must be >= 1")

    def hook(record: Record) -> Record:
        if len(record["text"]) <= n:
            return record
        return {**record, "text": record["text"][:n], "truncated": True}
    return hook


# ----------------------------------------------------------------------------- images
def image_confidence_filter(probs_fn: Callable[[np.ndarray], np.ndarray], *,
                            threshold: float = 0.5, class_names: Sequence[str] = (),
                            target: int | None = None) -> Hook:
    """Rejects an image (record["image"], HxWxC) whose classifier is unsure.

    probs_fn(image) -> class probabilities [C]. Without `target` the image is rejected
    when the top probability is below `threshold`; with `target` (the prompted class) when
    that class's probability is. Records "label" (the top class) and "confidence" (the
    judged probability) either way.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"image filter threshold={threshold}: must be in [0, 1]")

    def name(i: int):
        return class_names[i] if class_names else i

    def hook(record: Record) -> Record:
        probs = np.asarray(probs_fn(record["image"]), np.float64).reshape(-1)
        top = int(np.argmax(probs))
        judged = top if target is None else int(target)
        record = {**record, "label": name(top), "confidence": float(probs[judged])}
        if probs[judged] < threshold:
            what = f"top class {name(top)!r}" if target is None else \
                f"prompted class {name(judged)!r} (top: {name(top)!r})"
            return _reject(record, f"image classifier unsure: {what} has "
                                   f"p={probs[judged]:.3f} < {threshold}", key="image")
        return record
    return hook
