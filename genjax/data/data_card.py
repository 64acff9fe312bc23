"""Data cards: what a prepared dataset is made of, written next to its files.

Every builder of ours writes `data_card.json` (for programs) and `data_card.md` (for people)
into the dataset's folder once it is prepared. Sections (all optional but `name`):

    name, dataset (TFDS name/config/version), data_dir, created_by
    sources      [{"kind": ..., "path": ..., "version": ..., "sha256": ...}, ...]
    splits       {split: {"examples": n, "chars": n, "lines": n, ...}}
    cleaning     {"stages": [...], "params": {...}, "records": {split: [per-stage counts]}}
    duplicates   {...}  (images: within and across splits, with examples)
    vocabulary   {name: {"size": n, "sample": [...]}}  (tokenizers, or class names)
    files        {relative path: {"bytes": n, "sha256": hex}}  every other file in the folder
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
from typing import Any

CARD_JSON = "data_card.json"
CARD_MD = "data_card.md"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_checksums(directory: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """{path relative to directory: {"bytes", "sha256"}} of every file but the card itself."""
    out = {}
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory)
            if rel in (CARD_JSON, CARD_MD) or name.startswith("."):
                continue
            out[rel] = {"bytes": os.path.getsize(path), "sha256": sha256_file(path)}
    return out


def package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def debian_package(path: str) -> dict[str, str] | None:
    """{"package", "version"} of the Debian package that installed `path`, if dpkg knows it."""
    try:
        owner = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True,
                               timeout=10)
        if owner.returncode:
            return None
        package = owner.stdout.split(":")[0].strip()
        version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"package": package, "version": version}


# ----------------------------------------------------------------------- files
def write_card(directory: str | os.PathLike, card: dict) -> dict:
    """Adds `files` (checksums of everything else in `directory`) and writes both forms;
    each is written to a temporary name first, so a reader never sees half a card."""
    card = {**card, "files": file_checksums(directory)}
    for name, text in ((CARD_JSON, json.dumps(card, indent=1, ensure_ascii=False)),
                       (CARD_MD, to_markdown(card))):
        tmp = os.path.join(directory, f".{name}.tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, os.path.join(directory, name))
    return card


def read_card(directory: str | os.PathLike) -> dict:
    path = os.path.join(directory, CARD_JSON)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {CARD_JSON} in {directory}")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def has_card(directory: str | os.PathLike) -> bool:
    return os.path.exists(os.path.join(directory, CARD_JSON))


# ----------------------------------------------------------------------- markdown
def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", "\\n")  # noqa: E731
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows] + [""])


def _stage_rows(records: list[dict]) -> list[list[Any]]:
    fixed = {"stage", "examples", "lines_before", "lines_after", "chars_before", "chars_after"}
    rows = []
    for r in records:
        counts = ", ".join(f"{k}={v}" for k, v in r.items() if k not in fixed and v)
        rows.append([r["stage"], r.get("lines_before", ""), r.get("lines_after", ""),
                     r.get("chars_before", ""), r.get("chars_after", ""), counts or "-"])
    return rows


def to_markdown(card: dict) -> str:
    out = [f"# Data card: {card['name']}", ""]
    for key in ("dataset", "data_dir", "created_by"):
        if key in card:
            out.append(f"- {key}: `{card[key]}`")
    out.append("")
    if card.get("sources"):
        out += ["## Sources", ""]
        for s in card["sources"]:
            out.append("- " + ", ".join(f"{k}: `{v}`" for k, v in s.items() if v is not None))
        out.append("")
    if card.get("splits"):
        cols = sorted({k for v in card["splits"].values() for k in v})
        out += ["## Splits", ""] + _table(["split", *cols], [
            [s, *(v.get(c, "") for c in cols)] for s, v in card["splits"].items()])
    cleaning = card.get("cleaning")
    if cleaning:
        out += ["## Cleaning", ""]
        if cleaning.get("source_stages"):
            src = cleaning["source_stages"]
            out += [f"Source stages ({src.get('module', '')}), summed over documents:", ""]
            out += _table(["stage", "counts"], [[k, ", ".join(f"{a}={b}" for a, b in v.items())]
                                                for k, v in src["counts"].items()])
        out += [f"Pipeline: `{','.join(cleaning.get('stages', [])) or 'none'}`",
                f"params: `{json.dumps(cleaning.get('params', {}))}`", ""]
        for split, records in cleaning.get("records", {}).items():
            if not records:
                continue
            out += [f"### {split}", ""] + _table(
                ["stage", "lines before", "lines after", "chars before", "chars after",
                 "counts"], _stage_rows(records))
            for r in records:
                for ex in r.get("examples", []):
                    out.append(f"- {r['stage']}: `{json.dumps(ex, ensure_ascii=False)}`")
            out.append("")
    if card.get("duplicates"):
        out += ["## Duplicates", ""]
        for k, v in card["duplicates"].items():
            out.append(f"- {k}: `{json.dumps(v, ensure_ascii=False)}`")
        out.append("")
    if card.get("vocabulary"):
        out += ["## Vocabulary", ""]
        for k, v in card["vocabulary"].items():
            sample = json.dumps(v.get("sample", []), ensure_ascii=False)
            out.append(f"- {k}: size {v.get('size')}, sample {sample}")
        out.append("")
    if card.get("files"):
        out += ["## Files", ""] + _table(["file", "bytes", "sha256"], [
            [k, v["bytes"], v["sha256"]] for k, v in card["files"].items()])
    return "\n".join(out).rstrip() + "\n"
