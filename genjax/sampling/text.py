"""Prompt -> tokens -> jitted KV-cache decode -> text, with input validation.

Generations longer than the context slide the window: when the cache is full the
last `max_len // 2` tokens are re-read (one prefill) and decoding continues. Each
window is one jitted `generate` call (genjax/sampling/lm.py), never a Python loop per token.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from genjax.config_lib import UserError
from genjax.sampling import lm as lm_sampling


@dataclasses.dataclass(frozen=True)
class TextRequest:
    prompt: str
    num_samples: int = 1
    max_new_tokens: int = 100
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        if not self.prompt:
            raise UserError("prompt is empty: give at least one character, e.g. --prompt='ROMEO:'")
        if self.num_samples < 1:
            raise UserError(f"num_samples={self.num_samples}: must be >= 1")
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens={self.max_new_tokens}: must be >= 1")
        if self.temperature < 0:
            raise UserError(f"temperature={self.temperature}: must be >= 0 (0 = greedy)")
        if self.top_k < 0:
            raise UserError(f"top_k={self.top_k}: must be >= 1, or 0 for off")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p={self.top_p}: must be in (0, 1]")


def encode_prompt(tokenizer, prompt: str) -> np.ndarray:
    try:
        return np.asarray(tokenizer.encode(prompt), np.int32)
    except ValueError as e:
        raise UserError(f"prompt: {e}") from None


def generate_text(model, params, tokenizer, req: TextRequest) -> list[str]:
    """`req.num_samples` continuations of `req.prompt` (decoded, prompt excluded)."""
    req.validate()
    prompt = encode_prompt(tokenizer, req.prompt)
    max_len = model.max_len
    if len(prompt) >= max_len:
        raise UserError(f"prompt is {len(prompt)} tokens; the model's context is {max_len} "
                        f"(shorten it to at most {max_len - 1})")
    rng = jax.random.PRNGKey(req.seed)
    rows = np.tile(prompt, (req.num_samples, 1))
    out = np.zeros((req.num_samples, 0), np.int32)
    remaining = req.max_new_tokens
    while remaining > 0:
        n = min(remaining, max_len - rows.shape[1])
        rng, key = jax.random.split(rng)
        lengths = np.full((rows.shape[0],), rows.shape[1], np.int32)
        new = np.asarray(lm_sampling.generate(
            model, params, rows, lengths, rng=key, max_new_tokens=n,
            temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
            valid_vocab=tokenizer.vocab_size))
        out = np.concatenate([out, new], axis=1)
        remaining -= n
        rows = np.concatenate([rows, new], axis=1)[:, -(max_len // 2):]  # slide the window
    return [tokenizer.decode(row.tolist()) for row in out]
