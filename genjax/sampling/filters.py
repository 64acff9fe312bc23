"""Per-token sampling filters of genjax/sampling/lm.py, on logits [..., V] (float32).

In order: ids >= valid_vocab masked; repetition penalty; then argmax (greedy), or
temperature, top-k, top-p, min-p and a draw. `Switches` (static) says which of them a
compiled decode holds; `Sampling` (traced) holds their values.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


# The smallest temperature a draw takes (0 aside: argmax): logits / 1e-39 overflow float32
# to inf, and the draw and its log-prob become NaN.
MIN_TEMPERATURE = 1e-6


def top_k_mask(logits: jax.Array, k: int) -> jax.Array:
    """logits [..., V] with all but the k largest set to -inf; k <= 0 (or >= V) = off."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth_value = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth_value, -jnp.inf, logits)


def top_p_mask(logits: jax.Array, p: float | jax.Array) -> jax.Array:
    """logits [..., V] outside the nucleus set to -inf; p >= 1 = off.

    The nucleus is the smallest set of most likely tokens whose probability is >= p; it
    always holds the top token (Holtzman et al. 2019). The cut is by logit value, so
    tokens tied with the one that crosses p are all kept (Hugging Face keeps one of them).
    """
    sorted_desc = -jnp.sort(-logits, axis=-1)
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs  # probability of strictly better ranks
    keep = mass_before < p
    threshold = jnp.min(jnp.where(keep, sorted_desc, jnp.inf), axis=-1, keepdims=True)
    return jnp.where((p >= 1.0) | (logits >= threshold), logits, -jnp.inf)


def min_p_mask(logits: jax.Array, min_p: float | jax.Array) -> jax.Array:
    """logits [..., V] of tokens with prob < min_p * max prob set to -inf; min_p <= 0 = off.

    prob_i >= min_p * prob_max  <=>  logit_i >= logit_max + log(min_p): no softmax needed.
    """
    floor = jnp.max(logits, axis=-1, keepdims=True) + jnp.log(jnp.maximum(min_p, 0.0))
    return jnp.where(logits >= floor, logits, -jnp.inf)


def repetition_penalty(logits: jax.Array, seen: jax.Array, penalty: float | jax.Array):
    """CTRL penalty on the `seen` (bool, same shape) tokens; penalty 1 = off, > 1 discourages."""
    penalized = jnp.where(logits > 0, logits / penalty, logits * penalty)
    return jnp.where(seen, penalized, logits)


def mask_invalid(logits: jax.Array, valid_vocab: int | jax.Array | None) -> jax.Array:
    """logits [..., V] with ids >= valid_vocab (vocab padding) set to -inf; None = off."""
    if valid_vocab is None:
        return logits
    return jnp.where(jnp.arange(logits.shape[-1]) >= valid_vocab, -jnp.inf, logits)


def next_token_logps(logits_BxTxV: jax.Array, seq_BxL: jax.Array,
                     valid_vocab: int | jax.Array | None = None) -> jax.Array:
    """log-prob float32[B, L - 1] of each next token of seq under the logits of
    seq[:, :-1], over the ids below valid_vocab (None: all): the distribution the decoder
    draws from (a padded vocabulary's extra ids take no mass)."""
    logits = mask_invalid(logits_BxTxV.astype(jnp.float32), valid_vocab)
    target = jnp.take_along_axis(logits, seq_BxL[:, 1:, None], axis=-1)[..., 0]
    return target - jax.nn.logsumexp(logits, axis=-1)


class Switches(NamedTuple):
    """The filters a decode compiles (static); their values live in `Sampling`."""
    sample: bool       # temperature > 0: draw from the tempered logits; else argmax
    repetition: bool   # repetition_penalty != 1
    top_k: int         # 0 = off
    top_p: bool        # top_p < 1
    min_p: bool        # min_p > 0


def switches(temperature=1.0, top_k: int = 0, top_p=1.0, min_p=0.0,
             repetition_penalty=1.0) -> Switches:
    """The `Switches` of concrete sampling values (defaults: plain sampling, no filters)."""
    return Switches(bool(temperature > 0), bool(repetition_penalty != 1.0), int(top_k),
                    bool(top_p < 1.0), bool(min_p > 0.0))


class Sampling(NamedTuple):
    """Traced sampling parameters (one value for the whole batch)."""
    temperature: jax.Array         # f32[]; 0 = greedy
    top_p: jax.Array               # f32[]; 1 = off
    min_p: jax.Array               # f32[]; 0 = off
    repetition_penalty: jax.Array  # f32[]; 1 = off
    valid_vocab: jax.Array         # i32[]; ids >= this are never emitted
    stop_ids_K: jax.Array          # i32[K]; K = 0: no stop tokens
    pad_id: jax.Array              # i32[]; written after a row's stop token


def filtered_logits(logits_BxV, seen_BxV, s: Sampling, sw: Switches) -> jax.Array:
    """The logits a token is taken from: greedy (not sw.sample) takes their argmax,
    sampling draws from them. Only the filters switched on are in the program."""
    x = mask_invalid(logits_BxV.astype(jnp.float32), s.valid_vocab)
    if sw.repetition:
        x = repetition_penalty(x, seen_BxV, s.repetition_penalty)
    if not sw.sample:
        return x
    tempered = top_k_mask(x / s.temperature, sw.top_k)
    if sw.top_p:
        tempered = top_p_mask(tempered, s.top_p)
    return min_p_mask(tempered, s.min_p) if sw.min_p else tempered


def sample_token(keys_B, logits_BxV, seen_BxV, s: Sampling, sw: Switches) -> jax.Array:
    """One int32 token per row: argmax if not sw.sample, else a draw with key keys_B[b]."""
    return sample_token_logp(keys_B, logits_BxV, seen_BxV, s, sw)[0]


def sample_token_logp(keys_B, logits_BxV, seen_BxV, s: Sampling, sw: Switches):
    """(token int32[B], its log-probability float32[B] under the distribution drawn from)."""
    dist_BxV = filtered_logits(logits_BxV, seen_BxV, s, sw)
    if sw.sample:
        token_B = jax.vmap(jax.random.categorical)(keys_B, dist_BxV).astype(jnp.int32)
    else:
        token_B = jnp.argmax(dist_BxV, axis=-1).astype(jnp.int32)
    logp_B = jnp.take_along_axis(jax.nn.log_softmax(dist_BxV, axis=-1), token_B[:, None], -1)
    return token_B, logp_B[:, 0]
