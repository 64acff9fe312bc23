"""Best-of-n for any family: draw n candidates, score them, rank them best first.

  ranked = best_of_n(generate_fn, score_fn, n=8, seed=0)   # [(candidate, score), ...]
  best, score = ranked[0]

  generate_fn(n, seed) -> n candidates (token arrays, text Completions, images, ...)
  score_fn(candidates) -> n floats, higher is better (one batched call)

Score functions: `lm_loglik` (log-likelihood of each continuation given its prompt under
an LM, summed or averaged per token, one batched forward pass) and `per_item(fn)`, which
lifts any one-candidate callable (a reward model, an image classifier's confidence) to a
batched score_fn. `best_of_n_text` wires it to genjax.sampling.text for one prompt;
`best_of_n_images` to any image sampler, scored by e.g. `class_confidence` (a classifier's
probability for the prompted class).

Ranking by the model's own likelihood favours safe, repetitive text (the mean per token
less so than the sum, which also favours short outputs); it is a cheap reranker, not a
measure of quality.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from genjax.sampling.filters import next_token_logps

GenerateFn = Callable[[int, int], Sequence[Any]]       # (n, seed) -> candidates
ScoreFn = Callable[[Sequence[Any]], Sequence[float]]   # candidates -> scores


def best_of_n(generate_fn: GenerateFn, score_fn: ScoreFn, n: int, *, seed: int = 0,
              higher_is_better: bool = True) -> list[tuple[Any, float]]:
    """All n (candidate, score) pairs, best first (ties keep draw order; NaN ranks last)."""
    if n < 1:
        raise ValueError(f"n={n}: must be >= 1")
    candidates = list(generate_fn(n, seed))
    if len(candidates) != n:
        raise ValueError(f"generate_fn returned {len(candidates)} candidates, asked for {n}")
    scores = np.asarray(score_fn(candidates), np.float64).reshape(-1)
    if scores.shape != (n,):
        raise ValueError(f"score_fn returned {scores.shape[0]} scores for {n} candidates")
    key = np.where(np.isnan(scores), -np.inf, scores if higher_is_better else -scores)
    order = np.argsort(-key, kind="stable")
    return [(candidates[i], float(scores[i])) for i in order]


def per_item(fn: Callable[[Any], float]) -> ScoreFn:
    """A score_fn calling fn(candidate) once per candidate."""
    return lambda candidates: [float(fn(c)) for c in candidates]


# ----------------------------------------------------------------------------- LM score
@functools.partial(jax.jit, static_argnames=("model",))
def _token_logprobs(model, params, tokens_NxW, valid_vocab):
    """log p(tokens[:, t+1] | tokens[:, :t+1]) for every t: [N, W-1]."""
    logits = model.apply({"params": params}, tokens_NxW)
    return next_token_logps(logits[:, :-1], tokens_NxW, valid_vocab)


def sequence_logprobs(model, params, prompts: Sequence[np.ndarray],
                      continuations: Sequence[np.ndarray], *, valid_vocab: int | None = None):
    """(sum_N, mean_N) log-likelihood in nats of each continuation given its prompt.

    One forward pass over the batch of prompt + continuation rows (right-padded to a
    multiple of 8 tokens, the batch to a multiple of 8 rows). ids >= valid_vocab are
    renormalised away, as the sampler does (temperature and the other filters are not:
    this is the model's own distribution).
    An empty continuation scores sum 0 and mean -inf. Raises ValueError if a row is
    longer than the model's context (score windowed generations piecewise instead).
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts for {len(continuations)} continuations")
    rows = [np.concatenate([np.asarray(p, np.int32), np.asarray(c, np.int32)])
            for p, c in zip(prompts, continuations)]
    longest = max(len(r) for r in rows)
    if longest > model.max_len:
        raise ValueError(f"prompt + continuation is {longest} tokens; the model's context is "
                         f"{model.max_len}")
    W = min(model.max_len, max(8, -(-longest // 8) * 8))
    N = -(-len(rows) // 8) * 8  # rows padded too: n = 1 and n = 8 share one compile
    tokens_NxW = np.zeros((N, W), np.int32)
    mask_NxW1 = np.zeros((N, W - 1), bool)
    for i, (r, p) in enumerate(zip(rows, prompts)):
        tokens_NxW[i, :len(r)] = r
        mask_NxW1[i, len(p) - 1:len(r) - 1] = True  # positions predicting the continuation
    vv = model.vocab_size if valid_vocab is None else valid_vocab
    logp = np.asarray(_token_logprobs(model, params, jnp.asarray(tokens_NxW),
                                      jnp.asarray(vv, jnp.int32)), np.float64)
    total = np.where(mask_NxW1, logp, 0.0).sum(-1)[:len(rows)]
    count = mask_NxW1.sum(-1)[:len(rows)]
    mean = np.where(count > 0, total / np.maximum(count, 1), -np.inf)
    return total, mean


def lm_loglik(model, params, *, reduce: str = "mean", valid_vocab: int | None = None,
              tokens_of: Callable[[Any], tuple[np.ndarray, np.ndarray]] | None = None) -> ScoreFn:
    """score_fn: LM log-likelihood of each candidate's continuation ("sum" or "mean").

    tokens_of(candidate) -> (prompt ids, continuation ids); the default reads a
    text.Completion's `prompt_tokens` and `tokens`. A continuation longer than the
    context (window=True) is scored as it was sampled: each token given the window the
    sampler saw (text.window_pieces), the pieces' log-likelihoods summed.
    """
    from genjax.sampling import text
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce={reduce!r}: choose sum or mean")
    tokens_of = tokens_of or (lambda c: (c.prompt_tokens, c.tokens))

    def score(candidates):
        owner, prompts, conts = [], [], []
        for i, c in enumerate(candidates):
            for context, piece in text.window_pieces(*tokens_of(c), model.max_len):
                owner.append(i), prompts.append(context), conts.append(piece)
        total, _ = sequence_logprobs(model, params, prompts, conts, valid_vocab=valid_vocab)
        n = len(candidates)
        total = np.bincount(owner, weights=total, minlength=n)
        count = np.bincount(owner, weights=[len(c) for c in conts], minlength=n)
        mean = np.where(count > 0, total / np.maximum(count, 1), -np.inf)
        return total if reduce == "sum" else mean
    return score


def best_of_n_text(model, params, tokenizer, req, n: int, *, reduce: str = "mean",
                   score_fn: ScoreFn | None = None) -> list[tuple[Any, float]]:
    """n completions of req.prompt (a text.TextRequest) ranked by score_fn (default: the
    model's mean log-likelihood per token), best first."""
    from genjax.sampling import text
    req.validate()

    def generate_fn(k, seed):
        r = dataclasses.replace(req, num_samples=k, seed=seed)
        return text.generate_texts(model, params, tokenizer, [req.prompt], r)[0]
    score_fn = score_fn or lm_loglik(model, params, reduce=reduce,
                                     valid_vocab=tokenizer.vocab_size)
    return best_of_n(generate_fn, score_fn, n, seed=req.seed)


# ----------------------------------------------------------------------------- images
def class_confidence(probs_fn: Callable[[np.ndarray], np.ndarray], target: int) -> ScoreFn:
    """score_fn: probs_fn(images_NxHxWxC)[:, target], a classifier's probability that each
    image shows class `target` (one batched call)."""
    def score(candidates):
        probs_NxC = np.asarray(probs_fn(np.stack(candidates)), np.float64)
        if not 0 <= int(target) < probs_NxC.shape[-1]:
            raise ValueError(f"target class {target} not in 0..{probs_NxC.shape[-1] - 1}")
        return probs_NxC[:, int(target)]
    return score


def best_of_n_images(sample_fn: Callable[[int, int], np.ndarray], score_fn: ScoreFn, n: int,
                     *, seed: int = 0) -> list[tuple[np.ndarray, float]]:
    """n images from sample_fn(n, seed) -> [n, H, W, C], each with its score, best first."""
    return best_of_n(lambda k, s: list(np.asarray(sample_fn(k, s))), score_fn, n, seed=seed)
