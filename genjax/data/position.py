"""A training stream's saved position, and the settings it only makes sense with.

A checkpoint stores the data iterator's position (`get_state()`, JSON) next to the
settings that define the stream (seed, global batch, window length, examples): batch k
of one stream is not batch k of another, so a resume under other settings would train on
a different sequence of examples without a word. `check` refuses that in one line.
The position is the same for any number of processes (each takes its slice of the same
global batches), so the process count is not one of the settings.
"""
from __future__ import annotations

from typing import Any

import grain

from genjax.errors import UserError


def check(state: dict[str, Any], identity: dict[str, Any], *, legacy: bool = False) -> None:
    """UserError (one line) unless `state` was saved with `identity`'s settings. `legacy`:
    a key missing from `state` (saved before this module recorded it) is not a mismatch."""
    diff = [f"{k} {state.get(k)!r} -> {v!r}" for k, v in identity.items()
            if (k in state or not legacy) and state.get(k) != v]
    if diff:
        raise UserError("the checkpoint's data position belongs to another stream (saved -> "
                        f"now: {', '.join(diff)}): resume with the saved settings, or start "
                        "a new workdir from this one with --config.init_from")


class GrainPosition:
    """A grain iterator whose state also holds `identity` (checked by `set_state`);
    states saved as grain's bare {"next_index": k} still resume (`legacy`)."""

    def __init__(self, iterator, identity: dict[str, Any]):
        self._it, self._identity = iterator, dict(identity)

    def __iter__(self) -> "GrainPosition":
        return self

    def __next__(self):
        return next(self._it)

    def get_state(self) -> dict[str, Any]:
        return {"next_index": int(self._it.get_state()["next_index"]), **self._identity}

    def set_state(self, state: dict[str, Any]) -> None:
        check(state, self._identity, legacy=True)
        self._it.set_state({"next_index": int(state["next_index"])})


def positioned(dataset: grain.IterDataset, identity: dict[str, Any]) -> GrainPosition:
    """iter(dataset) with its settings in its state."""
    return GrainPosition(iter(dataset), identity)
