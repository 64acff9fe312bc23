"""Where a run's checkpoints are: `init_from`-style paths to (workdir, step)."""
from __future__ import annotations

import os

from genjax.errors import UserError


def parse_init_from(path: str, key: str = "init_from") -> tuple[str, int | None]:
    """'W' or 'W/checkpoints' or 'W/checkpoints/<step>' -> (workdir, step|None) (of `key`)."""
    path = os.path.abspath(path.rstrip("/"))
    step = None
    if os.path.basename(path).isdigit() and not os.path.isdir(os.path.join(path, "checkpoints")):
        step, path = int(os.path.basename(path)), os.path.dirname(path)
    if os.path.basename(path) == "checkpoints":
        path = os.path.dirname(path)
    if not os.path.isdir(os.path.join(path, "checkpoints")):
        raise UserError(f"{key}={path!r}: no checkpoints/ directory there")
    return path, step
