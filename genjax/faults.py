"""Fault injection for the reliability tests (tests/test_faults.py); inert unless set.

GENJAX_FAULTS is a comma-separated list of `<fault>@<n>`:
  kill@N             SIGKILL after step N was dispatched (and its save started, if due)
  kill_mid_save@N    SIGKILL after the async save of step N started, before it is finalised
  kill_after_save@N  SIGKILL once the save of step N is finalised
  term@N             SIGTERM (a preemption notice) after step N was dispatched
  nan@K              batch K (0-based count of batches drawn) is poisoned: float leaves NaN,
                     integer leaves out of range (a token id past the vocabulary embeds as NaN)
  drop@K             batch K is discarded as if on_nan=rollback had marked it (reference runs)
"""
from __future__ import annotations

import os
import signal

import numpy as np

ENV = "GENJAX_FAULTS"
KINDS = ("kill", "kill_mid_save", "kill_after_save", "term", "nan", "drop")


def parse(spec: str) -> dict[str, set[int]]:
    """'kill@3,nan@4,nan@5' -> {'kill': {3}, 'nan': {4, 5}}; unknown kinds fail."""
    out: dict[str, set[int]] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        kind, _, n = item.partition("@")
        if kind not in KINDS or not n.lstrip("-").isdigit():
            raise ValueError(f"{ENV}: bad item {item!r}; use <kind>@<int>, kind in {KINDS}")
        out.setdefault(kind, set()).add(int(n))
    return out


def active() -> dict[str, set[int]]:
    """Read at every call, so tests can set the variable in-process."""
    return parse(os.environ.get(ENV, ""))


def at(kind: str, n: int) -> bool:
    return n in active().get(kind, ())


def kill_if(kind: str, step: int) -> None:
    """SIGKILL this process if `kind@step` is set (no cleanup, no atexit: a real crash);
    kind "term": SIGTERM, which the handler turns into a checkpoint and exit 143."""
    if at(kind, step):
        os.kill(os.getpid(), signal.SIGTERM if kind == "term" else signal.SIGKILL)


def poison_if(ordinal: int, batch: dict) -> dict:
    """The batch, poisoned if `nan@ordinal` is set."""
    if not at("nan", ordinal):
        return batch

    def bad(x):
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.inexact):
            return np.full_like(x, np.nan)
        return np.full_like(x, np.iinfo(x.dtype).max // 2)
    return {k: bad(v) for k, v in batch.items()}


def dropped() -> set[int]:
    return set(active().get("drop", ()))
