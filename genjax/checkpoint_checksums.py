"""Per-leaf checksums of a train state: what genjax/checkpoint.py stores with each save
and verifies at each restore (a flipped bit is a CorruptCheckpoint, not a silent resume).
"""
from __future__ import annotations

import functools

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


# meta["checksum_scheme"] of what a save writes; a checkpoint without that key (written
# before 2026-12-04) holds "legacy" sums, still verified as they were written.
SCHEME = "fmix32"
SCHEMES = ("fmix32", "legacy")


def _fmix32(h, xp):
    """MurmurHash3's finalizer: a bijection of uint32 that mixes every bit into every bit."""
    h = h ^ (h >> 16)
    h = h * xp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * xp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _sums(words, xp, scheme: str):
    i = xp.arange(words.size, dtype=xp.uint32)
    if scheme == "legacy":  # sums of raw words: blind to changes in multiples of 2^32 / w
        a, b = words, words * (i * xp.uint32(2654435761) + xp.uint32(1))
    else:  # word i hashed with a key of its position: a bijection of the word for each i,
        pos = _fmix32(i * xp.uint32(0x9E3779B9) + xp.uint32(0x27D4EB2F), xp)
        a = _fmix32(words + pos, xp)  # so one changed word always changes both sums
        b = _fmix32((words ^ xp.uint32(0x5BD1E995)) + pos * xp.uint32(3), xp)
    return xp.stack([xp.sum(a, dtype=xp.uint32), xp.sum(b, dtype=xp.uint32)])


def _fingerprint(tree, xp, scheme: str):
    if scheme not in SCHEMES:
        raise ValueError(f"checksum scheme {scheme!r}: this genjax knows {SCHEMES}")
    out, finite = {}, xp.asarray(True)
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out[jax.tree_util.keystr(path, simple=True, separator="/")] = _sums(
            _leaf_words(x, xp), xp, scheme)
        if jnp.issubdtype(x.dtype, jnp.inexact):
            finite = finite & xp.all(xp.isfinite(xp.asarray(x)))
    return out, finite


@functools.partial(jax.jit, static_argnames="scheme")
def fingerprint(tree, scheme: str = SCHEME) -> tuple[dict, jax.Array]:
    """Per leaf two uint32 checksums (sums mod 2^32 of hashed words: exact under any
    sharding or reduction order) and whether every float leaf is finite."""
    return _fingerprint(tree, jnp, scheme)


def host_fingerprint(tree, scheme: str = SCHEME) -> tuple[dict, np.ndarray]:
    """`fingerprint` computed in numpy (uint32 arithmetic wraps mod 2^32 as the jitted one
    does): no compilation, which on a CPU costs more than reading the arrays (1-3 s)."""
    with np.errstate(over="ignore"):
        return _fingerprint(tree, np, scheme)


def _on_this_host_cpu(tree) -> bool:
    """Every leaf is a numpy array or a jax.Array on CPU devices that this process holds."""
    return all(not isinstance(x, jax.Array) or (
        x.is_fully_addressable and all(d.platform == "cpu" for d in x.sharding.device_set))
        for x in jax.tree_util.tree_leaves(tree))


def checksums(state_dict, scheme: str = SCHEME) -> tuple[dict[str, list[int]], bool]:
    """({leaf path: [sum a, sum b]}, every float leaf finite): what a checkpoint stores
    and a restore verifies. In numpy where this process holds every array on CPU devices,
    else jitted (sharded arrays stay where they are); both give the same numbers."""
    sums, finite = (host_fingerprint(state_dict, scheme) if _on_this_host_cpu(state_dict)
                    else jax.device_get(fingerprint(state_dict, scheme)))
    return {k: [int(a), int(b)] for k, (a, b) in sums.items()}, bool(finite)
