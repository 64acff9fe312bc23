"""Prompt -> tokens -> jitted KV-cache decode -> text, with input validation.

  req = TextRequest(num_samples=2, max_new_tokens=100, temperature=0.8, min_p=0.05,
                    stop=("\\n\\n",), seed=0)
  completions = generate_texts(model, params, tokenizer, ["ROMEO:", "JULIET:"], req)
  completions[i][j].text          # sample j of prompt i, prompt excluded
  generate_text(model, params, tokenizer, TextRequest(prompt="ROMEO:"))  # -> list[str]
  stream_text(model, params, tokenizer, req, on_text=print_piece)         # -> Completion

All prompts of a call are decoded in one batch (right-padded to a multiple of 8 tokens,
so nearby lengths share a compiled program; with window=True, prompts that slide are
decoded in one batch per prompt length, each sliding where it would alone). Sample j of
every prompt draws from random stream j of `seed`: a prompt's samples do not depend on
which prompts share its batch.

Checks, each a `UserError` naming the field (the CLI prints it as one line, exit 2):
empty prompts, characters outside a char vocabulary, parameters out of range, and
requests longer than the context. The context is never cropped silently:
  * prompt + max_new_tokens > max_len is an error, unless `truncate="left"` (the prompt
    loses its start, with a warning) or `window=True` (below).
  * `window=True` slides the window, with a warning: when the cache is full the last
    `max_len // 2` tokens are re-read (one prefill) and decoding continues; the model
    then no longer sees the start, and the repetition penalty sees only the window.
    Each window is one jitted decode (genjax/sampling/lm.py), never a Python loop per token.

Stop strings are applied on the host after decoding (or after each streamed chunk):
the text is cut exactly at the earliest occurrence of any stop string, which is itself
excluded; `Completion.tokens` keeps the generated tokens whose text lies before the cut.
Stop token ids end a row inside the jitted decode; the stop token is excluded too.

Prompt text is untrusted: genjax/sampling/prompts.py encodes it (never to a special token
id) and fits it to the context.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Sequence

import jax
import numpy as np

from genjax import runtime
from genjax.errors import UserError
from genjax.sampling import lm as lm_sampling
from genjax.sampling.filters import MIN_TEMPERATURE
from genjax.sampling.prompts import (  # noqa: F401  (text.encode_untrusted, ... users)
    encode_untrusted, fit_prompt, validate_prompt)

TRUNCATE = ("error", "left")
PROMPT_BUCKET = 8  # prompts are padded to a multiple of this many tokens
ROWS_PER_CALL = 256  # rows per decode call: its KV cache, not all samples', is on the device
# What a finished sample holds on the host (its ids twice, its text, the objects around
# them), an upper bound used to refuse a request that cannot fit before decoding it.
HOST_BYTES_PER_TOKEN, HOST_BYTES_PER_ROW = 16, 1024


@dataclasses.dataclass(frozen=True)
class TextRequest:
    prompt: str = ""                   # generate_text / stream_text; generate_texts takes a list
    num_samples: int = 1               # per prompt
    max_new_tokens: int = 100          # required budget; bounded by the context unless window
    temperature: float = 1.0           # 0 = greedy
    top_k: int = 0                     # 0 = off
    top_p: float = 1.0                 # (0, 1]; 1 = off
    min_p: float = 0.0                 # [0, 1); 0 = off
    repetition_penalty: float = 1.0    # > 0; 1 = off, > 1 discourages repeats (CTRL)
    stop: tuple[str, ...] = ()         # stop strings (host-side, excluded from the text)
    stop_token_ids: tuple[int, ...] = ()  # stop tokens (in the jitted decode, excluded)
    stop_at_end_of_text: bool = True   # the tokenizer's end-of-text token is one (HF's eos)
    seed: int = 0
    truncate: str = "error"            # error | left (over-long prompts lose their start)
    window: bool = False               # generate past the context by sliding the window

    def validate_params(self) -> None:
        """Everything but the prompt; UserError naming the first bad field."""
        checks = [
            ("num_samples", self.num_samples >= 1, "must be >= 1"),
            ("max_new_tokens", self.max_new_tokens >= 1, "must be >= 1"),
            ("temperature", self.temperature == 0 or self.temperature >= MIN_TEMPERATURE,
             f"must be 0 (greedy) or >= {MIN_TEMPERATURE:g} (smaller overflows the logits)"),
            ("top_k", self.top_k >= 0, "must be >= 1, or 0 for off"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1] (1 = off)"),
            ("min_p", 0 <= self.min_p < 1, "must be in [0, 1) (0 = off)"),
            ("repetition_penalty", self.repetition_penalty > 0,
             "must be > 0 (1 = off, > 1 discourages repeats)"),
            ("truncate", self.truncate in TRUNCATE, f"choose one of {list(TRUNCATE)}"),
            ("stop", all(isinstance(s, str) and s for s in self.stop),
             "stop strings must be non-empty"),
            ("stop_token_ids", all(int(t) >= 0 for t in self.stop_token_ids),
             "ids must be >= 0"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise UserError(f"{name}={getattr(self, name)!r}: {rule}")

    def validate(self) -> None:
        """Parameters and `prompt` (for the single-prompt entry points)."""
        self.validate_params()
        validate_prompt(self.prompt)


@dataclasses.dataclass
class Completion:
    text: str                 # continuation: prompt, stop string and stop token excluded
    tokens: np.ndarray        # int32 generated ids before the stop
    finish_reason: str        # length | stop_token | stop_string
    prompt_index: int
    sample_index: int
    prompt_tokens: np.ndarray  # int32 ids fed as the prompt (after any left-truncation)


def _prepare(model, tokenizer, prompts: Sequence[str], req: TextRequest) -> list[np.ndarray]:
    req.validate_params()
    if isinstance(prompts, str) or not prompts:
        raise UserError("prompts: give a non-empty list of strings")
    bad = [t for t in req.stop_token_ids if int(t) >= tokenizer.vocab_size]
    if bad:
        raise UserError(f"stop_token_ids={list(req.stop_token_ids)}: ids {bad} are outside the "
                        f"vocabulary [0, {tokenizer.vocab_size})")
    fields = ["prompt"] if len(prompts) == 1 else [f"prompts[{i}]" for i in range(len(prompts))]
    for p, f in zip(prompts, fields):
        validate_prompt(p, f)
    ids = [encode_untrusted(tokenizer, p, f) for p, f in zip(prompts, fields)]
    for i, f in zip(ids, fields):
        if not len(i):
            raise UserError(f"{f} encodes to no tokens")
    return [fit_prompt(i, req, model.max_len, f) for i, f in zip(ids, fields)]


def _pad(rows: list[np.ndarray], max_len: int):
    """Right-padded [B, P] (P a multiple of PROMPT_BUCKET, <= max_len) and lengths [B]."""
    lengths = np.asarray([len(r) for r in rows], np.int32)
    P = min(max_len, -(-int(lengths.max()) // PROMPT_BUCKET) * PROMPT_BUCKET)
    out = np.zeros((len(rows), P), np.int32)
    for b, r in enumerate(rows):
        out[b, :len(r)] = r
    return out, lengths


def stop_ids(req: TextRequest, tokenizer) -> tuple[int, ...]:
    """The tokens that end a sample: req.stop_token_ids, and the tokenizer's end-of-text
    token where it has one (an imported GPT-2's <|endoftext|>, where Hugging Face's generate
    stops by default) unless req.stop_at_end_of_text is off."""
    ids = tuple(int(t) for t in req.stop_token_ids)
    end = getattr(tokenizer, "end_of_text_id", None)
    if req.stop_at_end_of_text and end is not None and int(end) not in ids:
        ids += (int(end),)
    return ids


def _lm_kwargs(req: TextRequest, tokenizer) -> dict:
    return dict(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                min_p=req.min_p, repetition_penalty=req.repetition_penalty,
                stop_token_ids=stop_ids(req, tokenizer), valid_vocab=tokenizer.vocab_size)


# ----------------------------------------------------------------------------- decode
def window_sizes(prompt_len: int, max_new_tokens: int, max_len: int) -> list[int]:
    """Tokens each window decodes: the first continues the whole prompt up to the context,
    each later one re-reads the last max_len // 2 tokens and fills the rest (`window=True`;
    without sliding, one window of max_new_tokens)."""
    sizes, remaining = [min(max_new_tokens, max_len - prompt_len)], max_new_tokens
    remaining -= sizes[0]
    while remaining > 0:
        sizes.append(min(remaining, max_len - max_len // 2))
        remaining -= sizes[-1]
    return sizes


def window_pieces(prompt_ids, tokens, max_len: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(context, tokens decoded after it)]: how a windowed decode of `prompt_ids` saw each
    of its `tokens` (one piece when they fit the context), for scoring them as sampled."""
    history, out, start = np.asarray(prompt_ids, np.int32), [], 0
    tokens = np.asarray(tokens, np.int32)
    for w, n in enumerate(window_sizes(len(history), len(tokens), max_len)):
        context = history if w == 0 else history[-(max_len // 2):]
        out.append((context, tokens[start:start + n]))
        history, start = np.concatenate([history, tokens[start:start + n]]), start + n
    return out


def _warn_window(longest: int, req: TextRequest, max_len: int) -> None:
    if req.window and longest + req.max_new_tokens > max_len:
        warnings.warn(f"window=True: prompt {longest} + max_new_tokens {req.max_new_tokens} > "
                      f"context {max_len}; past it the model sees only the last "
                      f"{max_len // 2} tokens", stacklevel=4)


def check_host_memory(num_rows: int, tokens_per_row: int, what: str) -> None:
    """UserError (one line) when `num_rows` samples of `tokens_per_row` ids cannot fit in
    the host memory available now (Linux; elsewhere nothing is checked)."""
    need = num_rows * (HOST_BYTES_PER_TOKEN * tokens_per_row + HOST_BYTES_PER_ROW)
    have = runtime.available_host_bytes()
    if have is not None and need > have:
        raise UserError(f"{what}: {num_rows} samples of up to {tokens_per_row} tokens need "
                        f"~{need / 2**30:.1f} GiB of host memory; {have / 2**30:.1f} GiB "
                        f"are available: ask for fewer or shorter samples")


def _decode_rows(model, params, tokenizer, rows, row_ids, req: TextRequest):
    """Generated ids (before any stop token) and stopped flags, one per row, decoded
    ROWS_PER_CALL rows at a time. Rows that slide the window are decoded in groups of one
    prompt length, so each slides where it would alone (a prompt's samples do not depend on
    its batch: each row draws from its own stream, row_ids)."""
    if len(rows) > ROWS_PER_CALL:
        out, stopped = [], []
        for start in range(0, len(rows), ROWS_PER_CALL):
            part = slice(start, start + ROWS_PER_CALL)
            got, hit = _decode_rows(model, params, tokenizer, rows[part], row_ids[part], req)
            out.extend(got)
            stopped.extend(hit)
        return out, np.asarray(stopped, bool)
    lengths = np.asarray([len(r) for r in rows])
    _warn_window(int(lengths.max()), req, model.max_len)
    if not req.window or lengths.max() + req.max_new_tokens <= model.max_len:
        return _decode_group(model, params, tokenizer, rows, row_ids, req)
    out, stopped = [None] * len(rows), np.zeros(len(rows), bool)
    for n in np.unique(lengths):
        idx = np.flatnonzero(lengths == n)
        got, hit = _decode_group(model, params, tokenizer, [rows[i] for i in idx],
                                 np.asarray(row_ids)[idx], req)
        for j, i in enumerate(idx):
            out[i], stopped[i] = got[j], hit[j]
    return out, stopped


def _decode_group(model, params, tokenizer, rows, row_ids, req: TextRequest):
    max_len, rng = model.max_len, jax.random.PRNGKey(req.seed)
    kwargs = _lm_kwargs(req, tokenizer)
    history = [np.asarray(r, np.int32) for r in rows]
    out = [np.zeros((0,), np.int32) for _ in rows]
    stopped = np.zeros(len(rows), bool)
    sizes = window_sizes(max(len(r) for r in rows), req.max_new_tokens, max_len)
    for window, n in enumerate(sizes):
        if stopped.all():
            break
        context = history if window == 0 else [h[-(max_len // 2):] for h in history]
        prompts_BxP, lengths_B = _pad(context, max_len)
        # Every later window has the same prompt width and room: one compilation for all,
        # the last, shorter one included (width=room).
        dec = lm_sampling.decode(
            model, params, prompts_BxP, lengths_B, max_new_tokens=n, row_ids_B=row_ids,
            rng=rng if window == 0 else jax.random.fold_in(rng, window),
            width=max_len - max_len // 2 if window else None, **kwargs)
        tokens, lengths, hit = (np.asarray(x) for x in jax.device_get(dec))
        for b in np.flatnonzero(~stopped):
            out[b] = np.concatenate([out[b], tokens[b, :lengths[b]]])
            history[b] = np.concatenate([history[b], tokens[b, :n]])
        stopped |= hit
    return out, stopped


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest occurrence of any stop string in `text`, or None."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _finish(tokenizer, tokens: np.ndarray, stopped: bool, stops, prompt_index, sample_index,
            prompt_ids) -> Completion:
    text = tokenizer.decode(tokens.tolist())
    reason = "stop_token" if stopped else "length"
    cut = find_stop(text, stops)
    if cut is not None:
        text, reason = text[:cut], "stop_string"
        # Longest token prefix whose text lies within the kept text (every token is >= 1
        # byte, so at most that many bytes' worth of tokens).
        k = min(len(tokens), len(text.encode("utf-8")))
        while k and not text.startswith(tokenizer.decode(tokens[:k].tolist())):
            k -= 1
        tokens = tokens[:k]
    return Completion(text, np.asarray(tokens, np.int32), reason, prompt_index, sample_index,
                      prompt_ids)


def generate_texts(model, params, tokenizer, prompts: Sequence[str],
                   req: TextRequest = TextRequest()) -> list[list[Completion]]:
    """`req.num_samples` completions of each prompt (req.prompt is ignored), one batch."""
    fitted = _prepare(model, tokenizer, prompts, req)
    S = req.num_samples
    check_host_memory(S * len(fitted), max(map(len, fitted)) + req.max_new_tokens,
                      f"num_samples={S} x {len(fitted)} prompt(s)")
    rows = [ids for ids in fitted for _ in range(S)]
    row_ids = np.tile(np.arange(S, dtype=np.int32), len(fitted))
    out, stopped = _decode_rows(model, params, tokenizer, rows, row_ids, req)
    return [[_finish(tokenizer, out[i * S + j], bool(stopped[i * S + j]), req.stop, i, j,
                     fitted[i]) for j in range(S)] for i in range(len(fitted))]


def generate_text(model, params, tokenizer, req: TextRequest) -> list[str]:
    """`req.num_samples` continuations of `req.prompt` (decoded, prompt excluded)."""
    req.validate()
    return [c.text for c in generate_texts(model, params, tokenizer, [req.prompt], req)[0]]


def stream_text(model, params, tokenizer, req: TextRequest, on_text: Callable[[str], None],
                chunk_size: int = 16) -> Completion:
    """One completion of `req.prompt`, calling on_text(piece) as each chunk is decoded.

    Pieces concatenate to the returned (and `generate_text`'s) text, windows included
    (window=True: the same slides, the same draws). The last max(len(stop)) - 1 characters
    are held back until no stop string can start there; decoding ends at the first stop
    string. Needs num_samples=1.
    """
    req.validate()
    if req.num_samples != 1:
        raise UserError(f"num_samples={req.num_samples}: streaming prints one sample; use 1")
    if chunk_size < 1:
        raise UserError(f"chunk_size={chunk_size}: must be >= 1")
    (ids,) = _prepare(model, tokenizer, [req.prompt], req)
    _warn_window(len(ids), req, model.max_len)
    hold = max((len(s) for s in req.stop), default=1) - 1
    tokens, shown, stopped, history = np.zeros((0,), np.int32), 0, False, ids
    for window, n in enumerate(window_sizes(len(ids), req.max_new_tokens, model.max_len)):
        context = history if window == 0 else history[-(model.max_len // 2):]
        prompts_BxP, lengths_B = _pad([context], model.max_len)
        rng = jax.random.PRNGKey(req.seed)
        start = len(tokens)
        for chunk in lm_sampling.decode_stream(
                model, params, prompts_BxP, lengths_B,
                rng=rng if window == 0 else jax.random.fold_in(rng, window),
                max_new_tokens=n, chunk_size=chunk_size, row_ids_B=np.zeros(1, np.int32),
                **_lm_kwargs(req, tokenizer)):
            length, stopped = int(chunk.lengths_B[0]), bool(chunk.stopped_B[0])
            tokens = np.concatenate([tokens, np.asarray(chunk.tokens_BxN[0])])[:start + length]
            text = tokenizer.decode(tokens.tolist())
            if find_stop(text, req.stop) is not None:
                break
            safe = len(text.rstrip("\ufffd")) - hold  # an incomplete character may change
            if safe > shown:
                on_text(text[shown:safe])
                shown = safe
        if stopped or find_stop(tokenizer.decode(tokens.tolist()), req.stop) is not None:
            break
        history = np.concatenate([history, tokens[start:]])
    done = _finish(tokenizer, tokens, stopped, req.stop, 0, 0, ids)
    if len(done.text) > shown:
        on_text(done.text[shown:])
    return done
