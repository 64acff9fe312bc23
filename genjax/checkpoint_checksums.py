"""Per-leaf checksums of a train state: what genjax/checkpoint.py stores with each save
and verifies at each restore (a flipped bit is a CorruptCheckpoint, not a silent resume).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _leaf_words(x: jax.Array) -> jax.Array:
    """The raw bits of `x` as uint32 words (exact; any bit flip changes them)."""
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    width = x.dtype.itemsize
    if width == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[width]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).reshape(-1)


@jax.jit
def fingerprint(tree) -> tuple[dict, jax.Array]:
    """Per leaf two uint32 checksums (plain and position-weighted sums of its bits, mod 2^32:
    exact under any sharding/reduction order) and whether every float leaf is finite."""
    out, finite = {}, jnp.array(True)
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        words = _leaf_words(x)
        weights = jnp.arange(words.size, dtype=jnp.uint32) * jnp.uint32(2654435761) + 1
        out[jax.tree_util.keystr(path, simple=True, separator="/")] = jnp.stack(
            [jnp.sum(words, dtype=jnp.uint32), jnp.sum(words * weights, dtype=jnp.uint32)])
        if jnp.issubdtype(x.dtype, jnp.inexact):
            finite = finite & jnp.all(jnp.isfinite(x))
    return out, finite


def _host_words(x) -> np.ndarray:
    """`_leaf_words` in numpy, for arrays this process holds whole (same bits, same order)."""
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    a = np.asarray(x)
    a = np.ascontiguousarray(a, dtype=jax.dtypes.canonicalize_dtype(a.dtype))  # as jit would
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    if a.dtype.itemsize == 8:
        return a.view(np.uint32).reshape(-1)
    unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32}[a.dtype.itemsize]
    return a.view(unsigned).astype(np.uint32).reshape(-1)


def host_fingerprint(tree) -> tuple[dict, np.ndarray]:
    """`fingerprint` computed in numpy (uint32 sums wrap mod 2^32 as the jitted ones do):
    no compilation, which on a CPU costs more than reading the arrays (1-3 s per state)."""
    out, finite = {}, True
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        words = _host_words(x)
        weights = np.arange(words.size, dtype=np.uint32) * np.uint32(2654435761) + np.uint32(1)
        out[jax.tree_util.keystr(path, simple=True, separator="/")] = np.stack(
            [np.sum(words, dtype=np.uint32), np.sum(words * weights, dtype=np.uint32)])
        if jnp.issubdtype(x.dtype, jnp.inexact):
            finite = finite and bool(np.isfinite(np.asarray(x)).all())
    return out, np.asarray(finite)


def _on_this_host_cpu(tree) -> bool:
    """Every leaf is a numpy array or a jax.Array on CPU devices that this process holds."""
    return all(not isinstance(x, jax.Array) or (
        x.is_fully_addressable and all(d.platform == "cpu" for d in x.sharding.device_set))
        for x in jax.tree_util.tree_leaves(tree))


def checksums(state_dict) -> tuple[dict[str, list[int]], bool]:
    """({leaf path: [plain, weighted]}, every float leaf finite): what a checkpoint stores
    and a restore verifies. In numpy where this process holds every array on CPU devices,
    else jitted (sharded arrays stay where they are); both give the same numbers."""
    sums, finite = (host_fingerprint(state_dict) if _on_this_host_cpu(state_dict)
                    else jax.device_get(fingerprint(state_dict)))
    return {k: [int(a), int(b)] for k, (a, b) in sums.items()}, bool(finite)
