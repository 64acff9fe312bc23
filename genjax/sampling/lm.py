"""Jitted KV-cache decoding for genjax.models.transformer: one compiled call per request.

  tokens_BxN = generate(model, params, prompts_BxP, prompt_lengths_B, rng=key,
                        max_new_tokens=N, temperature=0.8, top_k=40, top_p=0.95)

`params` is the "params" collection (what goes into model.apply({"params": params})).
Prompts are right-padded; row b's prompt is prompts_BxP[b, :prompt_lengths_B[b]]. The
whole padded prompt is prefilled in one forward pass, then a lax.scan feeds one token
per row at that row's own position. Padding K/V sits in slots above each row's position,
where the causal-by-position mask never looks, and is overwritten as decoding advances.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from genjax.models.transformer import Transformer, init_cache


# ----------------------------------------------------------------------------- filters
def top_k_mask(logits: jax.Array, k: int) -> jax.Array:
    """logits [..., V] with all but the k largest set to -inf; k <= 0 (or >= V) = off."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth_value = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth_value, -jnp.inf, logits)


def top_p_mask(logits: jax.Array, p: float | jax.Array) -> jax.Array:
    """logits [..., V] outside the nucleus set to -inf; p >= 1 = off.

    The nucleus is the smallest set of most likely tokens whose probability is >= p; it
    always holds the top token (Holtzman et al. 2019).
    """
    sorted_desc = -jnp.sort(-logits, axis=-1)
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs  # probability of strictly better ranks
    keep = mass_before < p
    threshold = jnp.min(jnp.where(keep, sorted_desc, jnp.inf), axis=-1, keepdims=True)
    return jnp.where((p >= 1.0) | (logits >= threshold), logits, -jnp.inf)


def mask_invalid(logits: jax.Array, valid_vocab: int | jax.Array | None) -> jax.Array:
    """logits [..., V] with ids >= valid_vocab (vocab padding) set to -inf; None = off."""
    if valid_vocab is None:
        return logits
    return jnp.where(jnp.arange(logits.shape[-1]) >= valid_vocab, -jnp.inf, logits)


def sample_token(rng, logits_BxV, temperature, top_k: int, top_p, valid_vocab=None):
    """One token per row: argmax if temperature == 0, else sample the filtered softmax."""
    logits_BxV = mask_invalid(logits_BxV.astype(jnp.float32), valid_vocab)
    greedy_B = jnp.argmax(logits_BxV, axis=-1)
    scaled_BxV = logits_BxV / jnp.where(temperature > 0, temperature, 1.0)
    scaled_BxV = top_p_mask(top_k_mask(scaled_BxV, top_k), top_p)
    sampled_B = jax.random.categorical(rng, scaled_BxV, axis=-1)
    return jnp.where(temperature > 0, sampled_B, greedy_B).astype(jnp.int32)


# ----------------------------------------------------------------------------- decode
def _check(model: Transformer, prompts_BxP, prompt_lengths_B, max_new_tokens: int) -> None:
    P = prompts_BxP.shape[1]
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}: must be >= 1")
    if P > model.max_len:
        raise ValueError(f"prompts are {P} tokens wide; the model's context is {model.max_len}")
    try:
        lengths = np.asarray(prompt_lengths_B)
    except jax.errors.TracerArrayConversionError:  # traced by an outer jit: use the width
        lengths = np.asarray([P])
    if lengths.min() < 1 or lengths.max() > P:
        raise ValueError(f"prompt_lengths {lengths.tolist()} must be in [1, {P}]")
    longest = int(lengths.max())
    if longest + max_new_tokens > model.max_len:
        raise ValueError(f"prompt length {longest} + max_new_tokens {max_new_tokens} = "
                         f"{longest + max_new_tokens} exceeds the model's context "
                         f"max_len={model.max_len}")


def generate(model: Transformer, params, prompts_BxP, prompt_lengths_B, *, rng,
             max_new_tokens: int, temperature=1.0, top_k: int = 0, top_p=1.0,
             valid_vocab: int | None = None) -> jax.Array:
    """tokens_BxN int32 (N = max_new_tokens) continuing each right-padded prompt."""
    _check(model, prompts_BxP, prompt_lengths_B, max_new_tokens)
    return _generate(model, params, jnp.asarray(prompts_BxP, jnp.int32),
                     jnp.asarray(prompt_lengths_B, jnp.int32), rng,
                     jnp.asarray(temperature, jnp.float32), jnp.asarray(top_p, jnp.float32),
                     jnp.asarray(model.vocab_size if valid_vocab is None else valid_vocab,
                                 jnp.int32),
                     max_new_tokens=int(max_new_tokens), top_k=int(top_k))


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "top_k"))
def _generate(model, params, prompts_BxP, lengths_B, rng, temperature, top_p, valid_vocab, *,
              max_new_tokens, top_k):
    B, P = prompts_BxP.shape
    apply = functools.partial(model.apply, {"params": params})
    sample = functools.partial(sample_token, temperature=temperature, top_k=top_k,
                               top_p=top_p, valid_vocab=valid_vocab)
    # Slots needed: positions up to max(length) + N - 2 <= P + N - 2.
    cache = init_cache(model, B, max_len=min(model.max_len, P + max_new_tokens))
    positions_BxP = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32), (B, P))
    logits_BxPxV, cache = apply(prompts_BxP, positions_BxT=positions_BxP, cache=cache)
    last_BxV = jnp.take_along_axis(logits_BxPxV, (lengths_B - 1)[:, None, None], axis=1)[:, 0]
    keys = jax.random.split(rng, max_new_tokens)
    first_B = sample(keys[0], last_BxV)

    def step(carry, key):
        cache, token_B, position_B = carry
        logits_Bx1xV, cache = apply(token_B[:, None], positions_BxT=position_B[:, None],
                                    cache=cache)
        next_B = sample(key, logits_Bx1xV[:, 0])
        return (cache, next_B, position_B + 1), next_B

    _, rest_NxB = jax.lax.scan(step, (cache, first_B, lengths_B), keys[1:])
    return jnp.concatenate([first_B[:, None], rest_NxB.T], axis=1)


def generate_reference(model: Transformer, params, prompts_BxP, prompt_lengths_B, *,
                       max_new_tokens: int) -> jax.Array:
    """Greedy tokens_BxN by re-running the full uncached forward every step (tests only)."""
    _check(model, prompts_BxP, prompt_lengths_B, max_new_tokens)
    return _generate_reference(model, params, jnp.asarray(prompts_BxP, jnp.int32),
                               jnp.asarray(prompt_lengths_B, jnp.int32),
                               max_new_tokens=int(max_new_tokens))


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens"))
def _generate_reference(model, params, prompts_BxP, lengths_B, *, max_new_tokens):
    B, P = prompts_BxP.shape
    W = min(model.max_len, P + max_new_tokens)
    buffer_BxW = jnp.zeros((B, W), jnp.int32).at[:, :P].set(prompts_BxP)
    rows_B = jnp.arange(B)

    def step(i, state):
        buffer_BxW, out_BxN = state
        logits_BxWxV = model.apply({"params": params}, buffer_BxW)
        token_B = jnp.argmax(logits_BxWxV[rows_B, lengths_B - 1 + i], axis=-1).astype(jnp.int32)
        return buffer_BxW.at[rows_B, lengths_B + i].set(token_B), out_BxN.at[:, i].set(token_B)

    out_BxN = jnp.zeros((B, max_new_tokens), jnp.int32)
    return jax.lax.fori_loop(0, max_new_tokens, step, (buffer_BxW, out_BxN))[1]
