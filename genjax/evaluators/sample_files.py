"""Samples made anywhere, read from a file for `python -m genjax.evaluate --samples=FILE`.

  .npz    images: uint8 [N, H, W] or [N, H, W, C] (0..255) under the key `images` (or the
          file's only array), optional `labels` int [N] (the class each sample was asked
          for: conditional accuracy). H x W: the dataset's own size (Fashion-MNIST 28x28,
          padded centred with the background to the model size, as the loader pads real
          images) or the model size (32x32, e.g. genjax's own samples, used as they are);
          C: the data's channels, or 1 <-> 3 (converted as the loader converts).
  .txt    text: samples separated by lines holding only `---`; a file without such a line
          is one sample. UTF-8, any line breaks (CRLF, CR read as LF); whitespace-only
          samples are dropped.
  .jsonl  text: one JSON object {"text": "..."} per line (blank lines skipped; an empty
          "text" is a sample: a model may stop at once).
A file that cannot be read, or holds no samples or the wrong kind, is a UserError naming
the file and what is wrong (one line, nothing written).
"""
from __future__ import annotations

import dataclasses
import os
import re
import zipfile

import numpy as np

from genjax import jsonl
from genjax.errors import UserError

SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)  # .txt: between samples
KINDS = {".npz": "images", ".txt": "text", ".jsonl": "text"}


@dataclasses.dataclass
class Samples:
    """A file's samples: images (+ labels int32[N] or None), or texts. images: uint8[N, H,
    W, C] as read; float32[N, *model shape] in [-1, 1] once `for_data` converted them."""
    path: str
    kind: str                            # "images" | "text"
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    texts: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts) if self.kind == "text" else len(self.images)

    @property
    def has(self) -> tuple[str, ...]:
        """What the file offers an evaluator: ("images", "labels") / ("images",) / ("text",)."""
        if self.kind == "text":
            return ("text",)
        return ("images",) if self.labels is None else ("images", "labels")


def read(path: str) -> Samples:
    """The samples of `path` (format by extension: module docstring); UserError if bad."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in KINDS:
        raise UserError(f"--samples={path!r}: unknown file type {ext or '(none)'!r}; use .npz "
                        f"(images), .txt or .jsonl (text)")
    if not os.path.isfile(path):
        raise UserError(f"--samples={path!r} " + ("is a folder, not a file" if os.path.isdir(path)
                                                  else "does not exist"))
    if ext == ".npz":
        out = _read_npz(path)
    else:
        with open(path, "rb") as f:
            raw = f.read()
        texts = _texts_txt(path, raw) if ext == ".txt" else _texts_jsonl(path, raw)
        out = Samples(path=path, kind="text", texts=texts)
    if not len(out):
        raise UserError(f"{path}: no samples in the file")
    return out


# ------------------------------------------------------------------ images
def _read_npz(path: str) -> Samples:
    try:
        with open(path, "rb") as f:  # ours to close, also when np.load fails
            with np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: not a readable .npz file ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})") from None
    others = [k for k in arrays if k != "labels"]
    key = "images" if "images" in arrays else (others[0] if len(others) == 1 else None)
    if key is None:
        raise UserError(f"{path}: no `images` array (the file has {sorted(arrays)})")
    images = arrays[key]
    if images.dtype != np.uint8:
        raise UserError(f"{path}: images are {images.dtype}; expected uint8 (0..255) "
                        f"[N, H, W] or [N, H, W, C]")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise UserError(f"{path}: images have shape {list(images.shape)}; expected "
                        f"[N, H, W] or [N, H, W, C] with C = 1 or 3")
    labels = arrays.get("labels")
    if labels is not None:
        if labels.dtype.kind not in "iu" or labels.shape != (len(images),):
            raise UserError(f"{path}: labels are {labels.dtype} {list(labels.shape)}; expected "
                            f"integers [N] with N = {len(images)} (one per image)")
        labels = labels.astype(np.int32)
    return Samples(path=path, kind="images", images=images, labels=labels)


def for_data(samples: Samples, data) -> Samples:
    """`samples` with its images as `data` (an ImageData) gives real ones: float32[N,
    *data.image_shape] in [-1, 1]; UserError for a size or channel count the data does not
    have, or labels outside its classes. Text samples are returned as they are."""
    from genjax.data.image_loader import to_model_images
    if samples.kind != "images":
        return samples
    model_shape = tuple(data.image_shape)
    native = tuple(getattr(data, "native_shape", model_shape))
    n, h, w, c = samples.images.shape
    sizes = {native[:2], model_shape[:2]}
    if (h, w) not in sizes:
        want = " or ".join(f"{a}x{b}" for a, b in sorted(sizes))
        raise UserError(f"{samples.path}: images are {h}x{w}; the dataset's are {want}")
    if c != model_shape[2] and {c, model_shape[2]} != {1, 3}:
        raise UserError(f"{samples.path}: images have {c} channels; the dataset's have "
                        f"{model_shape[2]}")
    y, k = samples.labels, len(data.class_names)
    if y is not None and (y.min() < 0 or y.max() >= k):
        raise UserError(f"{samples.path}: labels span {int(y.min())}..{int(y.max())}; the "
                        f"dataset's classes are 0..{k - 1}")
    return dataclasses.replace(samples, images=to_model_images(samples.images, model_shape))


# ------------------------------------------------------------------ text
def _decode(path: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UserError(f"{path}: line {line} is not valid UTF-8 (byte {e.start})") from None


def _texts_txt(path: str, raw: bytes) -> list[str]:
    # Windows (CRLF) and old Mac (CR) line breaks read as "\n", as Python's text mode does
    text = _decode(path, raw).replace("\r\n", "\n").replace("\r", "\n")
    pieces = SEPARATOR.split(text)
    # the line breaks around a separator line belong to it, not to the samples
    pieces = [p[1:] if i and p.startswith("\n") else p for i, p in enumerate(pieces)]
    pieces = [p[:-1] if i < len(pieces) - 1 and p.endswith("\n") else p
              for i, p in enumerate(pieces)]
    return [p for p in pieces if p.strip()]


def _texts_jsonl(path: str, raw: bytes) -> list[str]:
    texts = []
    for i, obj in jsonl.records(path, _decode(path, raw).splitlines()):
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise UserError(f"{path}: line {i} is not an object with a string \"text\"")
        try:  # a JSON escape can name half a surrogate pair, which is no character
            obj["text"].encode("utf-8")
        except UnicodeEncodeError as e:
            raise UserError(f"{path}: line {i}'s \"text\" holds a lone surrogate "
                            f"({obj['text'][e.start]!a}), not a character") from None
        texts.append(obj["text"])
    return texts
