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
    """A grain iterator whose state {key: grain's next_index, **identity} is checked by
    `set_state`; `legacy`: states saved without the identity still resume."""

    def __init__(self, iterator, identity: dict[str, Any], *, key: str, legacy: bool):
        self._it, self._identity = iterator, dict(identity)
        self._key, self._legacy = key, legacy

    def __iter__(self) -> "GrainPosition":
        return self

    def __next__(self):
        return next(self._it)

    def get_state(self) -> dict[str, Any]:
        return {self._key: int(self._it.get_state()["next_index"]), **self._identity}

    def set_state(self, state: dict[str, Any]) -> None:
        check(state, self._identity, legacy=self._legacy)
        self._it.set_state({"next_index": int(state[self._key])})


def positioned(dataset: grain.IterDataset, identity: dict[str, Any], *,
               key: str = "next_index", legacy: bool = True) -> GrainPosition:
    """iter(dataset) with its settings in its state. The defaults keep grain's own state
    key and accept its bare {"next_index": k}, as the LM and preference streams saved it
    before they recorded their settings."""
    return GrainPosition(iter(dataset), identity, key=key, legacy=legacy)
