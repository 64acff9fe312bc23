"""Transformer params between the unscanned and scanned (`scan_layers`) layouts.

  unscanned: {"attn_0": {...}, "ln_attn_0": ..., "mlp_0": ..., "ln_mlp_0": ..., "attn_1": ...}
  scanned:   {"layers": {"attn": {...}, "ln_attn": ..., "mlp": ..., "ln_mlp": ...}}
             every leaf with a leading layer axis [L, ...] (logical name "layers")

`stack` / `unstack` convert every params-shaped dict inside any pytree (variables, a
TrainState with its optimizer moments and EMA), so a run can switch layout; both are
copies, bit for bit. Partitioned boxes (flax logical names) gain / lose "layers".
`python -m genjax.scan_convert` applies them to a checkpoint.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from genjax.models.transformer import BLOCK_PARTS, SCAN_NAME


def is_unscanned(d) -> bool:
    """A params dict with per-layer entries ("attn_0", ...; LoRA adapters may hold only
    "mlp_0")."""
    return isinstance(d, Mapping) and any(f"{p}_0" in d for p in BLOCK_PARTS)


def is_scanned(d) -> bool:
    return (isinstance(d, Mapping) and isinstance(d.get(SCAN_NAME), Mapping)
            and any(p in d[SCAN_NAME] for p in BLOCK_PARTS))


def layout(tree) -> str | None:
    """"scanned" | "unscanned" | None: the layout of the first params dict found."""
    for d in jax.tree_util.tree_leaves(tree, is_leaf=lambda x: is_unscanned(x) or is_scanned(x)):
        if is_unscanned(d):
            return "unscanned"
        if is_scanned(d):
            return "scanned"
    return None


def _is_box(x) -> bool:
    return isinstance(x, nn.Partitioned)


def _stack_leaves(*xs):
    if _is_box(xs[0]):
        return xs[0].replace(value=_stack_leaves(*(x.value for x in xs)),
                             names=(SCAN_NAME, *xs[0].names))
    if isinstance(xs[0], np.ndarray):
        return np.stack(xs)
    return jnp.stack(xs)


def _unstack_leaf(x, i):
    if _is_box(x):
        return x.replace(value=x.value[i], names=tuple(x.names[1:]))
    return x[i]


def _parts(d: Mapping) -> list[str]:
    """The block parts a params dict holds per layer: all four for a model, fewer for LoRA
    adapters (no norm scales)."""
    present = d[SCAN_NAME] if is_scanned(d) else {k[:-2] for k in d if k.endswith("_0")}
    return [p for p in BLOCK_PARTS if p in present]


def _check_same_shapes(d: Mapping, num_layers: int) -> None:
    """Layers of different shapes cannot share one scanned body: one line naming the first."""
    shape = lambda x: tuple((x.value if _is_box(x) else x).shape)  # noqa: E731
    for part in _parts(d):
        first = jax.tree_util.tree_flatten_with_path(d[f"{part}_0"], is_leaf=_is_box)[0]
        for i in range(1, num_layers):
            for (path, a), (_, b) in zip(first, jax.tree_util.tree_flatten_with_path(
                    d[f"{part}_{i}"], is_leaf=_is_box)[0]):
                if shape(a) != shape(b):
                    raise ValueError(
                        f"{part}_{i}{jax.tree_util.keystr(path)} has shape {shape(b)} but "
                        f"{part}_0's is {shape(a)}: scan_layers needs identical layers")


def _stack_dict(d: Mapping, num_layers: int) -> dict:
    _check_same_shapes(d, num_layers)
    parts = _parts(d)
    out = {k: v for k, v in d.items()
           if not any(k == f"{p}_{i}" for p in parts for i in range(num_layers))}
    out[SCAN_NAME] = {
        part: jax.tree_util.tree_map(_stack_leaves,
                                     *[d[f"{part}_{i}"] for i in range(num_layers)],
                                     is_leaf=_is_box)
        for part in parts}
    return out


def _unstack_dict(d: Mapping) -> dict:
    stacked = d[SCAN_NAME]
    leaves = jax.tree_util.tree_leaves(stacked, is_leaf=_is_box)
    num_layers = (leaves[0].value if _is_box(leaves[0]) else leaves[0]).shape[0]
    out = {k: v for k, v in d.items() if k != SCAN_NAME}
    for part in _parts(d):
        for i in range(num_layers):
            out[f"{part}_{i}"] = jax.tree_util.tree_map(lambda x: _unstack_leaf(x, i),
                                                        stacked[part], is_leaf=_is_box)
    return out


def _num_layers(d: Mapping) -> int:
    part, n = _parts(d)[0], 0
    while f"{part}_{n}" in d:
        n += 1
    return n


def stack(tree, num_layers: int | None = None):
    """Every unscanned params dict in `tree` -> scanned (layers stacked on axis 0)."""
    return jax.tree_util.tree_map(
        lambda d: _stack_dict(d, num_layers or _num_layers(d)) if is_unscanned(d) else d,
        tree, is_leaf=is_unscanned)


def unstack(tree):
    """Every scanned params dict in `tree` -> unscanned (one entry per layer)."""
    return jax.tree_util.tree_map(lambda d: _unstack_dict(d) if is_scanned(d) else d,
                                  tree, is_leaf=is_scanned)


def convert(tree, to: str):
    """to="scanned" | "unscanned"."""
    if to not in ("scanned", "unscanned"):
        raise ValueError(f"to={to!r}: choose scanned or unscanned")
    return stack(tree) if to == "scanned" else unstack(tree)


def convert_like(tree, target):
    """`tree` with each params dict in the layout of its counterpart in `target` (a tree of
    the same structure above the params dicts, e.g. the abstract TrainState of the new
    config): a frozen model of its own config (a distillation teacher, an RL reward model)
    keeps its layout while the trained model's params, moments and EMA switch."""
    def follow(d, t):
        if not (is_unscanned(d) or is_scanned(d)) or layout(t) in (None, layout(d)):
            return d
        return convert(d, layout(t))
    return jax.tree_util.tree_map(follow, tree, target,
                                  is_leaf=lambda x: is_unscanned(x) or is_scanned(x))
