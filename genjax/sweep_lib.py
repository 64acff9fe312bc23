"""Sweeps as data: lists of override dicts, built with products, zips and seeds.

A config file may define, next to `get_config(arg)`,

    def get_sweep(add, arg):
        '''Sweeps (--sweep=...): lr, norm.'''
        if arg == "lr":
            add(sweep_lib.sweep("optim.lr", [1e-3, 3e-3, 1e-2]))
        elif arg == "norm":
            add(sweep_lib.product(sweep_lib.sweep("model.norm", ["layernorm", "rmsnorm"]),
                                  sweep_lib.sweep("model.pos", ["learned", "rotary"])))
        else:
            raise ValueError(f"unknown sweep {arg!r}: lr | norm")

A run is a dict of dotted config keys -> values, exactly what `--config.<key>=<value>`
would set. `add` takes runs, lists of runs, or keyword overrides (`add(**{"optim.lr": 1e-3})`).
Seeds are usually added by the sweep tool (`--seeds=3`); a sweep that sets "seed" itself
(e.g. `product(..., seeds(3))`) keeps its own.
"""
from __future__ import annotations

import hashlib
import itertools
from typing import Any, Iterable, Sequence

Run = dict[str, Any]


def sweep(key: str, values: Iterable[Any]) -> list[Run]:
    """One key over values: [{key: v} for v in values]."""
    return [{key: v} for v in values]


def fixed(key: str, value: Any) -> list[Run]:
    """A key every run of a product gets (a one-element sweep)."""
    return [{key: value}]


def product(*sweeps: Sequence[Run]) -> list[Run]:
    """Every combination (the first sweep varies slowest)."""
    out = []
    for combo in itertools.product(*sweeps):
        out.append(_merge(combo))
    return out


def zipit(*sweeps: Sequence[Run]) -> list[Run]:
    """Runs side by side (lr with its warmup, say); all sweeps must have the same length."""
    lengths = {len(s) for s in sweeps}
    if len(lengths) > 1:
        raise ValueError(f"zipit: sweeps of different lengths {sorted(lengths)}")
    return [_merge(combo) for combo in zip(*sweeps)]


def chain(*sweeps: Sequence[Run]) -> list[Run]:
    """One sweep after another (e.g. a baseline plus variants)."""
    return [dict(run) for s in sweeps for run in s]


def seeds(n: int, start: int = 0) -> list[Run]:
    """[{"seed": start}, ..., {"seed": start + n - 1}]."""
    return sweep("seed", range(start, start + n))


def _merge(runs: Iterable[Run]) -> Run:
    out: Run = {}
    for run in runs:
        for k, v in run.items():
            if k in out and out[k] != v:
                raise ValueError(f"key {k!r} set twice in one run ({out[k]!r} and {v!r})")
            out[k] = v
    return out


class Collector:
    """The `add` handed to `get_sweep`: collects runs in order, drops exact duplicates."""

    def __init__(self):
        self.runs: list[Run] = []

    def __call__(self, *runs: Run | Sequence[Run], **overrides: Any) -> None:
        items: list[Run] = []
        for r in runs:
            items.extend([r] if isinstance(r, dict) else list(r))
        if overrides:
            items.append(dict(overrides))
        for run in items:
            if not isinstance(run, dict):
                raise TypeError(f"a sweep run must be a dict of overrides, got {run!r}")
            if run not in self.runs:
                self.runs.append(dict(run))


def collect(get_sweep, arg: str) -> list[Run]:
    """Runs `get_sweep(add, arg)` and returns the runs it added."""
    add = Collector()
    get_sweep(add, arg)
    if not add.runs:
        raise ValueError(f"sweep {arg!r} added no runs")
    return add.runs


# ------------------------------------------------------------------ names and flags
def format_value(v: Any) -> str:
    """How a value is written on the command line and in directory names."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (tuple, list)):
        return repr(tuple(v))  # parsed back by ml_collections as a Python literal
    return str(v)


def run_name(run: Run) -> str:
    """Readable directory name: "optim.lr=0.001,model.norm=rmsnorm" ("base" if empty).
    A name that had to lose "/" or spaces gets 8 hex digits of the settings' hash, so
    "a/b" and "a_b" stay two runs."""
    parts = [f"{k}={format_value(v)}" for k, v in run.items() if k != "seed"]
    raw = ",".join(parts) or "base"
    name = raw.replace("/", "_").replace(" ", "")
    if name != raw:
        name += "~" + hashlib.sha256(raw.encode("utf-8")).hexdigest()[:8]
    return name


def override_flags(run: Run) -> list[str]:
    return [f"--config.{k}={format_value(v)}" for k, v in run.items()]
