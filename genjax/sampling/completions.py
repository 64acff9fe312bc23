"""K sampled completions per prompt and their teacher-forced log-probabilities (alignment).

  tokens_RxN = sample(model, params, prompt_ids, k=4, max_new_tokens=N, seed=0,
                      valid_vocab=V)             # R = len(prompt_ids) * k rows
  logp_R = completion_logps(model, params, prompt_ids * k, tokens_RxN, valid_vocab=V)

Row r = i * k + j is sample j of prompt i; it draws from random stream r of `seed`
(genjax/sampling/lm.py row_ids), so rows are independent of each other and of the batch
they are decoded in, and two models sampled with one seed share their noise: identical
models give identical samples (a policy against itself ties on every prompt).
Temperature 1, no filters, no stop tokens: the model's own distribution over ids < V
(ids >= V, vocabulary padding, are never drawn, and `completion_logps` renormalises them
away too, so its log-probs are those of the distribution sampled from).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from genjax.sampling import lm
from genjax.sampling.filters import next_token_logps

BATCH_ROWS = 256  # rows per decode / forward call (the last batch is padded to this)


def _pad_rows(rows: Sequence[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded int32[len(rows), width] and lengths int32[len(rows)]."""
    out = np.zeros((len(rows), width), np.int32)
    for b, r in enumerate(rows):
        out[b, :len(r)] = r
    return out, np.asarray([len(r) for r in rows], np.int32)


def _batches(num_rows: int, batch_rows: int):
    """(start, row indices padded to one shape by repeating the last row) per batch."""
    size = max(1, min(int(batch_rows), num_rows))
    for start in range(0, num_rows, size):
        idx = np.arange(start, start + size)
        yield start, np.minimum(idx, num_rows - 1), min(size, num_rows - start)


def sample(model, params, prompt_ids: Sequence[np.ndarray], *, k: int, max_new_tokens: int,
           seed: int, valid_vocab: int, batch_rows: int = BATCH_ROWS) -> np.ndarray:
    """int32[len(prompt_ids) * k, max_new_tokens]: row i * k + j is sample j of prompt i."""
    rows = [np.asarray(p, np.int32) for p in prompt_ids for _ in range(int(k))]
    if not rows:
        return np.zeros((0, int(max_new_tokens)), np.int32)
    width = max(len(r) for r in rows)
    width = min(model.max_len, -(-width // 8) * 8)  # few prompt widths: few compiles
    rng = jax.random.PRNGKey(int(seed))
    out = np.zeros((len(rows), int(max_new_tokens)), np.int32)
    for start, idx, n in _batches(len(rows), batch_rows):
        prompts_BxP, lengths_B = _pad_rows([rows[i] for i in idx], width)
        dec = lm.decode(model, params, prompts_BxP, lengths_B, rng=rng,
                        max_new_tokens=int(max_new_tokens), temperature=1.0,
                        valid_vocab=int(valid_vocab), row_ids_B=idx.astype(np.int32))
        out[start:start + n] = np.asarray(jax.device_get(dec.tokens_BxN))[:n]
    return out


@functools.partial(jax.jit, static_argnames=("model",))
def _masked_logps(model, params, seq_BxL, mask_BxT, valid_vocab):
    tok_BxT = next_token_logps(model.apply({"params": params}, seq_BxL[:, :-1]), seq_BxL,
                               valid_vocab)
    return jnp.sum(jnp.where(mask_BxT > 0, tok_BxT, 0.0), axis=-1)


def join(prompt_ids: Sequence[np.ndarray], tokens_RxN: np.ndarray):
    """(seq int32[R, P + N], mask float32[R, P + N - 1]): prompt then completion,
    right-padded (P the longest prompt); the mask marks the completion's targets."""
    N = tokens_RxN.shape[1]
    seq, lengths = _pad_rows([np.concatenate([np.asarray(p, np.int32), t])
                              for p, t in zip(prompt_ids, tokens_RxN)],
                             max(len(p) for p in prompt_ids) + N)
    t = np.arange(seq.shape[1] - 1)[None]
    start = (lengths - N - 1)[:, None]  # the target of position len(prompt) - 1 is token 0
    return seq, ((t >= start) & (t < start + N)).astype(np.float32)


def completion_logps(model, params, prompt_ids: Sequence[np.ndarray], tokens_RxN,
                     *, valid_vocab: int, batch_rows: int = BATCH_ROWS) -> np.ndarray:
    """float64[R]: log p(completion r | prompt r) summed over its tokens (nats),
    teacher-forced, over the first `valid_vocab` ids; prompt_ids has one entry per row."""
    tokens_RxN = np.asarray(tokens_RxN, np.int32)
    if len(prompt_ids) != len(tokens_RxN):
        raise ValueError(f"{len(prompt_ids)} prompts for {len(tokens_RxN)} completions")
    if not len(tokens_RxN):
        return np.zeros((0,), np.float64)
    seq, mask = join(prompt_ids, tokens_RxN)
    if seq.shape[1] - 1 > model.max_len:
        raise ValueError(f"prompt + completion is {seq.shape[1]} tokens; the model reads "
                         f"{model.max_len} + 1")
    out = np.zeros(len(seq), np.float64)
    for start, idx, n in _batches(len(seq), batch_rows):
        logp = _masked_logps(model, params, jnp.asarray(seq[idx]), jnp.asarray(mask[idx]),
                             jnp.asarray(int(valid_vocab), jnp.int32))
        out[start:start + n] = np.asarray(jax.device_get(logp), np.float64)[:n]
    return out
