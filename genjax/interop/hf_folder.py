"""A Hugging Face model folder on disk: config.json, model.safetensors, the tokenizer.

Reading never imports torch (`safetensors.numpy`); every problem is one UserError that
names the file. The tokenizer is `tokenizer.json`, else `vocab.json` + `merges.txt`
(GPT-2's byte-level BPE), wrapped as genjax's BPETokenizer so it travels in checkpoints.
"""
from __future__ import annotations

import json
import os

import numpy as np
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from genjax.errors import UserError
from genjax.data.bpe import BPETokenizer

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"


def read_config(folder: str) -> dict:
    path = os.path.join(folder, CONFIG)
    if not os.path.isdir(folder):
        raise UserError(f"--from={folder!r}: not a directory")
    if not os.path.isfile(path):
        raise UserError(f"{path}: missing (a Hugging Face model folder has config.json)")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: not a JSON object")
    return config


def read_weights(folder: str) -> dict[str, np.ndarray]:
    """{key: numpy array} of model.safetensors (sharded checkpoints are not supported)."""
    path = os.path.join(folder, WEIGHTS)
    if not os.path.isfile(path):
        other = [f for f in ("pytorch_model.bin", "model.safetensors.index.json", "tf_model.h5",
                             "flax_model.msgpack") if os.path.exists(os.path.join(folder, f))]
        hint = f" (found {other}; convert to a single model.safetensors)" if other else ""
        raise UserError(f"{path}: missing{hint}")
    try:
        return load_file(path)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise UserError(f"{path}: not readable safetensors ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})") from None


def read_tokenizer(folder: str) -> BPETokenizer:
    """tokenizer.json, else vocab.json + merges.txt (byte-level BPE, no prefix space)."""
    path = os.path.join(folder, TOKENIZER)
    vocab, merges = (os.path.join(folder, f) for f in ("vocab.json", "merges.txt"))
    try:
        if os.path.isfile(path):
            return BPETokenizer(Tokenizer.from_file(path))
        if os.path.isfile(vocab) and os.path.isfile(merges):
            tok = Tokenizer(models.BPE.from_file(vocab, merges))
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = decoders.ByteLevel()
            return BPETokenizer(tok)
    except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exceptions
        raise UserError(f"{folder}: tokenizer files not readable ({e})") from None
    raise UserError(f"{folder}: no tokenizer ({TOKENIZER}, or vocab.json + merges.txt)")


def write_folder(out: str, config: dict, tensors: dict[str, np.ndarray],
                 tokenizer_json: dict | None) -> list[str]:
    """Writes config.json, model.safetensors (and tokenizer.json) into `out`, which the
    caller has checked is new or empty."""
    os.makedirs(out, exist_ok=True)
    written = [os.path.join(out, CONFIG), os.path.join(out, WEIGHTS)]
    with open(written[0], "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    save_file(tensors, written[1], metadata={"format": "pt"})
    if tokenizer_json is not None:
        written.append(os.path.join(out, TOKENIZER))
        with open(written[-1], "w", encoding="utf-8") as f:
            json.dump(tokenizer_json, f, ensure_ascii=False)
    return written
