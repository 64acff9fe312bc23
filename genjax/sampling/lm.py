"""Jitted KV-cache decoding for genjax.models.transformer: two compiled calls per request.

  tokens_BxN = generate(model, params, prompts_BxP, prompt_lengths_B, rng=key,
                        max_new_tokens=N, temperature=0.8, top_k=40, top_p=0.95)
  out = decode(..., min_p=0.05, repetition_penalty=1.2, stop_token_ids=[0])
  out.tokens_BxN, out.lengths_B, out.stopped_B
  out, logprobs_BxN = decode_with_logprobs(...)  # RL: log-probs of the drawn tokens
  for chunk in decode_stream(..., chunk_size=16): ...   # streaming, same tokens

`params` is the "params" collection (what goes into model.apply({"params": params})).
Prompts are right-padded; row b's prompt is prompts_BxP[b, :prompt_lengths_B[b]]. The
whole padded prompt is prefilled in one forward pass (`prefill`, jitted), then a
lax.while_loop (`generate_chunk`, jitted) samples one token per row from the state's
logits and feeds it at that row's own position: no Python per token. `decode` runs one
chunk of N tokens; `decode_stream` runs chunks of C from the same prefill. Padding
K/V sits in slots above each row's position, where the causal-by-position mask never
looks, and is overwritten as decoding advances.

Per step, in order: ids >= valid_vocab masked; repetition penalty (CTRL, Keskar et al.
2019: a logit of a token already in the row's prompt or output is divided by the penalty
if positive, multiplied if negative); temperature 0 = argmax of that; otherwise divide
by the temperature, then top-k, top-p (nucleus) and min-p (keep tokens whose probability
is >= min_p * the top token's, Nguyen et al. 2024) on the tempered distribution, and
draw. A row that emits one of `stop_token_ids` stops: that token stays in its output,
every later one is `pad_id`, and `lengths_B` counts the tokens before the stop token;
the loop ends early once every row stopped. Stop *strings* are a host-side matter
(genjax/sampling/text.py). `decode_with_logprobs` also gives each drawn token's
log-probability under the distribution it was drawn from (after the filters; greedy: the
penalized logits), so at temperature 1 with no filters it is the model's own
log-probability (RL rollouts).

Randomness: the token of row b at step t uses fold_in(fold_in(rng, t), row_ids_B[b]),
so a row's sample does not depend on the batch it is decoded in, and streaming in
chunks draws exactly the tokens of one call. Sampling values are traced (changing them
does not recompile); static are the model, the output width and `Switches`: which
filters run (draw or argmax, repetition penalty, top-k, top-p, min-p). So the per-token
loop has no branch: a greedy decode compiles to an argmax, with no draw and no sort
(on a GPU a lax.cond costs a device-to-host sync and splits the loop body's CUDA graph).
"""
from __future__ import annotations

import functools
from typing import Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from genjax.models.param_kinds import is_matrix
from genjax.models.transformer import Cache, Transformer, init_cache
from genjax.sampling.filters import (  # noqa: F401  (re-exported: lm.top_p_mask, ...)
    MIN_TEMPERATURE, Sampling, Switches, filtered_logits, mask_invalid, min_p_mask,
    repetition_penalty, sample_token, sample_token_logp, switches, top_k_mask, top_p_mask)


# ----------------------------------------------------------------------------- state
class DecodeState(NamedTuple):
    """Everything the next step needs; a pytree, returned by `prefill`/`generate_chunk`."""
    cache: Cache
    logits_BxV: jax.Array   # f32: next-token logits of each row
    position_B: jax.Array   # i32: cache slot the next token is written to
    seen_BxV: jax.Array     # bool: token already in the row's prompt or output
    done_B: jax.Array       # bool: row emitted a stop token
    lengths_B: jax.Array    # i32: tokens generated before the stop token (so far)
    step: jax.Array         # i32[]: tokens generated so far (the RNG's step index)
    rng: jax.Array
    row_ids_B: jax.Array    # i32: each row's RNG stream


class Decoded(NamedTuple):
    tokens_BxN: jax.Array   # int32; after a stop token every slot is pad_id
    lengths_B: jax.Array    # int32; tokens before the stop token (N if none)
    stopped_B: jax.Array    # bool; the row emitted a stop token


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


def _sampling(model, temperature, top_k, top_p, min_p, repetition_penalty, stop_token_ids,
              pad_id, valid_vocab) -> Sampling:
    checks = [("temperature", temperature, temperature == 0 or temperature >= MIN_TEMPERATURE,
               f"0 (greedy) or >= {MIN_TEMPERATURE:g}"),
              ("top_k", top_k, top_k >= 0, ">= 0 (0 = off)"),
              ("top_p", top_p, 0 < top_p <= 1, "in (0, 1] (1 = off)"),
              ("min_p", min_p, 0 <= min_p < 1, "in [0, 1) (0 = off)"),
              ("repetition_penalty", repetition_penalty, repetition_penalty > 0, "> 0 (1 = off)"),
              ("valid_vocab", valid_vocab,
               valid_vocab is None or 1 <= valid_vocab <= model.vocab_size,
               f"in [1, {model.vocab_size}] (the model's vocabulary; None = all of it)")]
    for name, value, ok, allowed in checks:
        if not ok:
            raise ValueError(f"{name}={value}: must be {allowed}")
    stop = np.asarray(list(stop_token_ids), np.int32).reshape(-1)
    if stop.size and (stop.min() < 0 or stop.max() >= model.vocab_size):
        raise ValueError(f"stop_token_ids {stop.tolist()} must be in [0, {model.vocab_size})")
    # Padded with -1 (never emitted) to a multiple of 8, so a new list rarely recompiles.
    K = max(8, -(-stop.size // 8) * 8)
    stop = np.pad(stop, (0, K - stop.size), constant_values=-1)
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    return Sampling(f32(temperature), f32(top_p), f32(min_p), f32(repetition_penalty),
                    jnp.asarray(model.vocab_size if valid_vocab is None else valid_vocab,
                                jnp.int32), jnp.asarray(stop), jnp.asarray(pad_id, jnp.int32))


# ----------------------------------------------------------------------------- decode
def _prefill(model, params, prompts_BxP, lengths_B, rng, row_ids_B, num_slots) -> DecodeState:
    B, P = prompts_BxP.shape
    V = model.vocab_size
    cache = init_cache(model, B, max_len=num_slots)
    positions_BxP = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32), (B, P))
    logits_BxPxV, cache = model.apply({"params": params}, prompts_BxP,
                                      positions_BxT=positions_BxP, cache=cache)
    last_BxV = jnp.take_along_axis(logits_BxPxV, (lengths_B - 1)[:, None, None], axis=1)[:, 0]
    in_prompt_BxP = positions_BxP < lengths_B[:, None]
    seen_BxV = jnp.zeros((B, V), bool).at[jnp.arange(B)[:, None],
                                          jnp.where(in_prompt_BxP, prompts_BxP, V)].set(
        True, mode="drop")  # padding goes to id V: dropped
    return DecodeState(cache, last_BxV.astype(jnp.float32), lengths_B, seen_BxV,
                       jnp.zeros((B,), bool), jnp.zeros((B,), jnp.int32),
                       jnp.zeros((), jnp.int32), rng, row_ids_B)


def _decode_loop(model, params, state: DecodeState, s: Sampling, limit, *, width: int,
                 sw: Switches):
    """Up to min(limit, width) tokens per row -> ((tokens_BxW, logprobs_BxW), tokens
    produced, state)."""
    B = state.done_B.shape[0]
    rows_B = jnp.arange(B)

    def cond(carry):
        i, st, _ = carry
        return (i < jnp.minimum(limit, width)) & ~jnp.all(st.done_B)

    def body(carry):
        i, st, (out_BxW, logp_BxW) = carry
        keys_B = jax.vmap(jax.random.fold_in, (None, 0))(
            jax.random.fold_in(st.rng, st.step), st.row_ids_B) if sw.sample else None
        token_B, logp_B = sample_token_logp(keys_B, st.logits_BxV, st.seen_BxV, s, sw)
        token_B = jnp.where(st.done_B, s.pad_id, token_B)
        logp_BxW = jax.lax.dynamic_update_slice(
            logp_BxW, jnp.where(st.done_B, 0.0, logp_B)[:, None], (0, i))
        hit_B = (token_B[:, None] == s.stop_ids_K[None, :]).any(-1) & ~st.done_B
        lengths_B = st.lengths_B + (~st.done_B & ~hit_B)
        out_BxW = jax.lax.dynamic_update_slice(out_BxW, token_B[:, None], (0, i))
        logits_Bx1xV, cache = model.apply({"params": params}, token_B[:, None],
                                          positions_BxT=st.position_B[:, None], cache=st.cache)
        st = DecodeState(cache, logits_Bx1xV[:, 0].astype(jnp.float32), st.position_B + 1,
                         st.seen_BxV.at[rows_B, token_B].set(True) if sw.repetition
                         else st.seen_BxV, st.done_B | hit_B,
                         lengths_B, st.step + 1, st.rng, st.row_ids_B)
        return i + 1, st, (out_BxW, logp_BxW)

    outs = (jnp.full((B, width), s.pad_id, jnp.int32), jnp.zeros((B, width), jnp.float32))
    i, state, outs = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), state, outs))
    return outs, i, state


def _num_slots(model, prompts_BxP, max_new_tokens: int) -> int:
    # The last token fed sits at position <= longest + N - 1 <= P + N - 1 (< max_len by _check).
    return min(model.max_len, np.shape(prompts_BxP)[1] + max_new_tokens)


def _inputs(prompts_BxP, prompt_lengths_B, rng, row_ids_B):
    prompts_BxP = jnp.asarray(prompts_BxP, jnp.int32)
    B = prompts_BxP.shape[0]
    row_ids_B = jnp.arange(B, dtype=jnp.int32) if row_ids_B is None else \
        jnp.asarray(row_ids_B, jnp.int32)
    return prompts_BxP, jnp.asarray(prompt_lengths_B, jnp.int32), rng, row_ids_B


def decode(model: Transformer, params, prompts_BxP, prompt_lengths_B, *, rng,
           max_new_tokens: int, temperature=1.0, top_k: int = 0, top_p=1.0, min_p=0.0,
           repetition_penalty=1.0, stop_token_ids: Sequence[int] = (), pad_id: int = 0,
           valid_vocab: int | None = None, row_ids_B=None, width: int | None = None) -> Decoded:
    """N = max_new_tokens tokens continuing each right-padded prompt: `prefill`, then one
    `generate_chunk` of N steps (two jitted calls, no Python per token).

    `width` >= N (default N) is the compiled loop's length: calls with the same prompt
    width and `width` share one compilation whatever their N (the loop stops after N).
    Raises ValueError if the longest prompt + max_new_tokens exceeds model.max_len.
    """
    return decode_with_logprobs(model, params, prompts_BxP, prompt_lengths_B, rng=rng,
                                max_new_tokens=max_new_tokens, temperature=temperature,
                                top_k=top_k, top_p=top_p, min_p=min_p,
                                repetition_penalty=repetition_penalty,
                                stop_token_ids=stop_token_ids, pad_id=pad_id,
                                valid_vocab=valid_vocab, row_ids_B=row_ids_B, width=width)[0]


def decode_with_logprobs(model: Transformer, params, prompts_BxP, prompt_lengths_B, *, rng,
                         max_new_tokens: int, temperature=1.0, top_k: int = 0, top_p=1.0,
                         min_p=0.0, repetition_penalty=1.0, stop_token_ids: Sequence[int] = (),
                         pad_id: int = 0, valid_vocab: int | None = None,
                         row_ids_B=None, width: int | None = None
                         ) -> tuple[Decoded, jax.Array]:
    """(`decode`'s output, logprobs_BxN float32: each drawn token's log-probability under
    the distribution it was drawn from, 0 after a stop token)."""
    _check(model, prompts_BxP, prompt_lengths_B, max_new_tokens)
    s = _sampling(model, temperature, top_k, top_p, min_p, repetition_penalty,
                  stop_token_ids, pad_id, valid_vocab)
    N = int(max_new_tokens)
    W = N if width is None else int(width)
    if W < N:
        raise ValueError(f"width={W}: must be >= max_new_tokens={N}")
    state = prefill(model, params, *_inputs(prompts_BxP, prompt_lengths_B, rng, row_ids_B),
                    num_slots=_num_slots(model, prompts_BxP, W))
    (tokens_BxW, logp_BxW), _, state = generate_chunk(
        model, params, state, s, jnp.asarray(N, jnp.int32), chunk_size=W,
        switches=switches(temperature, top_k, top_p, min_p, repetition_penalty))
    if W > N:
        tokens_BxW, logp_BxW = tokens_BxW[:, :N], logp_BxW[:, :N]
    return Decoded(tokens_BxW, state.lengths_B, state.done_B), logp_BxW


def generate(model: Transformer, params, prompts_BxP, prompt_lengths_B, **kwargs) -> jax.Array:
    """tokens_BxN int32 of `decode` (same keyword arguments)."""
    return decode(model, params, prompts_BxP, prompt_lengths_B, **kwargs).tokens_BxN


# ----------------------------------------------------------------------------- streaming
@functools.partial(jax.jit, static_argnames=("model", "num_slots"))
def prefill(model, params, prompts_BxP, lengths_B, rng, row_ids_B, *, num_slots) -> DecodeState:
    """Jitted prefill: the state whose logits give each row's first new token."""
    return _prefill(model, _cast_matrices(model, params), prompts_BxP, lengths_B, rng,
                    row_ids_B, num_slots)


@functools.partial(jax.jit, static_argnames=("model", "chunk_size", "switches"))
def generate_chunk(model, params, state: DecodeState, s: Sampling, limit, *, chunk_size: int,
                   switches: Switches):
    """Continues from `state`: ((tokens_BxC (pad-filled past `count`), their
    logprobs_BxC), count, new state).

    `limit` (traced, so the last, shorter chunk does not recompile) caps the count."""
    return _decode_loop(model, _cast_matrices(model, params), state, s, limit,
                        width=chunk_size, sw=switches)


def _cast_matrices(model, params):
    """Float32 matrices (>= 2 dims; not a norm scale or bias) in the compute dtype, once per
    call: the model casts them at each use, so the result is the same without a convert
    of every weight per token. Anything but a Transformer (int8 params) as it is."""
    def cast(path, x):
        matrix = x.dtype == jnp.float32 and is_matrix(getattr(path[-1], "key", None), x)
        return x.astype(model.dtype) if matrix else x
    if not isinstance(model, Transformer) or model.dtype == jnp.float32:
        return params
    return jax.tree_util.tree_map_with_path(cast, params)


def decode_stream(model: Transformer, params, prompts_BxP, prompt_lengths_B, *, rng,
                  max_new_tokens: int, chunk_size: int = 16, temperature=1.0, top_k: int = 0,
                  top_p=1.0, min_p=0.0, repetition_penalty=1.0,
                  stop_token_ids: Sequence[int] = (), pad_id: int = 0,
                  valid_vocab: int | None = None, row_ids_B=None) -> Iterator[Decoded]:
    """`decode` in chunks of `chunk_size` tokens per jitted call, continuing from the cache.

    Yields Decoded(tokens of this chunk [B, <= chunk_size], lengths so far, stopped so far);
    the chunks concatenate to `decode`'s tokens up to where every row stopped. Stops early
    once every row emitted a stop token (or when the caller stops iterating).
    """
    _check(model, prompts_BxP, prompt_lengths_B, max_new_tokens)
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size}: must be >= 1")
    s = _sampling(model, temperature, top_k, top_p, min_p, repetition_penalty,
                  stop_token_ids, pad_id, valid_vocab)
    prompts_BxP, lengths_B, rng, row_ids_B = _inputs(prompts_BxP, prompt_lengths_B, rng,
                                                     row_ids_B)
    state = prefill(model, params, prompts_BxP, lengths_B, rng, row_ids_B,
                    num_slots=_num_slots(model, prompts_BxP, max_new_tokens))  # as `decode`
    produced = 0
    while produced < max_new_tokens:
        wanted = min(chunk_size, max_new_tokens - produced)
        (tokens_BxC, _), count, state = generate_chunk(
            model, params, state, s, jnp.asarray(wanted, jnp.int32),
            chunk_size=int(chunk_size),
            switches=switches(temperature, top_k, top_p, min_p, repetition_penalty))
        count = int(count)
        produced += count
        yield Decoded(tokens_BxC[:, :count], state.lengths_B, state.done_B)
        if count < wanted:  # every row stopped
            return


# ----------------------------------------------------------------------------- reference
def generate_reference(model: Transformer, params, prompts_BxP, prompt_lengths_B, *,
                       max_new_tokens: int) -> jax.Array:
    """Greedy tokens_BxN by re-running the full uncached forward every step.

    The spec the KV-cache decode is tested against, and the no-cache baseline of
    experiments/bench/decode.py (one jitted fori_loop; each step re-reads P + N tokens).
    """
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
