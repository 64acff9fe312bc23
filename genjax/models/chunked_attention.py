"""Memory-efficient causal attention in plain XLA: query blocks, recomputed in backward.

  out_BxTxNxH = attention(q_BxTxNxH, k_BxTxNxH, v_BxTxNxH, chunk=C, valid_BxT=None)

Query t attends to keys s <= t (causal) that are valid (valid_BxT, True = real token;
None = all). The [T, T] score matrix never exists: the forward walks T/C query blocks,
each scoring its C queries against all keys ([B, N, C, T] at a time, exact softmax per
row), and keeps only the output and the per-row log-sum-exp; the backward (custom VJP,
the FlashAttention-2 recurrences of Dao 2023) recomputes each block's probabilities from
them. Memory O(B N C T) instead of O(B N T^2); the math equals softmax(q k^T / sqrt(H)) v.
Masked scores get the same large finite negative as jax.nn.dot_product_attention, so a
row with no valid key averages all values, as XLA's does (and sends no gradient to q or
k). A length that C does not divide is padded to the next multiple of C (the padding keys
lie after every real query, so the causal mask hides them).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from genjax.errors import ConfigError

_F32 = jnp.float32


def _blocks(x, chunk):
    """[B, T, ...] -> [T/C, B, C, ...]."""
    B, T = x.shape[:2]
    return jnp.moveaxis(x.reshape(B, T // chunk, chunk, *x.shape[2:]), 1, 0)


def _unblocks(x):
    """[T/C, B, C, ...] -> [B, T, ...]."""
    x = jnp.moveaxis(x, 0, 1)
    return x.reshape(x.shape[0], -1, *x.shape[3:])


_MASKED = -0.7 * float(jnp.finfo(_F32).max)


def _scores(q_BxCxNxH, k_BxTxNxH, start, valid_BxT):
    """(Scaled, masked scores float32[B, N, C, T] of one query block starting at `start`,
    the kept-entry mask bool[B, N, C, T])."""
    C, T, H = q_BxCxNxH.shape[1], k_BxTxNxH.shape[1], q_BxCxNxH.shape[-1]
    s = jnp.einsum("bcnh,btnh->bnct", q_BxCxNxH, k_BxTxNxH, preferred_element_type=_F32)
    s = s * (1.0 / H ** 0.5)
    keep_CxT = jnp.arange(T)[None, :] <= (start + jnp.arange(C))[:, None]
    keep = keep_CxT[None, None] & valid_BxT[:, None, None, :]
    return jnp.where(keep, s, _MASKED), keep


def _probs(s_BxNxCxT, lse_BxNxC, length: int):
    """softmax rows from their log-sum-exp. A row with no kept entry has every score and
    its lse equal to _MASKED (lse = _MASKED + log T rounds back to it in float32): exp(0)
    = 1 per key, so it is replaced by 1/length on the `length` real keys (not the padding
    after them): the average XLA's softmax takes."""
    p = jnp.exp(s_BxNxCxT - lse_BxNxC[..., None])
    empty = lse_BxNxC[..., None] < 0.5 * _MASKED
    uniform_T = jnp.where(jnp.arange(s_BxNxCxT.shape[-1]) < length, 1.0 / length, 0.0)
    return jnp.where(empty, uniform_T, p)


def _forward(q, k, v, valid, blocks):
    chunk, length = blocks
    def block(args):
        q_blk, start = args
        s_BxNxCxT, _ = _scores(q_blk, k, start, valid)
        lse_BxNxC = jax.nn.logsumexp(s_BxNxCxT, axis=-1)
        p = _probs(s_BxNxCxT, lse_BxNxC, length)
        o = jnp.einsum("bnct,btnh->bcnh", p.astype(v.dtype), v, preferred_element_type=_F32)
        return o.astype(q.dtype), lse_BxNxC
    starts = jnp.arange(q.shape[1] // chunk) * chunk
    o_blocks, lse_blocks = jax.lax.map(block, (_blocks(q, chunk), starts))
    return _unblocks(o_blocks), lse_blocks  # lse: [T/C, B, N, C]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attention(q, k, v, valid, blocks):
    """blocks: (chunk C, length T before padding to a multiple of C)."""
    return _forward(q, k, v, valid, blocks)[0]


def _attention_fwd(q, k, v, valid, blocks):
    o, lse = _forward(q, k, v, valid, blocks)
    return o, (q, k, v, valid, o, lse)


def _attention_bwd(blocks, res, do):
    chunk, length = blocks
    q, k, v, valid, o, lse_blocks = res
    H = q.shape[-1]
    # D = rowsum(dO * O): the softmax Jacobian's correction term, [T/C, B, N, C].
    d_blocks = jnp.moveaxis(_blocks(jnp.sum(do.astype(_F32) * o.astype(_F32), -1), chunk),
                            -1, -2)

    def block(carry, args):
        dk, dv = carry
        q_blk, do_blk, lse, d, start = args
        s, keep = _scores(q_blk, k, start, valid)
        p = _probs(s, lse, length)  # [B, N, C, T]
        dv = dv + jnp.einsum("bnct,bcnh->btnh", p, do_blk.astype(_F32))
        dp = jnp.einsum("bcnh,btnh->bnct", do_blk, v, preferred_element_type=_F32)
        # a masked score is a constant: no gradient (p is 0 there, but 1/T in an empty row)
        ds = jnp.where(keep, p * (dp - d[..., None]) * (1.0 / H ** 0.5), 0.0)
        dq_blk = jnp.einsum("bnct,btnh->bcnh", ds, k.astype(_F32))
        dk = dk + jnp.einsum("bnct,bcnh->btnh", ds, q_blk.astype(_F32))
        return (dk, dv), dq_blk

    zeros = jnp.zeros(k.shape, _F32), jnp.zeros(v.shape, _F32)
    starts = jnp.arange(q.shape[1] // chunk) * chunk
    (dk, dv), dq_blocks = jax.lax.scan(
        block, zeros, (_blocks(q, chunk), _blocks(do, chunk), lse_blocks, d_blocks, starts))
    return (_unblocks(dq_blocks).astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None)


_attention.defvjp(_attention_fwd, _attention_bwd)


def attention(q_BxTxNxH, k_BxTxNxH, v_BxTxNxH, *, chunk: int, valid_BxT=None):
    """Causal self-attention in query blocks of `chunk` (T itself when T <= chunk); T is
    padded to a multiple of the chunk."""
    B, T = q_BxTxNxH.shape[:2]
    if int(chunk) <= 0:
        raise ConfigError(f"attention_chunk={chunk} must be > 0")
    chunk = min(int(chunk), T)
    valid = jnp.ones((B, T), bool) if valid_BxT is None else valid_BxT.astype(bool)
    pad = -T % chunk
    if pad:
        widths = ((0, 0), (0, pad), (0, 0), (0, 0))
        q_BxTxNxH, k_BxTxNxH, v_BxTxNxH = (jnp.pad(x, widths) for x in
                                           (q_BxTxNxH, k_BxTxNxH, v_BxTxNxH))
        valid = jnp.pad(valid, ((0, 0), (0, pad)))
    return _attention(q_BxTxNxH, k_BxTxNxH, v_BxTxNxH, valid, (chunk, T))[:, :T]
