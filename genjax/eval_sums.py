"""The one "sum eval batches, then finalize" of genjax: the loop's periodic eval,
`genjax.evaluate` and the likelihood evaluator all score a model with these two functions.

A family's `eval_fn` returns *sums* over a batch plus "count"; `sum_batches` adds them
over batches (reading each batch's sums before dispatching the next: many queued programs
with collectives can deadlock XLA's CPU thread pool, seen on 2 cores) and `finalize`
turns the totals into metrics (the family's `finalize_eval`, else sums / count).
"""
from __future__ import annotations

import inspect
from typing import Callable, Iterable

import jax

from genjax import assemble, families


def sum_batches(eval_step: Callable, params, model_state, batches: Iterable[dict],
                shard: Callable) -> dict[str, float]:
    """Totals of `eval_step(params, model_state, shard(batch))` over local numpy `batches`."""
    sums: dict[str, float] = {}
    for local in batches:
        out = jax.device_get(eval_step(params, model_state, shard(local)))
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    return sums


def eval_kwargs(data, split: str) -> dict:
    """data.eval_kwargs for `split` where it takes one (the LM's characters per token of
    that split, for bits/char), else for the data as a whole; {} if it has none."""
    fn = getattr(data, "eval_kwargs", None)
    if fn is None:
        return {}
    return fn(split) if "split" in inspect.signature(fn).parameters else fn()


def finalize(family, sums: dict, eval_kwargs: dict | None = None) -> dict:
    """Totals -> reported metrics ({} when no batch was seen)."""
    if not sums:
        return {}
    if families.has(family, "finalize_eval"):
        return family.finalize_eval(dict(sums), **(eval_kwargs or {}))
    sums = dict(sums)
    count = max(sums.pop("count", 1.0), 1.0)
    return {k: v / count for k, v in sums.items()}


def evaluate(parts, params, model_state, batches: Iterable[dict],
             eval_kwargs: dict | None = None) -> dict:
    """Metrics of `params` over `batches` with an assembled model (genjax/assemble.py)."""
    sums = sum_batches(parts.eval_step, params, model_state, batches,
                       lambda b: assemble.shard_batch(parts, b))
    return finalize(parts.family, sums, eval_kwargs)
