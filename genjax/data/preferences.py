"""Preference pairs (prompt, chosen, rejected) as token arrays, with their data card.

Source (`config.data.preferences`):
  ""      synthetic pairs from the Shakespeare text, offline and deterministic: prompt =
          a speaker line ("ROMEO:\\n"), chosen = the first line of that speech (cut to
          whole words that fit T tokens), rejected = the same words shuffled (seed). A
          reader prefers the true line; train pairs from the train plays, eval pairs from
          the held-out plays (`card` says so).
  DIR     DIR/<split>.jsonl, one {"prompt", "chosen", "rejected"} object per line, encoded
          with the policy's tokenizer. An optional DIR/data_card.json with a "tokenizer"
          entry (the to_json() of the tokenizer the pairs were made with) must equal it.

Arrays (N pairs, T = context): tokens int32[N, 2, T + 1] (row 0 chosen, 1 rejected; each
prompt + completion, right-padded with PAD_ID), mask float32[N, 2, T]: 1 where the
*target* tokens[:, :, 1:] is a completion token, so a completion's log-probability sums
over its own tokens only; prompt and padding count for nothing. Bad input (identical
pair, empty field, longer than the context, text the tokenizer cannot encode, another
tokenizer) is a UserError naming the file and line; nothing is trained.
"""
from __future__ import annotations

import json
import os
import re

import grain
import numpy as np

from genjax import jsonl
from genjax.data import position
from genjax.errors import UserError

PAD_ID = 0
FIELDS = ("prompt", "chosen", "rejected")
SPEAKER = re.compile(r"^[A-Z][A-Z0-9 ,.'&-]*:$")
MIN_WORDS = 3


def synthetic_pairs(text: str, max_chars: int, seed: int, limit: int) -> list[dict]:
    """Up to `limit` pairs from the speeches of `text` (module docstring); prompt +
    completion are at most `max_chars` characters (PreferenceData uses T, so that a reward
    model sees every token)."""
    rng = np.random.default_rng(seed)
    lines = text.split("\n")
    out = []
    for speaker, line in zip(lines, lines[1:]):
        if not SPEAKER.match(speaker) or not line.strip():
            continue
        prompt = speaker + "\n"
        words = _fit(line.split(), max_chars - len(prompt))
        if len(words) < MIN_WORDS or len(set(words)) < 2:
            continue
        shuffled = list(words)
        while shuffled == words:
            shuffled = [words[i] for i in rng.permutation(len(words))]
        out.append({"prompt": prompt, "chosen": " ".join(words), "rejected": " ".join(shuffled)})
        if len(out) >= limit:
            break
    return out


def speaker_prompts(text: str, limit: int | None = None,
                    max_chars: int = 2000) -> list[tuple[str, str]]:
    """(prompt, continuation) at the speaker lines of `text` ("ROMEO:" alone on a line),
    up to `limit` of them evenly spaced over the text (None: all): prompt = the speaker
    line + "\\n", as the synthetic pairs' prompts; continuation = the next `max_chars`
    characters of the text (the true speech, for real-text floors)."""
    starts, at = [], 0
    for line in text.split("\n"):
        if SPEAKER.match(line):
            starts.append((at, line))
        at += len(line) + 1
    if limit is not None and len(starts) > int(limit):
        keep = np.unique(np.linspace(0, len(starts) - 1, int(limit)).round().astype(int))
        starts = [starts[i] for i in keep]
    out = []
    for at, line in starts:
        end = at + len(line) + 1
        out.append((line + "\n", text[end:end + max_chars]))
    return out


def _fit(words: list[str], max_chars: int) -> list[str]:
    out, n = [], 0
    for w in words:
        n += len(w) + (1 if out else 0)
        if n > max_chars:
            break
        out.append(w)
    return out


def read_jsonl(path: str) -> list[dict]:
    """Records of a JSONL file; UserError naming the line for bad JSON or missing keys."""
    if not os.path.exists(path):
        raise UserError(f"preference data: no file {path}")
    out = []
    with open(path, encoding="utf-8") as f:
        for i, record in jsonl.records(path, f):
            missing = [k for k in FIELDS
                       if not isinstance(record, dict) or not isinstance(record.get(k), str)]
            if missing:
                raise UserError(f"{path}:{i}: needs string fields {FIELDS}; missing {missing}")
            out.append(record)
    if not out:
        raise UserError(f"preference data {path} is empty")
    return out


def check_tokenizer(card: dict, tokenizer, where: str) -> None:
    """UserError when the card names a tokenizer other than the policy's."""
    theirs = card.get("tokenizer")
    if theirs is not None and theirs != tokenizer.to_json():
        raise UserError(f"{where}: the pairs were made with another tokenizer "
                        f"({theirs.get('kind')}, {len(theirs.get('vocab', []))} symbols) than "
                        f"the policy's ({tokenizer.kind}, {tokenizer.vocab_size}); "
                        f"re-tokenise them or train with that policy")


def encode_pairs(records: list[dict], tokenizer, seq_len: int, where: str = "pairs",
                 max_tokens: int = 0):
    """-> (tokens int32[N, 2, T + 1], mask float32[N, 2, T]), T = seq_len (module doc).
    A row may hold T + 1 tokens (a policy's inputs and targets), or `max_tokens` when set
    (a reward model reads the T inputs only); a longer one is a UserError naming it."""
    n, T = len(records), int(seq_len)
    limit = int(max_tokens) or T + 1
    if not 0 < limit <= T + 1:
        raise ValueError(f"max_tokens={max_tokens}: a row holds at most seq_len + 1 = {T + 1}")
    room = f"the context ({T} + 1)" if limit == T + 1 else f"the {limit} the model reads"
    tokens = np.full((n, 2, T + 1), PAD_ID, np.int32)
    mask = np.zeros((n, 2, T), np.float32)
    for i, r in enumerate(records):
        at = f"{where}:{i + 1}"
        empty = [k for k in FIELDS if not r[k]]
        if empty:
            raise UserError(f"{at}: empty {', '.join(empty)}")
        if r["chosen"] == r["rejected"]:
            raise UserError(f"{at}: chosen and rejected are identical (no preference)")
        try:
            prompt = tokenizer.encode(r["prompt"])
            pair = [tokenizer.encode(r["chosen"]), tokenizer.encode(r["rejected"])]
        except ValueError as e:
            raise UserError(f"{at}: not encodable with the policy's tokenizer "
                            f"({tokenizer.kind}, {tokenizer.vocab_size} symbols): {e}") from None
        for row, completion in enumerate(pair):
            length = len(prompt) + len(completion)
            if length > limit:
                raise UserError(f"{at}: prompt + {FIELDS[row + 1]} is {length} tokens, longer "
                                f"than {room}")
            tokens[i, row, :length] = np.concatenate([prompt, completion])
            mask[i, row, len(prompt) - 1:length - 1] = 1.0
    return tokens, mask


class _Pairs:
    """Random-access source: element i = pair i's {"tokens", "mask"}."""

    def __init__(self, tokens, mask):
        self.tokens, self.mask = tokens, mask

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict:
        return {"tokens": self.tokens[i], "mask": self.mask[i]}


class PreferenceData:
    """Encoded pairs of each split. `tokenizer` is the policy's; `text(split)` gives the
    raw text synthetic pairs are cut from (only called for the synthetic source)."""

    def __init__(self, data_cfg, tokenizer, text, *, seq_len: int, global_batch_size: int,
                 seed: int, process_index: int = 0, process_count: int = 1,
                 max_tokens: int = 0):
        self.source = str(data_cfg["preferences"])
        self.tokenizer, self.seq_len, self.seed = tokenizer, int(seq_len), int(seed)
        self.max_tokens = int(max_tokens)  # encode_pairs' (0: seq_len + 1)
        self.limit = int(data_cfg["max_pairs"])
        self.global_batch_size = int(global_batch_size)
        self.process_index, self.process_count = int(process_index), int(process_count)
        if self.global_batch_size % self.process_count:
            raise ValueError(f"batch_size={self.global_batch_size} is not divisible by "
                             f"process_count={self.process_count}")
        self.local_batch_size = self.global_batch_size // self.process_count
        self._text = text
        self._arrays: dict[str, tuple] = {}
        if self.source:
            card_path = os.path.join(self.source, "data_card.json")
            if os.path.exists(card_path):
                with open(card_path, encoding="utf-8") as f:
                    check_tokenizer(json.load(f), tokenizer, card_path)
        self.arrays("train")  # bad training data fails here, before any step

    @property
    def splits(self) -> list[str]:
        if not self.source:
            return ["train", "validation", "test"]
        return sorted(f[:-6] for f in os.listdir(self.source) if f.endswith(".jsonl"))

    def text(self, split: str) -> str:
        """The raw text of `split` of the policy's text dataset (evaluators: vocabulary,
        memorisation, held-out prompts), whatever the pairs' source."""
        return self._text(split)

    def records(self, split: str) -> list[dict]:
        if self.source:
            return read_jsonl(os.path.join(self.source, f"{split}.jsonl"))
        return synthetic_pairs(self._text(split), self.seq_len, self.seed, self.limit)

    def arrays(self, split: str):
        if split not in self._arrays:
            where = os.path.join(self.source, f"{split}.jsonl") if self.source else split
            self._arrays[split] = encode_pairs(self.records(split), self.tokenizer,
                                               self.seq_len, where, self.max_tokens)
        return self._arrays[split]

    def train_iterator(self):
        """Infinite {"tokens": int32[b, 2, T + 1], "mask": float32[b, 2, T]}, b the local
        batch; grain shuffles pairs with `seed`; get_state()/set_state() resume exactly."""
        tokens, mask = self.arrays("train")
        if len(tokens) < self.global_batch_size:
            raise UserError(f"{len(tokens)} training pairs, fewer than one batch of "
                            f"{self.global_batch_size}")
        ds = grain.MapDataset.source(_Pairs(tokens, mask)).shuffle(seed=self.seed).repeat()
        ds = ds[self.process_index::self.process_count]
        ds = ds.batch(self.local_batch_size, drop_remainder=True)
        identity = {"seed": self.seed, "global_batch_size": self.global_batch_size,
                    "seq_len": self.seq_len, "num_pairs": len(tokens)}
        return position.positioned(
            ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)), identity)

    def eval_batches(self, split: str = "validation", batch_size: int | None = None,
                     max_batches: int | None = None):
        """This process's rows of the split's pairs in order; the last batch is padded
        with all-zero masks (eval_fn counts pairs whose mask is non-zero)."""
        tokens, mask = self.arrays(split)
        size = int(batch_size or self.global_batch_size)
        if size % self.process_count:
            raise ValueError(f"eval batch_size={size} is not divisible by "
                             f"process_count={self.process_count}")
        local = size // self.process_count
        num = -(-len(tokens) // size)
        for b in range(num if max_batches is None else min(num, int(max_batches))):
            rows = np.arange(b * size + self.process_index * local,
                             b * size + (self.process_index + 1) * local)
            ok = rows < len(tokens)
            safe = np.where(ok, rows, 0)
            yield {"tokens": tokens[safe], "mask": mask[safe] * ok[:, None, None]}

    def card(self) -> dict:
        """Source, rule, seed, counts and mean lengths of each split."""
        out = {"source": self.source or "synthetic: Shakespeare speaker line -> true first "
               "line (chosen) vs its words shuffled (rejected)", "seed": self.seed,
               "tokenizer": {"kind": self.tokenizer.kind, "size": self.tokenizer.vocab_size},
               "splits": {}}
        for s in self.splits:
            _, mask = self.arrays(s)
            out["splits"][s] = {"pairs": len(mask),
                                "completion_tokens": mask.sum(-1).mean(0).round(2).tolist()}
        return out

    def meta(self) -> dict:
        return {"dataset": "preferences:" + (self.source or "synthetic-shakespeare"),
                "tokenizer": self.tokenizer.to_json()}

    def eval_kwargs(self) -> dict:
        return {}
