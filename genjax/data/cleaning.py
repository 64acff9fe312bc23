r"""Text cleaning as small named stages over lines, composed from a config string.

    pipe = CleaningPipeline("nfc,whitespace,exact_dedup,near_dedup", dedup_min_chars=30)
    result = pipe.run(documents, reference=held_out_documents)   # str or raw bytes each
    result.docs      # cleaned documents
    result.records   # per stage: lines/chars before and after, counts, a few examples

Stages (`STAGES`; each a function `(lines, ctx) -> (lines, keep, counts, examples)`):
  nfc            Unicode NFC (raw bytes are first decoded by `decode_utf8`, which counts and
                 replaces invalid UTF-8, drops a byte-order mark and makes newlines "\n")
  strip_markup   HTML tags, comments and `&entities;`, markdown emphasis, links and headings
  whitespace     tabs / Unicode spaces -> " ", control characters out, runs of spaces and
                 of blank lines collapsed, lines stripped
  filter_lines   drops lines matching any regex of `drop_lines` (e.g. "[Applause]")
  exact_dedup    drops later copies of a line (same case-folded, space-collapsed form)
  near_dedup     drops lines whose character 5-shingles have Jaccard >= `near_dup_threshold`
                 with an earlier kept line (MinHash + LSH, `genjax.data.dedup`)
  length_filter  drops lines outside [min_chars, max_chars] or with more than `max_non_alpha`
                 of their non-space characters not letters ("...", "----", "1 2 3")
  decontaminate  drops lines covered by a word `decontam_ngram`-gram that also occurs in the
                 reference (validation / test) text; n-grams may span short lines (verse)
  tidy           drops paragraphs left holding only protected lines (a speaker whose every
                 line went), collapses blank runs, strips blank lines at document ends

The first three *normalise* (whitespace also collapses blank runs) and run on every split,
so all splits share one alphabet. The rest *filter* and run on the training split only (`train=True`): held-out text
stays as it was, so evaluation numbers stay comparable across cleaning settings.
Filters never touch blank lines or lines matching `keep_lines` (speaker names, "ROMEO:"),
and the dedup stages ignore lines shorter than `dedup_min_chars`: a play repeats "Exeunt",
"My lord?" and "Ay." legitimately, and removing them would garble the text, not clean it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import re
import unicodedata
from typing import Any, Callable, Sequence

import numpy as np

from genjax.data import dedup

# Defaults of every parameter; configs/lm_shakespeare.py restates them (tested equal).
DEFAULTS: dict[str, Any] = {
    "cleaning": "nfc,strip_markup,whitespace,filter_lines,exact_dedup,near_dedup,"
                "length_filter,decontaminate,tidy",
    "drop_lines": (r"^\s*\[[^\]]*\]\s*$",),     # a line that is only a [bracketed] direction
    "keep_lines": r"^[A-Z][A-Z0-9 ,.'&-]*:$",   # speaker lines: never removed by a filter
    "dedup_min_chars": 30,
    "near_dup_threshold": 0.8,
    "min_chars": 1,
    "max_chars": 5000,
    "max_non_alpha": 0.5,
    "decontam_ngram": 13,
}
MAX_EXAMPLES = 5  # examples kept per stage in the report


@dataclasses.dataclass
class Context:
    params: dict[str, Any]
    eligible: np.ndarray           # bool per line: a filter may remove it (not blank, not kept)
    doc: np.ndarray                # document index per line
    reference: Sequence[str] = ()  # held-out documents (decontaminate)
    had_text: np.ndarray | None = None  # bool per line: its paragraph, before any filter ran,
                                        # held an eligible line (tidy)


StageOut = tuple[list[str], "np.ndarray | None", dict[str, int], list]
Stage = Callable[[list[str], Context], StageOut]


# ----------------------------------------------------------------------- decoding
def decode_utf8(raw: bytes) -> tuple[str, dict[str, int]]:
    """bytes -> text: each invalid byte becomes U+FFFD (counted); a leading byte-order mark
    goes; "\r\n" and "\r" become "\n" (as Python's text mode reads files)."""
    text = raw.decode("utf-8", errors="surrogateescape")
    invalid = sum(1 for c in text if "\udc80" <= c <= "\udcff")
    if invalid:
        text = re.sub("[\udc80-\udcff]", "\ufffd", text)
    bom = text.startswith("\ufeff")
    text = text[1:] if bom else text
    crlf = text.count("\r")
    text = text.replace("\r\n", "\n").replace("\r", "\n") if crlf else text
    return text, {"invalid_bytes": invalid, "byte_order_marks": int(bom),
                  "carriage_returns": crlf}


# ----------------------------------------------------------------------- map stages
def nfc(lines: list[str], ctx: Context) -> StageOut:
    out = [l if l.isascii() else unicodedata.normalize("NFC", l) for l in lines]
    return out, None, {"lines_changed": sum(a != b for a, b in zip(lines, out))}, []


_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]*>", re.S)
_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_EMPH = re.compile(r"(?<![\w*])([*_])(?=[^\s*_])(.+?)(?<=[^\s*_])\1(?![\w*])")
_LINK = re.compile(r"!?\[([^\]\n]*)\]\([^)\n]*\)")
_MD_HEADING = re.compile(r"^#{1,6}\s+")


def _unescape(entity: str, counts: dict[str, int]) -> str:
    text = html.unescape(entity)
    counts["html_entities"] += text != entity  # "&foo;" is not an entity: left as it is
    return text


def strip_markup(lines: list[str], ctx: Context) -> StageOut:
    counts = {"html_tags": 0, "html_entities": 0, "emphasis": 0, "links": 0, "headings": 0}
    out = []
    for line in lines:
        if "<" in line:
            line, n = _TAG.subn("", line)
            counts["html_tags"] += n
        if "&" in line:
            line = _ENTITY.sub(lambda m: _unescape(m.group(), counts), line)
        if "*" in line or "_" in line:
            line, n1 = _STRONG.subn(r"\2", line)
            line, n2 = _EMPH.subn(r"\2", line)
            counts["emphasis"] += n1 + n2
        if "](" in line:
            line, n = _LINK.subn(r"\1", line)
            counts["links"] += n
        if line.startswith("#"):
            line, n = _MD_HEADING.subn("", line)
            counts["headings"] += n
        out.append(line)
    return out, None, counts, []


_SPACE = re.compile(r"[^\S\n]+")  # any whitespace but newline (tabs, NBSP, U+2003, ...)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
_NEEDS_WORK = re.compile(_CONTROL.pattern + r"|[^\S ]|  |^ | $")


def whitespace(lines: list[str], ctx: Context) -> StageOut:
    out, changed = [], 0
    for line in lines:
        if not _NEEDS_WORK.search(line):
            out.append(line)
            continue
        new = " ".join(_SPACE.split(_CONTROL.sub("", line))).strip()
        changed += new != line
        out.append(new)
    blank = np.array([not l for l in out], bool)
    repeat = np.zeros(len(out), bool)
    repeat[1:] = blank[1:] & blank[:-1] & (ctx.doc[1:] == ctx.doc[:-1])
    return out, ~repeat, {"lines_changed": changed, "blank_lines_collapsed": int(repeat.sum())}, []


# ----------------------------------------------------------------------- filter stages
def filter_lines(lines: list[str], ctx: Context) -> StageOut:
    patterns = [re.compile(p) for p in ctx.params["drop_lines"]]
    keep = np.ones(len(lines), bool)
    counts = {f"matched {p.pattern}": 0 for p in patterns}
    for i in np.flatnonzero(ctx.eligible):
        for p in patterns:
            if p.search(lines[i]):
                keep[i] = False
                counts[f"matched {p.pattern}"] += 1
                break
    return lines, keep, counts, [lines[i] for i in np.flatnonzero(~keep)[:MAX_EXAMPLES]]


def _dedup_eligible(lines: list[str], ctx: Context) -> np.ndarray:
    n = int(ctx.params["dedup_min_chars"])
    return ctx.eligible & np.array([len(dedup.normal_form(l)) >= n for l in lines], bool)


def exact_dedup(lines: list[str], ctx: Context) -> StageOut:
    dups = dedup.exact_duplicates(lines, _dedup_eligible(lines, ctx))
    keep = np.ones(len(lines), bool)
    keep[list(dups)] = False
    examples = [{"removed": lines[j], "first": lines[i]}
                for j, i in list(dups.items())[:MAX_EXAMPLES]]
    counts = {"duplicates": len(dups), "distinct_repeated": len(set(dups.values()))}
    return lines, keep, counts, examples


def near_dedup(lines: list[str], ctx: Context) -> StageOut:
    found = dedup.near_duplicates(lines, _dedup_eligible(lines, ctx),
                                  float(ctx.params["near_dup_threshold"]))
    keep = np.ones(len(lines), bool)
    keep[list(found)] = False
    examples = [{"removed": lines[j], "kept": lines[i], "jaccard": round(s, 3)}
                for j, (i, s) in list(found.items())[:MAX_EXAMPLES]]
    return lines, keep, {"near_duplicates": len(found)}, examples


_NON_LETTERS = re.compile(r"[\W\d_]+")  # all but str.isalpha() characters


def length_filter(lines: list[str], ctx: Context) -> StageOut:
    lo, hi = int(ctx.params["min_chars"]), int(ctx.params["max_chars"])
    max_non_alpha = float(ctx.params["max_non_alpha"])
    keep = np.ones(len(lines), bool)
    counts = {"too_short": 0, "too_long": 0, "non_alpha": 0}
    for i in np.flatnonzero(ctx.eligible):
        line = lines[i]
        chars = line.replace(" ", "")
        ratio = 1 - len(_NON_LETTERS.sub("", chars)) / max(len(chars), 1)
        reason = ("too_short" if len(line) < lo else "too_long" if len(line) > hi else
                  "non_alpha" if ratio > max_non_alpha else None)
        if reason:
            keep[i] = False
            counts[reason] += 1
    return lines, keep, counts, [lines[i][:200] for i in np.flatnonzero(~keep)[:MAX_EXAMPLES]]


def decontaminate(lines: list[str], ctx: Context) -> StageOut:
    hit, grams = dedup.contaminated_lines(lines, ctx.reference, int(ctx.params["decontam_ngram"]))
    keep = ~(hit & ctx.eligible)
    return lines, keep, {"contaminated_lines": int((~keep).sum())}, grams


def _paragraphs(lines: list[str], doc: np.ndarray) -> np.ndarray:
    """Paragraph id per line: a blank line or a new document starts the next paragraph."""
    blank = np.array([not l for l in lines], bool)
    new = blank.copy()
    new[1:] |= blank[:-1] | (doc[1:] != doc[:-1])
    return np.cumsum(new)


def tidy(lines: list[str], ctx: Context) -> StageOut:
    blank = np.array([not l for l in lines], bool)
    para = _paragraphs(lines, ctx.doc)
    text_now = np.zeros(para.max(initial=0) + 1, bool)
    text_now[para[ctx.eligible]] = True
    # A paragraph that had text but now holds only protected lines (a speaker without speech).
    emptied = ~blank & ~text_now[para] & ctx.had_text
    keep = ~emptied
    kept = np.flatnonzero(keep)
    drop_blank = np.zeros(len(lines), bool)
    prev = None
    for pos, i in enumerate(kept):  # blank lines: none repeated, none at a document's ends
        if blank[i]:
            nxt = kept[pos + 1] if pos + 1 < len(kept) else None
            if (prev is None or ctx.doc[prev] != ctx.doc[i] or blank[prev]
                    or nxt is None or ctx.doc[nxt] != ctx.doc[i] or blank[nxt]):
                drop_blank[i] = True
                continue
        prev = i
    keep &= ~drop_blank
    return lines, keep, {"paragraphs_emptied": len(set(para[emptied].tolist())),
                         "blank_lines": int(drop_blank.sum())}, []


STAGES: dict[str, tuple[Stage, tuple[str, ...], bool]] = {  # name: (fn, params, filter?)
    "nfc": (nfc, (), False),
    "strip_markup": (strip_markup, (), False),
    "whitespace": (whitespace, (), False),
    "filter_lines": (filter_lines, ("drop_lines",), True),
    "exact_dedup": (exact_dedup, ("dedup_min_chars",), True),
    "near_dedup": (near_dedup, ("dedup_min_chars", "near_dup_threshold"), True),
    "length_filter": (length_filter, ("min_chars", "max_chars", "max_non_alpha"), True),
    "decontaminate": (decontaminate, ("decontam_ngram",), True),
    "tidy": (tidy, (), True),
}


# ----------------------------------------------------------------------- pipeline
@dataclasses.dataclass
class CleaningResult:
    docs: list[str]
    records: list[dict]   # one per stage that ran: counts before/after, stage counts, examples


def _chars(lines: Sequence[str]) -> int:
    return sum(map(len, lines))


class CleaningPipeline:
    """Named stages (a comma-separated string or a list; "" or "none" = no stage) + params."""

    def __init__(self, stages: str | Sequence[str] = DEFAULTS["cleaning"], **params):
        if isinstance(stages, str):
            stages = [] if stages.strip() in ("", "none") else stages.split(",")
        self.stages = [s.strip() for s in stages]
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown cleaning stage(s) {unknown}; known: {list(STAGES)}")
        bad = sorted(set(params) - (set(DEFAULTS) - {"cleaning"}))
        if bad:
            raise ValueError(f"unknown cleaning parameter(s) {bad}; known: "
                             f"{sorted(set(DEFAULTS) - {'cleaning'})}")
        merged = {k: v for k, v in DEFAULTS.items() if k != "cleaning"} | params
        used = {k for s in self.stages for k in STAGES[s][1]}
        if any(STAGES[s][2] for s in self.stages):
            used.add("keep_lines")
        # Only parameters a stage reads: they alone decide the output (and the fingerprint).
        self.params = {k: (list(merged[k]) if isinstance(merged[k], (list, tuple)) else merged[k])
                       for k in sorted(used)}
        for p in self.params.get("drop_lines", []):
            re.compile(p)  # a bad regex fails now, naming itself

    @classmethod
    def from_config(cls, data_cfg) -> CleaningPipeline:
        """From config.data: `cleaning` and every parameter key (configs/lm_shakespeare.py)."""
        missing = [k for k in DEFAULTS if k not in data_cfg]
        if missing:
            raise ValueError(f"config.data lacks cleaning keys {missing} "
                             f"(see configs/lm_shakespeare.py)")
        return cls(str(data_cfg["cleaning"]),
                   **{k: data_cfg[k] for k in DEFAULTS if k != "cleaning"})

    def to_json(self) -> dict:
        return {"stages": list(self.stages), "params": self.params}

    @classmethod
    def from_json(cls, d: dict) -> CleaningPipeline:
        return cls(d["stages"], **d["params"])

    @property
    def fingerprint(self) -> str:
        """8 hex digits naming what this pipeline does (stages and the params they read)."""
        blob = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]

    def __repr__(self) -> str:
        return f"CleaningPipeline({','.join(self.stages) or 'none'}, {self.params})"

    def run(self, docs: Sequence[str | bytes], *, reference: Sequence[str] = (),
            train: bool = True) -> CleaningResult:
        """Cleans `docs` (lines are split at "\\n"); filter stages run only when `train`."""
        records = []
        texts = []
        decoded = {"invalid_bytes": 0, "byte_order_marks": 0, "carriage_returns": 0}
        for d in docs:
            if isinstance(d, bytes):
                d, counts = decode_utf8(d)
                decoded = {k: decoded[k] + counts[k] for k in decoded}
            texts.append(d)
        if any(isinstance(d, bytes) for d in docs):
            records.append({"stage": "decode_utf8", **decoded})
        lines = [l for t in texts for l in t.split("\n")]
        doc = np.repeat(np.arange(len(texts)), [t.count("\n") + 1 for t in texts])
        keep_re = re.compile(self.params.get("keep_lines") or r"(?!)")
        protected = np.array([bool(keep_re.match(l)) for l in lines], bool)
        had_text = None
        for name in self.stages:
            fn, _, is_filter = STAGES[name]
            if is_filter and not train:
                continue
            # protected as the lines are now: "ROMEO: " or "**ROMEO:**" become "ROMEO:" only
            # after the whitespace / markup stages, and filters must not touch them then
            protected = np.array([bool(keep_re.match(l)) for l in lines], bool)
            eligible = np.array([bool(l) for l in lines], bool) & ~protected
            if is_filter and had_text is None:
                para = _paragraphs(lines, doc)
                had_text = np.zeros(para.max(initial=0) + 1, bool)
                had_text[para[eligible]] = True
                had_text = had_text[para]
            before = (len(lines), _chars(lines))
            new, keep, counts, examples = fn(
                lines, Context(self.params, eligible, doc, reference, had_text))
            if keep is not None:
                idx = np.flatnonzero(np.asarray(keep, bool))
                new = [new[i] for i in idx]
                doc, protected = doc[idx], protected[idx]
                had_text = had_text[idx] if had_text is not None else None
            lines = new
            record = {"stage": name, "lines_before": before[0], "lines_after": len(lines),
                      "chars_before": before[1], "chars_after": _chars(lines), **counts}
            if examples:
                record["examples"] = examples
            records.append(record)
        out = [[] for _ in texts]
        for line, d in zip(lines, doc.tolist()):
            out[d].append(line)
        return CleaningResult(["\n".join(o) for o in out], records)
