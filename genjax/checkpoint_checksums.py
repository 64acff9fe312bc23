"""Per-leaf checksums of a train state: what genjax/checkpoint.py stores with each save
and verifies at each restore (a flipped bit is a CorruptCheckpoint, not a silent resume).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _leaf_words(x, xp):
    """The raw bits of `x` as uint32 words (exact; any bit flip changes them), computed
    with `xp` = jax.numpy (traced) or numpy (arrays this process holds whole)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if xp is np:  # the dtype jit would see (a numpy float64 leaf is float32 there)
        x = np.ascontiguousarray(x, dtype=jax.dtypes.canonicalize_dtype(np.asarray(x).dtype))
    if x.dtype == xp.bool_:
        x = x.astype(xp.uint8)
    unsigned = {1: xp.uint8, 2: xp.uint16, 4: xp.uint32, 8: xp.uint32}[x.dtype.itemsize]
    bits = x.view(unsigned) if xp is np else jax.lax.bitcast_convert_type(x, unsigned)
    return bits.astype(xp.uint32).reshape(-1)


def _fingerprint(tree, xp):
    out, finite = {}, xp.asarray(True)
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        words = _leaf_words(x, xp)
        weights = xp.arange(words.size, dtype=xp.uint32) * xp.uint32(2654435761) + xp.uint32(1)
        out[jax.tree_util.keystr(path, simple=True, separator="/")] = xp.stack(
            [xp.sum(words, dtype=xp.uint32), xp.sum(words * weights, dtype=xp.uint32)])
        if jnp.issubdtype(x.dtype, jnp.inexact):
            finite = finite & xp.all(xp.isfinite(xp.asarray(x)))
    return out, finite


@jax.jit
def fingerprint(tree) -> tuple[dict, jax.Array]:
    """Per leaf two uint32 checksums (plain and position-weighted sums of its bits, mod 2^32:
    exact under any sharding/reduction order) and whether every float leaf is finite."""
    return _fingerprint(tree, jnp)


def host_fingerprint(tree) -> tuple[dict, np.ndarray]:
    """`fingerprint` computed in numpy (uint32 sums wrap mod 2^32 as the jitted ones do):
    no compilation, which on a CPU costs more than reading the arrays (1-3 s per state)."""
    return _fingerprint(tree, np)


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
