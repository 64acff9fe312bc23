"""JSON Lines: one object per line, blank lines skipped, a bad line named in one error."""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from genjax.errors import UserError


def records(path: str, lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """(1-based line number, decoded value) per non-blank line of `path`'s `lines`;
    UserError "PATH: line N is not valid JSON (why)" at the first bad one."""
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: line {i} is not valid JSON ({e.msg})") from None
        except RecursionError:  # the decoder recurses once per nested [ or {
            raise UserError(f"{path}: line {i} nests its JSON too deeply to read") from None
