"""What every bench ends with: a two-column table on stdout and its figures as JSON."""
from __future__ import annotations

import json


def print_rows(rows: list[tuple[str, object]]) -> None:
    """`name | value` lines, names left-aligned to the longest."""
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}} | {v}")


def write_json(result: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {path}")
