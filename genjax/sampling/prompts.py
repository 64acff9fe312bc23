"""Untrusted prompt text -> token ids that fit the model's context.

`encode_untrusted` never maps text to a special token id (the char tokenizer has none; a
BPE tokenizer's special tokens, if its JSON defines any, are encoded as their plain
bytes); `fit_prompt` never crops silently: an over-long prompt is an error unless the
request truncates it on the left or slides the window (genjax/sampling/text.py).
"""
from __future__ import annotations

import warnings

import numpy as np

from genjax.errors import UserError


def validate_prompt(prompt: str, field: str = "prompt") -> None:
    if not isinstance(prompt, str) or not prompt:
        raise UserError(f"{field} is empty: give at least one character, e.g. --prompt='ROMEO:'")


def encode_untrusted(tokenizer, text: str, field: str = "prompt") -> np.ndarray:
    """int32 ids of `text` as plain text: never a special token id, whatever the text says.

    A `genjax.data.bpe.BPETokenizer` wraps a `tokenizers.Tokenizer`, whose `encode` turns
    the text "<|endoftext|>" into that special token's id when its JSON defines one. Ours
    are trained without special tokens; for any that has them, `encode_special_tokens`
    makes the library encode such text as ordinary bytes (checked again below).
    """
    hf = getattr(tokenizer, "_tok", None)
    special = set()
    if hf is not None and hasattr(hf, "get_added_tokens_decoder"):
        special = {i for i, t in hf.get_added_tokens_decoder().items() if t.special}
    try:
        if not special:
            return np.asarray(tokenizer.encode(text), np.int32)
        before = hf.encode_special_tokens
        hf.encode_special_tokens = True
        try:
            ids = np.asarray(tokenizer.encode(text), np.int32)
        finally:
            hf.encode_special_tokens = before
    except ValueError as e:  # char tokenizer: names the characters outside the vocabulary
        raise UserError(f"{field}: {e}") from None
    if special & set(ids.tolist()):
        raise UserError(f"{field}: text would encode to special token ids "
                        f"{sorted(special & set(ids.tolist()))}")
    return ids


def fit_prompt(ids: np.ndarray, req, max_len: int, field: str = "prompt"):
    """The prompt ids that fit the context, per req.truncate/window (a text.TextRequest);
    UserError otherwise."""
    n, N = len(ids), req.max_new_tokens
    if not req.window and N >= max_len:
        raise UserError(f"max_new_tokens={N} leaves no room for a prompt in the model's context "
                        f"max_len={max_len}: lower it to at most {max_len - 1}, or pass "
                        f"window=True (--window) to slide the window")
    budget = max_len - 1 if req.window else max_len - N
    if n <= budget:
        return ids
    if req.truncate == "left":
        warnings.warn(f"{field} is {n} tokens; truncate='left' keeps its last {budget} "
                      f"(context max_len={max_len}"
                      f"{'' if req.window else f', max_new_tokens={N}'})", stacklevel=3)
        return ids[-budget:]
    if req.window:
        raise UserError(f"{field} is {n} tokens; the model's context is {max_len} (shorten it "
                        f"to at most {budget} tokens, or pass truncate='left')")
    raise UserError(f"{field} is {n} tokens + max_new_tokens={N} = {n + N} exceeds the model's "
                    f"context max_len={max_len}: shorten the prompt to at most {budget} tokens, "
                    f"lower max_new_tokens to {max(max_len - n, 0)}, or pass truncate='left' "
                    f"or window=True")
