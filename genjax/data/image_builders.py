"""TFDS builders for image data that never download: Fashion-MNIST from local IDX files, and a
folder of PNG/JPEG files with one sub-folder per class.

Both write array_record files whose features are only `tfds.features.Tensor`: encoding
`tfds.features.Image` needs TensorFlow (checked with tensorflow-datasets 4.9.10), and we
never require it. One example:
    {"image": uint8[H, W, C], "label": int64[], "index": int64[] (row in the source IDX
     file, or position within its split of an image folder, whose files.json maps it to
     the file: the numbers duplicates.json refers to)}
Next to the data (`builder.data_dir`): class_names.json, duplicates.json (exact duplicates
by image bytes, within and across splits), files.json for image folders, and, once
prepared, data_card.json / data_card.md (sources with checksums and the Debian package,
splits, classes, the duplicate report, checksums of every file; genjax/data/data_card.py).
The config name is a fingerprint of the source bytes, so two sources never share a folder.

  python -m genjax.data.image_builders fashion_mnist [DATA_DIR]
  python -m genjax.data.image_builders /path/to/folder [DATA_DIR]  # native size, channels
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from genjax import runtime
from genjax.errors import UserError
from genjax.data import build_lock, data_card
from genjax.data.idx import read_idx
from genjax.data.image_files import load_image, native_format

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
_REPO_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "data", "fashion-mnist")
INSTALL_HINT = ("install it with `sudo apt-get install dataset-fashion-mnist`, or run "
                "`make data` (unpacks it into ./data/fashion-mnist without root)")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_TENSOR = tfds.features.Tensor
# tfds' own lookup of a builder's source file needs the `importlib_resources` backport, which
# is not installed on Python >= 3.9; our builders say where they live instead.
_CODE_PATH = epath.Path(__file__)


class DataNotFoundError(FileNotFoundError, UserError):
    """Missing data; the message names the command that installs or prepares it."""


def default_data_dir(data_dir: str = "") -> str:
    """`data_dir`, else $GENJAX_DATA_DIR, else ~/.cache/genjax/tfds."""
    return os.path.expanduser(data_dir or os.environ.get("GENJAX_DATA_DIR")
                              or "~/.cache/genjax/tfds")


def _fingerprint(paths: list[str], root: str, extra: str = "") -> str:
    """12 hex digits of sha256 over (path relative to root, bytes) of each file."""
    h = hashlib.sha256(extra.encode())
    for p in paths:
        h.update(os.path.relpath(p, root).encode() + b"\0")
        with open(p, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:12]


def _features(shape) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "image": _TENSOR(shape=tuple(shape), dtype=np.uint8),
        "label": _TENSOR(shape=(), dtype=np.int64),
        "index": _TENSOR(shape=(), dtype=np.int64)})


def _write_json(builder, name: str, obj) -> None:
    # During download_and_prepare, data_path is the temporary folder TFDS renames at the end.
    (builder.data_path / name).write_text(json.dumps(obj, indent=1))


def read_json(builder, name: str):
    """A JSON file written next to the data (class_names.json, duplicates.json, ...)."""
    return json.loads((builder.data_path / name).read_text())


# --------------------------------------------------------------------------- duplicates
def duplicate_report(images: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                     max_listed: int = 5) -> dict:
    """Exact duplicates (same image bytes) within each split and of later splits in earlier.

    images: {split: uint8[N, ...]} in source order; indices in the report are rows of it.
    Per split: `groups` (distinct images seen more than once), `redundant` (copies beyond
    the first), `label_conflicts` (groups with more than one label), a few `examples`.
    "<b>_in_<a>": `count` of b's examples whose image also occurs in a, a few `examples`.
    """
    hashes = {s: [hashlib.blake2b(x.tobytes(), digest_size=16).digest() for x in imgs]
              for s, imgs in images.items()}
    report: dict = {"hash": "blake2b-128 of the uint8 image bytes"}
    where: dict[str, dict[bytes, list[int]]] = {}
    for split, hs in hashes.items():
        rows: dict[bytes, list[int]] = {}
        for i, h in enumerate(hs):
            rows.setdefault(h, []).append(i)
        where[split] = rows
        groups = [r for r in rows.values() if len(r) > 1]
        report[split] = {
            "num_examples": len(hs), "groups": len(groups),
            "redundant": sum(len(r) - 1 for r in groups),
            "label_conflicts": sum(len(set(labels[split][r].tolist())) > 1 for r in groups),
            "examples": groups[:max_listed]}
    splits = list(images)
    for a_i, a in enumerate(splits):
        for b in splits[a_i + 1:]:
            hits = [(i, where[a][h]) for i, h in enumerate(hashes[b]) if h in where[a]]
            report[f"{b}_in_{a}"] = {
                "count": len(hits),
                "label_conflicts": sum(int(labels[b][i]) not in set(labels[a][r].tolist())
                                       for i, r in hits),
                "examples": [{b: i, a: r[:max_listed]} for i, r in hits[:max_listed]]}
    return report


def duplicate_summary(report: dict) -> dict:
    """Counts only (for metadata and logs)."""
    return {k: {kk: vv for kk, vv in v.items() if kk != "examples"}
            for k, v in report.items() if isinstance(v, dict)}


# --------------------------------------------------------------------------- Fashion-MNIST
def find_fashion_mnist(source_dir: str = "") -> str:
    """The folder holding the four Fashion-MNIST IDX files (plain or .gz)."""
    candidates = [source_dir] if source_dir else [DEBIAN_DIR, _REPO_DATA,
                                                  os.path.abspath("data/fashion-mnist")]
    for folder in candidates:
        if all(_idx_file(folder, n) for pair in FASHION_MNIST_FILES.values() for n in pair):
            return os.path.abspath(folder)
    raise DataNotFoundError(f"Fashion-MNIST IDX files not found in {candidates}; "
                            f"{INSTALL_HINT}")


def _idx_file(folder: str, stem: str) -> str | None:
    for name in (stem + ".gz", stem):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def read_fashion_mnist(source_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images uint8[N, 28, 28], labels uint8[N])}, checked for consistency."""
    out = {}
    for split, (img_stem, lbl_stem) in FASHION_MNIST_FILES.items():
        img_path, lbl_path = _idx_file(source_dir, img_stem), _idx_file(source_dir, lbl_stem)
        images, labels = read_idx(img_path), read_idx(lbl_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"{img_path}: expected uint8 images [N, H, W], "
                             f"got {images.dtype} {images.shape}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"{lbl_path}: {labels.shape[0] if labels.ndim else 0} labels "
                             f"for {images.shape[0]} images in {img_path}")
        if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
            raise ValueError(f"{lbl_path}: label {int(labels.max())} out of range 0..9")
        out[split] = (images, labels)
    return out


# TFDS's warning for every builder whose config is not declared ahead (ours are named
# after their source files' fingerprint): expected here.
TFDS_NOTICES = ("Using custom data configuration",)


class GenjaxFashionMnist(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST (Xiao et al. 2017): 60k train / 10k test 28x28x1, 10 classes."""

    VERSION = tfds.core.Version("1.0.0")
    code_path = _CODE_PATH

    def __init__(self, *, source_dir: str = "", **kwargs):
        self.source_dir = find_fashion_mnist(source_dir)
        paths = [_idx_file(self.source_dir, n) for p in FASHION_MNIST_FILES.values() for n in p]
        config = tfds.core.BuilderConfig(
            name="idx-" + _fingerprint(paths, self.source_dir), version=self.VERSION,
            description=f"IDX files in {self.source_dir}")
        kwargs.setdefault("file_format", "array_record")
        runtime.quiet_absl_notices(TFDS_NOTICES)
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=self.__class__.__doc__, features=_features((28, 28, 1)),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            metadata=tfds.core.MetadataDict(class_names=list(FASHION_MNIST_CLASSES)))

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing is downloaded
        data = read_fashion_mnist(self.source_dir)
        report = duplicate_report({s: x for s, (x, _) in data.items()},
                                  {s: y for s, (_, y) in data.items()})
        self.info.metadata.update(source_dir=self.source_dir,
                                  duplicates=duplicate_summary(report))
        _write_json(self, "class_names.json", list(FASHION_MNIST_CLASSES))
        _write_json(self, "duplicates.json", report)
        return {split: self._generate_examples(x[..., None], y)
                for split, (x, y) in data.items()}

    def _generate_examples(self, images, labels):
        for i, (x, y) in enumerate(zip(images, labels)):
            yield i, {"image": x, "label": int(y), "index": i}


# --------------------------------------------------------------------------- image folder
def list_image_folder(folder: str) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names = sorted sub-folder names, [(path relative to folder, label)] sorted).

    Image files are *.png/*.jpg/*.jpeg at any depth under a class folder; hidden files and
    files directly in `folder` are ignored.
    """
    if not os.path.isdir(folder):
        raise DataNotFoundError(f"image folder {folder!r} does not exist")
    classes = sorted(e.name for e in os.scandir(folder)
                     if e.is_dir() and not e.name.startswith("."))
    files = []
    for label, name in enumerate(classes):
        found = []
        for root, dirs, names in os.walk(os.path.join(folder, name)):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [os.path.relpath(os.path.join(root, n), folder) for n in names
                      if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")]
        if not found:
            raise ValueError(f"class folder {os.path.join(folder, name)} has no "
                             f"{'/'.join(IMAGE_EXTENSIONS)} files")
        files += [(p, label) for p in sorted(found)]
    if not classes:
        raise ValueError(f"{folder} has no class sub-folders (expected {folder}/<class>/*.png)")
    return classes, files


def split_files(files: list[tuple[str, int]], test_percent: int) -> dict[str, list[int]]:
    """{"train": [...], "test": [...]} positions in `files`: the test split is the
    round(n * test_percent / 100) files (at least 1) whose sha1(path) sorts first."""
    order = sorted(range(len(files)), key=lambda i: hashlib.sha1(files[i][0].encode()).digest())
    n_test = max(1, round(len(files) * test_percent / 100)) if test_percent else 0
    if len(files) - n_test < 1:
        raise ValueError(f"{len(files)} images cannot make a train and a test split")
    return {"train": sorted(order[n_test:]), "test": sorted(order[:n_test])}


class GenjaxImageFolder(tfds.core.GeneratorBasedBuilder):
    """A folder of images, one sub-folder per class, at a fixed square size."""

    VERSION = tfds.core.Version("1.0.0")
    code_path = _CODE_PATH

    def __init__(self, *, folder: str, image_size: int = 0, channels: int = 0,
                 test_percent: int = 10, **kwargs):
        """image_size 0 / channels 0: those of the first file (sorted order)."""
        self.folder = os.path.abspath(folder)
        self.class_names, self.files = list_image_folder(self.folder)
        first = os.path.join(self.folder, self.files[0][0])
        native_size, native_channels = native_format(first)
        self.image_size = int(image_size) or native_size
        self.channels = int(channels) or native_channels
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 0, 1 or 3, got {channels}")
        self.test_percent = int(test_percent)
        paths = [os.path.join(self.folder, p) for p, _ in self.files]
        slug = re.sub(r"[^a-z0-9]+", "_", os.path.basename(self.folder).lower()).strip("_")
        shape = f"{self.image_size}x{self.image_size}x{self.channels}"
        config = tfds.core.BuilderConfig(
            name=f"{slug or 'images'}-{_fingerprint(paths, self.folder, self.folder)}-{shape}"
                 f"-test{self.test_percent}",
            version=self.VERSION, description=f"{self.folder} at {shape}")
        kwargs.setdefault("file_format", "array_record")
        runtime.quiet_absl_notices(TFDS_NOTICES)
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=f"Images from {self.folder}",
            features=_features((self.image_size, self.image_size, self.channels)),
            metadata=tfds.core.MetadataDict(class_names=self.class_names))

    def _split_generators(self, dl_manager):
        del dl_manager
        splits = split_files(self.files, self.test_percent)
        images = np.stack([load_image(os.path.join(self.folder, p), self.image_size,
                                      self.channels) for p, _ in self.files])
        labels = np.array([y for _, y in self.files], np.int64)
        report = duplicate_report({s: images[ix] for s, ix in splits.items()},
                                  {s: labels[ix] for s, ix in splits.items()})
        # The report's indices are positions within each split; files.json maps them back.
        self.info.metadata.update(source_dir=self.folder, duplicates=duplicate_summary(report))
        _write_json(self, "class_names.json", self.class_names)
        _write_json(self, "duplicates.json", report)
        _write_json(self, "files.json", {s: [self.files[i][0] for i in ix]
                                         for s, ix in splits.items()})
        return {s: self._generate_examples(images[ix], labels[ix]) for s, ix in splits.items()}

    def _generate_examples(self, images, labels):
        for i, (x, y) in enumerate(zip(images, labels)):
            yield i, {"image": x, "label": int(y), "index": i}


# --------------------------------------------------------------------------- data card
def write_card(builder) -> dict:
    """data_card.json / .md for one of our prepared builders (see the module docstring)."""
    if isinstance(builder, GenjaxFashionMnist):
        paths = [_idx_file(builder.source_dir, n) for p in FASHION_MNIST_FILES.values()
                 for n in p]
        deb = data_card.debian_package(paths[0]) or {}
        sources = [{"kind": "Fashion-MNIST IDX files", "path": builder.source_dir,
                    "debian_package": deb.get("package"), "version": deb.get("version"),
                    "homepage": "https://github.com/zalandoresearch/fashion-mnist"}]
        sources += [{"kind": "file", "path": p, "sha256": data_card.sha256_file(p)}
                    for p in paths]
    else:
        sources = [{"kind": "image folder", "path": builder.folder,
                    "files": len(builder.files), "test_percent": builder.test_percent}]
    names = list(builder.info.metadata["class_names"])
    card = {"name": builder.name, "dataset": builder.info.full_name,
            "data_dir": builder.data_dir, "created_by": "genjax.data.image_builders",
            "sources": sources,
            "splits": {s: {"examples": v.num_examples,
                           "image_shape": list(builder.info.features["image"].shape)}
                       for s, v in builder.info.splits.items()},
            "duplicates": read_json(builder, "duplicates.json"),
            "vocabulary": {"classes": {"size": len(names), "sample": names}}}
    return data_card.write_card(builder.data_dir, card)


# --------------------------------------------------------------------------- entry point
def _own_builder(name_or_path: str, data_dir: str, kwargs: dict):
    if name_or_path == "fashion_mnist":
        return GenjaxFashionMnist(data_dir=data_dir, **kwargs)
    if os.path.isdir(name_or_path):
        return GenjaxImageFolder(folder=name_or_path, data_dir=data_dir, **kwargs)
    return None


def prepare_images(name_or_path: str, data_dir: str = "", **kwargs) -> tfds.core.DatasetBuilder:
    """A prepared builder: builds "fashion_mnist" (kwargs: source_dir) or an image folder
    (kwargs: image_size, channels, test_percent) if needed; never downloads.

    Any other name is a TFDS catalog dataset that must already be prepared in data_dir.
    """
    data_dir = default_data_dir(data_dir)
    builder = _own_builder(name_or_path, data_dir, kwargs)
    if builder is None:
        builder = tfds.builder(name_or_path, data_dir=data_dir, **kwargs)
        if not builder.is_prepared():
            raise DataNotFoundError(
                f"TFDS dataset {name_or_path!r} is not prepared in {data_dir}; prepare it "
                f"(needs TensorFlow and internet) with: python -c \"import tensorflow_datasets "
                f"as tfds; tfds.builder('{name_or_path}', data_dir='{data_dir}')"
                f".download_and_prepare(file_format='array_record')\"")
        return builder
    if not builder.is_prepared():
        builder = build_lock.prepare_once(
            data_dir, lambda: _own_builder(name_or_path, data_dir, kwargs),
            lambda b: b.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False)))
    if not data_card.has_card(builder.data_dir):
        write_card(builder)
    return builder


def main(argv: list[str]) -> None:
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    builder = prepare_images(argv[1], argv[2] if len(argv) == 3 else "")
    print(builder.data_dir)
    print(json.dumps(builder.info.metadata.get("duplicates", {}), indent=1))


if __name__ == "__main__":
    main(sys.argv)
