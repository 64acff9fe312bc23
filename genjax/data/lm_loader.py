"""Deterministic LM batches: every window of the training tokens, shuffled by grain.

Training: a split's examples are joined (`text_builders.read_split`) and tokenized once;
every start position s in [0, N - seq_len) is one example, tokens[s : s + seq_len + 1].
grain shuffles the window indices with `seed` (a fresh order every epoch), repeats
forever, and process i of P takes elements i, i + P, i + 2P, ... (`ds[i::P]`), so a
global batch is the same whatever P is and processes never share a window within an
epoch. Batches are made and prefetched by threads; the iterator's `get_state()` is
grain's small JSON dict (with the stream's settings, genjax/data/position.py), so a
resumed run continues mid-epoch with identical batches.

Eval: windows start at 0, T, 2T, ... and overlap by one token, so every token but the
split's first is a target exactly once; a final short window is padded (mask 0), and the
last batch gets padding rows, so every process sees the same number of batches. A
periodic eval of `max_batches` batches that cannot cover the split takes that many
windows spread evenly over it (the first, the last, and evenly between), not its opening:
the `cpu` preset's 10 batches were the first 2% of the validation plays, one scene.
"""
from __future__ import annotations

from typing import Iterator

import grain
import numpy as np

from genjax.data import cleaning, position, records, text_builders
from genjax.errors import UserError

READ_THREADS = 2    # threads slicing windows into batches (the tokens are in memory)
PREFETCH = 4        # batches kept ready per process
PAD_ID = 0          # eval padding token; always masked out


class _Windows:
    """Random-access source: element s = {"tokens": tokens[s : s + length]}."""

    def __init__(self, tokens: np.ndarray, length: int):
        self.tokens, self.length = tokens, length

    def __len__(self) -> int:
        return len(self.tokens) - self.length + 1

    def __getitem__(self, s: int) -> dict[str, np.ndarray]:
        return {"tokens": self.tokens[s:s + self.length]}


def dataset_source(data_cfg) -> str:
    """"shakespeare" or the text file path the config names (a text_file always wins)."""
    name, text_file = str(data_cfg["name"]), str(data_cfg["text_file"] or "")
    if name not in ("shakespeare", "text"):
        raise ValueError(f"data.name={name!r}: choose 'shakespeare' or 'text'")
    if text_file:
        return text_file
    if name == "text":
        raise ValueError("data.name='text' needs data.text_file=PATH")
    return "shakespeare"


def cleaning_pipeline(data_cfg) -> cleaning.CleaningPipeline | None:
    """config.data's cleaning keys -> a pipeline; None (the builder's default) when the
    config has no `cleaning` key (minimal configs in tests)."""
    return cleaning.CleaningPipeline.from_config(data_cfg) if "cleaning" in data_cfg else None


def eval_windows(tokens: np.ndarray, seq_len: int, batch_size: int,
                 max_batches: int | None = None, *, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of global batches of `batch_size` windows covering `tokens`
    once, in order, or `max_batches` batches of windows spread evenly over them (module
    docstring): {"tokens": int32[b, T + 1], "mask": float32[b, T]} with
    b = batch_size // process_count and T = seq_len."""
    if batch_size % process_count:
        raise ValueError(f"eval batch_size={batch_size} is not divisible by "
                         f"process_count={process_count}")
    T = int(seq_len)
    starts = np.arange(0, max(len(tokens) - 1, 0), T)
    num_batches = -(-len(starts) // batch_size)
    if max_batches is not None and int(max_batches) < num_batches:
        num_batches = int(max_batches)
        pick = np.linspace(0, len(starts) - 1, num_batches * batch_size)
        starts = starts[np.unique(np.round(pick).astype(np.int64))]
    local = batch_size // process_count
    for b in range(num_batches):
        first = b * batch_size + process_index * local
        out = np.full((local, T + 1), PAD_ID, np.int32)
        mask = np.zeros((local, T), np.float32)
        for row, w in enumerate(range(first, first + local)):
            if w < len(starts):
                window = tokens[starts[w]:starts[w] + T + 1]
                out[row, :len(window)] = window
                mask[row, :len(window) - 1] = 1.0
        yield {"tokens": out, "mask": mask}


class LMData:
    """Token windows of a prepared text dataset, sharded over `process_count` processes.

    config.data.tokenizer picks "char" or "bpe" (byte-level, data.vocab_size tokens, trained
    on the train split); `eval_kwargs()` then gives the characters per token for bits/char.
    """

    def __init__(self, data_cfg, *, seq_len: int, global_batch_size: int, seed: int,
                 process_index: int = 0, process_count: int = 1, tokenizer=None):
        kind = str(data_cfg["tokenizer"])
        if kind not in ("char", "bpe"):
            raise ValueError(f"data.tokenizer={kind!r}: choose 'char' or 'bpe'")
        if global_batch_size % process_count:
            raise ValueError(f"global_batch_size={global_batch_size} is not divisible by "
                             f"process_count={process_count}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} not in [0, {process_count})")
        self.seq_len, self.seed = int(seq_len), int(seed)
        self.global_batch_size = int(global_batch_size)
        self.process_index, self.process_count = int(process_index), int(process_count)
        self.local_batch_size = self.global_batch_size // self.process_count
        self.builder = text_builders.prepare(dataset_source(data_cfg), str(data_cfg["data_dir"]),
                                             cleaning_pipeline(data_cfg))
        vocab_size = int(data_cfg["vocab_size"]) if kind == "bpe" else 0
        # a given tokenizer (a fine-tuned model's source) wins over the data's own
        self.tokenizer = tokenizer or text_builders.builder_tokenizer(self.builder, kind,
                                                                      vocab_size)
        self.unknown_char = str(data_cfg.get("unknown_char", "") or "")
        self._text: dict[str, str] = {}
        self._tokens: dict[str, np.ndarray] = {}
        max_bad = int(data_cfg["max_bad_records"]) if "max_bad_records" in data_cfg else 0
        self.bad_records = records.Budget(max_bad)

    # ------------------------------------------------------------------ splits
    @property
    def splits(self) -> list[str]:
        return sorted(self.builder.info.splits.keys())

    def text(self, split: str) -> str:
        if split not in self._text:
            if split not in self.builder.info.splits:
                raise ValueError(f"split {split!r} not in {self.builder.name}: {self.splits}")
            self._text[split] = self._read_split(split)
        return self._text[split]

    def _read_split(self, split: str) -> str:
        """text_builders.read_split, but an unreadable record is named (file, index) and
        skipped within config.data.max_bad_records (genjax/data/records.py)."""
        source = self.builder.as_data_source(split)
        examples = [self.bad_records.read(source, split, i) for i in range(len(source))]
        examples = sorted((ex for ex in examples if ex is not None),
                          key=lambda ex: int(ex["index"]))
        return self.builder.SEPARATOR.join(bytes(ex["text"]).decode("utf-8") for ex in examples)

    def tokens(self, split: str) -> np.ndarray:
        """The split's token ids; UserError naming the characters the tokenizer lacks
        (unless data.unknown_char names one they become)."""
        if split not in self._tokens:
            self._tokens[split] = self.encode(self.text(split), split)
        return self._tokens[split]

    def encode(self, text: str, where: str) -> np.ndarray:
        """Token ids of `text` (from `where`), characters outside a char vocabulary mapped
        to data.unknown_char where set; else UserError naming them."""
        vocab = getattr(self.tokenizer, "vocab", None)
        if self.unknown_char and isinstance(vocab, list):
            if self.unknown_char not in vocab:
                raise UserError(f"data.unknown_char={self.unknown_char!r} is not in the "
                                f"tokenizer's vocabulary either")
            known = set(vocab)
            text = "".join(c if c in known else self.unknown_char for c in text)
        try:
            return self.tokenizer.encode(text)
        except ValueError as e:
            raise UserError(f"{where} text vs the {self.tokenizer.kind} tokenizer: {e}; "
                            f"set data.unknown_char=<a character it has> to map them") from None

    def num_tokens(self, split: str) -> int:
        return len(self.tokens(split))

    # ------------------------------------------------------------------ training
    def train_dataset(self) -> grain.IterDataset:
        """The grain pipeline behind `train_iterator` (this process's share)."""
        windows = _Windows(self.tokens("train"), self.seq_len + 1)
        if len(windows) < self.global_batch_size:
            raise ValueError(f"train split has {len(windows)} windows of {self.seq_len + 1} "
                             f"tokens, fewer than one batch of {self.global_batch_size}")
        ds = grain.MapDataset.source(windows).shuffle(seed=self.seed).repeat()
        ds = ds[self.process_index::self.process_count]
        ds = ds.batch(self.local_batch_size, drop_remainder=True)
        return ds.to_iter_dataset(grain.ReadOptions(num_threads=READ_THREADS,
                                                    prefetch_buffer_size=PREFETCH))

    def train_iterator(self) -> position.GrainPosition:
        """Infinite {"tokens": int32[global_batch_size // process_count, seq_len + 1]};
        `get_state()` / `set_state()` resume it exactly (under the same settings)."""
        identity = {"dataset": self.builder.info.full_name, "seed": self.seed,
                    "global_batch_size": self.global_batch_size, "seq_len": self.seq_len,
                    "num_tokens": self.num_tokens("train")}
        return position.positioned(self.train_dataset(), identity)

    # ------------------------------------------------------------------ evaluation
    def eval_batches(self, split: str = "validation", batch_size: int | None = None,
                     max_batches: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """This process's rows of global batches of `batch_size` (default: the training
        batch) windows covering `split` once, in order: {"tokens": int32[b, T + 1],
        "mask": float32[b, T]} with b = batch_size // process_count."""
        return eval_windows(self.tokens(split), self.seq_len,
                            int(batch_size or self.global_batch_size), max_batches,
                            process_index=self.process_index, process_count=self.process_count)

    def documents(self, split: str) -> list[tuple[str, str]]:
        """(name, text) of `split`: its plays for Shakespeare (joined with the builder's
        SEPARATOR they are `text(split)`), else one document named after the split."""
        return text_builders.read_documents(self.builder, split)

    def document_eval_batches(self, split: str, batch_size: int, max_batches: int | None
                              ) -> Iterator[tuple[str, int, Iterator, dict]]:
        """Per document of `split` (of >= 2 tokens): (name, characters, `eval_batches` of
        that document alone, windows from its start, its eval_kwargs)."""
        for name, text in self.documents(split):
            tokens = self.encode(text, f"{split} document {name!r}")
            if len(tokens) < 2:
                continue
            batches = eval_windows(tokens, self.seq_len, int(batch_size), max_batches,
                                   process_index=self.process_index,
                                   process_count=self.process_count)
            yield name, len(text), batches, {"chars_per_token": len(text) / len(tokens)}

    # ------------------------------------------------------------------ description
    @property
    def card(self) -> dict:
        """What a run trained on: dataset, where it lives, sizes, vocabulary, cleaning."""
        return {
            "dataset": self.builder.info.full_name,
            "data_dir": str(self.builder.data_dir),
            "splits": {s: {"chars": len(self.text(s)), "tokens": self.num_tokens(s),
                           "examples": self.builder.info.splits[s].num_examples}
                       for s in self.splits},
            "vocab_size": self.tokenizer.vocab_size,
            "tokenizer": self.tokenizer.kind,
            "prep_report": text_builders.builder_report(self.builder),
        }

    def meta(self) -> dict:
        """JSON saved with every checkpoint: enough to decode samples without the data."""
        return {"dataset": self.builder.info.full_name, "tokenizer": self.tokenizer.to_json()}

    def eval_kwargs(self, split: str = "validation") -> dict:
        """For `losses.lm.finalize_eval`: characters per token of the eval split."""
        if split not in self.builder.info.splits:
            split = "train"
        return {"chars_per_token": len(self.text(split)) / max(self.num_tokens(split), 1)}
