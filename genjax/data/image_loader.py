"""Image batches for training and evaluation: a prepared TFDS dataset read with grain.

  data = ImageData(config.data, global_batch_size=128, seed=0)
  it = data.train_iterator()   # {"image": float32[b, H, W, C] in [-1, 1], "label": int32[b]}
  state = it.get_state()       # JSON; a new iterator's set_state(state) gives the same batches
  for batch in data.eval_batches("test", 256): ...   # + "mask": float32[b], 0 = padding

b = global_batch_size // process_count. config.data (see configs/diffusion_fmnist.py):
  name          "fashion_mnist" (genjax/data/image_builders.py, built from local IDX files),
                "image_folder" (a folder with one sub-folder per class), or any TFDS catalog
                name (read from data_dir; TFDS downloads it only if it is not there).
  source_dir    Fashion-MNIST IDX folder; "" = /usr/share/datasets/fashion-mnist, ./data/...
  image_folder  the folder, for name == "image_folder"
  image_size    0 = native; larger pads each image centred with the background value -1
  channels      0 = native; 1 <-> 3 converts (luma / repeated grey)
  data_dir      "" = $GENJAX_DATA_DIR or ~/.cache/genjax/tfds
  classes       class names or indices to keep in EVERY split (train, test, eval); () = all.
                Labels keep their ids (Sneaker stays 7), num_examples counts the subset,
                meta()/card name it. Row labels are read once per split (~1 min for 60k
                rows on 2 cores) and cached as labels_<split>.npy in the dataset's folder.
  train_images  "" or an .npz of labelled uint8 images (genjax/data/image_npz.py; e.g. the
                winners.npz of genjax.data.sample_image_preferences): the split
                "train_images", which train_iterator() then reads instead of "train".
                Everything else (eval, the evaluators' real train/test sets) stays the
                dataset's. Its class_names must be the dataset's; its images the native or
                the model size; a resumed position must come from the same file (sha256).
Training order: one seeded permutation of the split per epoch (seed + epoch). Global batch k
holds positions [k*G, (k+1)*G) of that stream; process p takes every process_count-th, so
the global batches do not depend on the number of processes.
"""
from __future__ import annotations

import math
import os
from typing import Any, Iterator, Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds

from genjax.errors import ConfigError
from genjax.data import data_card, image_npz, position, records
from genjax.data.image_builders import (DataNotFoundError, default_data_dir, prepare_images)

READ_THREADS = 2    # threads reading and converting batches
PREFETCH = 4        # batches kept ready per process
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 RGB -> grey


def _catalog_source(name: str, data_dir: str):
    """(splits, class names, image shape) of a TFDS catalog dataset; downloads only if
    absent. Works under tfds.testing.mock_data. Preparing a catalog dataset whose features
    include tfds.features.Image needs TensorFlow; reading a prepared one does not."""
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ConfigError(f"config.data.name={name!r} is neither fashion_mnist, image_folder "
                          f"nor a TFDS dataset: {str(e).splitlines()[0]}") from None
    kwargs = dict(data_dir=data_dir, download=True,
                  download_and_prepare_kwargs={"file_format": "array_record"})
    try:
        splits = tfds.data_source(name, **kwargs)
        if not splits:  # mock_data(policy=USE_CODE) knows no split names: ask for ours
            splits = dict(zip(("train", "test"),
                              tfds.data_source(name, split=["train", "test"], **kwargs)))
    except Exception as e:  # noqa: BLE001  (no network, no TensorFlow, tfrecord-only copy...)
        raise DataNotFoundError(
            f"TFDS dataset {name!r} is not prepared in {data_dir} and could not be "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); prepare it "
            f"where TensorFlow and internet are available: python -c \"import "
            f"tensorflow_datasets as tfds; tfds.builder('{name}', data_dir='{data_dir}')"
            f".download_and_prepare(file_format='array_record')\"") from e
    features = builder.info.features
    if "image" not in features:
        raise ConfigError(f"TFDS dataset {name!r} has no 'image' feature: {list(features)}")
    label = features["label"] if "label" in features else None
    names = list(getattr(label, "names", None) or [])
    return splits, names, tuple(features["image"].shape), str(builder.data_dir)


def _open(data_cfg, data_dir: str):
    """(splits {name: random-access source}, class names, native image shape, the dataset's
    folder, dataset name, duplicate counts or None) for config.data, building our own
    datasets if needed."""
    name = str(data_cfg.name)
    if data_cfg.get("image_folder") and name != "image_folder":  # else ignored: say so
        raise ConfigError(f"config.data.image_folder needs data.name=image_folder, not {name!r}")
    if name == "fashion_mnist":
        builder = prepare_images("fashion_mnist", data_dir, source_dir=str(data_cfg.source_dir))
    elif name == "image_folder":
        if not data_cfg.image_folder:
            raise ConfigError("config.data.name=image_folder needs config.data.image_folder")
        folder = os.path.expanduser(str(data_cfg.image_folder))
        if not os.path.isdir(folder):
            raise DataNotFoundError(f"config.data.image_folder={folder!r} does not exist")
        builder = prepare_images(folder, data_dir, image_size=int(data_cfg.image_size),
                                 channels=int(data_cfg.channels))
    else:
        return (*_catalog_source(name, data_dir), name, None)
    return (builder.as_data_source(), list(builder.info.metadata["class_names"]),
            tuple(builder.info.features["image"].shape), str(builder.data_dir),
            f"{builder.name}/{builder.builder_config.name}",
            builder.info.metadata.get("duplicates"))


def _target_shape(native: Sequence[int], image_size: int, channels: int) -> tuple[int, int, int]:
    h, w, c = (int(d) if d is not None else -1 for d in native)
    if min(h, w, c) < 1:
        raise ConfigError(f"images of variable shape {tuple(native)} are not supported; "
                          f"use name=image_folder, which resizes them")
    size = int(image_size)
    if size and (size < h or size < w):
        raise ConfigError(f"config.data.image_size={size} is smaller than the data's {h}x{w} "
                          f"(only padding is done here; image_folder resizes)")
    out_c = int(channels) or c
    if out_c != c and {out_c, c} != {1, 3}:
        raise ConfigError(f"config.data.channels={out_c}: cannot convert from {c} channels")
    return (size or h, size or w, out_c)


def to_model_images(images_u8: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8[b, h, w, c] -> float32[b, *shape] in [-1, 1], padded centred with -1. RGB to
    grey rounds the luma to 8 bits: pixels stay on the 256 levels the likelihoods bin."""
    u8, c = images_u8, shape[2]
    if u8.shape[-1] == 3 and c == 1:
        u8 = np.round(u8.astype(np.float32) @ _LUMA)[..., None]
    x = u8.astype(np.float32) * (2.0 / 255.0) - 1.0
    if x.shape[-1] == 1 and c == 3:
        x = np.repeat(x, 3, axis=-1)
    dh, dw = shape[0] - x.shape[1], shape[1] - x.shape[2]
    if dh or dw:
        x = np.pad(x, ((0, 0), (dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2), (0, 0)),
                   constant_values=-1.0)
    return x


def class_ids(classes, class_names: Sequence[str]) -> tuple[int, ...]:
    """config.data.classes (names or indices; () = every class) -> sorted label ids.
    `--config.data.classes=(Sneaker,Bag)` arrives as the one string "(Sneaker,Bag)": a
    string that is no class name is split at commas. Unknown -> ConfigError listing them."""
    items = []
    for c in ([classes] if isinstance(classes, (str, int)) else list(classes or ())):
        if isinstance(c, str) and c not in class_names:
            items += [p.strip().strip("'\"") for p in c.strip().strip("()").split(",")]
            items = [p for p in items if p != ""]
        else:
            items.append(c)
    ids = set()
    for c in items:
        if isinstance(c, str) and c in class_names:
            ids.add(list(class_names).index(c))
        elif (isinstance(c, (int, np.integer)) and not isinstance(c, bool)
              or isinstance(c, str) and c.isdigit()) and 0 <= int(c) < len(class_names):
            ids.add(int(c))
        else:
            choices = ", ".join(f"{i} {n!r}" for i, n in enumerate(class_names))
            raise ConfigError(f"config.data.classes: no class {c!r} in this dataset (a name "
                              f"or an index 0..{len(class_names) - 1}); its classes: {choices}")
    return tuple(sorted(ids))


class _Rows:
    """Rows `rows` of a random-access source, itself a random-access source."""

    def __init__(self, source, rows: np.ndarray):
        self.source, self.rows = source, np.asarray(rows, np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return self.source[int(self.rows[i])]

    def __getitems__(self, idx: Sequence[int]) -> list:
        return self.source.__getitems__([int(self.rows[i]) for i in idx])


class ImageData:
    """One process's view of an image dataset (see the module docstring)."""

    def __init__(self, data_cfg, *, global_batch_size: int, seed: int, process_index: int = 0,
                 process_count: int = 1, include_index: bool = False):
        """include_index adds "index": int64[b] (the example's row in its source; our own
        builders only) to every batch, for tests and data audits."""
        if global_batch_size % process_count:
            raise ConfigError(f"batch size {global_batch_size} is not divisible by the "
                              f"process count {process_count}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} not in [0, {process_count})")
        self.data_dir = default_data_dir(str(data_cfg.data_dir))
        self.global_batch_size, self.seed = int(global_batch_size), int(seed)
        self.process_index, self.process_count = int(process_index), int(process_count)
        self.include_index = include_index
        self._read_options = grain.ReadOptions(num_threads=READ_THREADS,
                                               prefetch_buffer_size=PREFETCH)
        # Opened (and built if needed) now: missing data fails before anything is compiled.
        (self._splits, self.class_names, native, self._folder, self.dataset,
         self._duplicates) = _open(data_cfg, self.data_dir)
        self.native_shape = tuple(native)  # as stored (Fashion-MNIST: 28x28x1)
        self.image_shape = _target_shape(native, int(data_cfg.image_size),
                                         int(data_cfg.channels))
        max_bad = int(data_cfg.max_bad_records) if "max_bad_records" in data_cfg else 0
        self._bad_records = records.Budget(max_bad)
        # label ids kept in every split (() = all); older configs have no such key
        self.classes = class_ids(data_cfg.classes if "classes" in data_cfg else (),
                                 self.class_names)
        self.train_split = "train"  # what train_iterator() reads
        self.train_images: dict[str, Any] = {}  # path, sha256, examples of the file
        self._array_labels: dict[str, np.ndarray] = {}  # labels of splits read from arrays
        if "train_images" in data_cfg and data_cfg.train_images:
            self._add_train_images(os.path.expanduser(str(data_cfg.train_images)))
        if self.classes:
            self._splits = {s: _Rows(src, np.flatnonzero(np.isin(self._labels(s),
                                                                 self.classes)))
                            for s, src in self._splits.items()}

    def _add_train_images(self, path: str) -> None:
        """config.data.train_images: split "train_images" from `path`, the one train_iterator()
        reads (module docstring)."""
        arrays = image_npz.read(path, per_example=1)
        if arrays["class_names"] != list(self.class_names):
            raise ConfigError(f"config.data.train_images={path!r} has classes "
                              f"{arrays['class_names']}; the dataset's are {self.class_names}")
        n, h, w, c = arrays["images"].shape
        sizes = {self.native_shape[:2], self.image_shape[:2]}
        if (h, w) not in sizes or c != self.native_shape[2]:
            raise ConfigError(f"config.data.train_images={path!r}: images are {h}x{w}x{c}; "
                              f"the dataset's are {'x'.join(map(str, self.native_shape))} "
                              f"(model size {'x'.join(map(str, self.image_shape))})")
        sha = data_card.sha256_file(path)
        self._splits["train_images"] = image_npz.Records(arrays["images"], arrays["labels"])
        self._array_labels["train_images"] = arrays["labels"].astype(np.int64)
        self.train_split = "train_images"
        self.train_images = {"path": os.path.abspath(path), "sha256": sha, "examples": int(n)}

    # ------------------------------------------------------------------ reading
    def _split(self, split: str):
        if split not in self._splits:
            raise ConfigError(f"{self.dataset} has no split {split!r}; it has "
                              f"{sorted(self._splits)}")
        return self._splits[split]

    @property
    def splits(self) -> list[str]:
        return sorted(self._splits)

    def num_examples(self, split: str) -> int:
        return len(self._split(split))

    def _labels(self, split: str, chunk: int = 4096) -> np.ndarray:
        """int64[N]: the label of every row of the whole `split`, cached in the dataset's
        folder (decoding every record is the slow part: ~1 ms each)."""
        if split in self._array_labels:  # a split read from a file: its labels
            return self._array_labels[split]
        n = len(self._split(split))
        path = os.path.join(self._folder, f"labels_{split}.npy")
        if os.path.exists(path):
            labels = np.load(path)
            if len(labels) == n:
                return labels
        labels = np.concatenate([np.zeros((0,), np.int64)] + [
            np.array([r["label"] if "label" in r else 0
                      for r in self._records(split, list(range(i, min(i + chunk, n))))],
                     np.int64) for i in range(0, n, chunk)])
        try:  # atomic: a concurrent reader sees the old file or the whole new one
            tmp = f"{path}.{os.getpid()}.tmp.npy"
            np.save(tmp, labels)
            os.replace(tmp, path)
        except OSError:  # a read-only dataset folder: read them again next time
            pass
        return labels

    def _records(self, split: str, rows: list[int]) -> list:
        """The records at `rows`; an unreadable one is named, counted against
        config.data.max_bad_records and replaced by the next readable row (the same one in
        every run, so a resume sees the same batches)."""
        src = self._split(split)
        try:
            return src.__getitems__(rows)  # batched reads: ~6x faster than one by one
        except Exception:  # noqa: BLE001 - a bad record (or mock_data's broken batch read):
            pass  # read one by one below, which names and counts each bad record
        out = []
        for r in rows:
            rec, k = None, r
            while rec is None:
                rec = self._bad_records.read(src, split, k)
                k = (k + 1) % len(src)
            out.append(rec)
        return out

    def _load(self, split: str, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Stacked, converted examples at `rows` of `split`."""
        recs = self._records(split, [int(r) for r in rows])
        images = np.stack([np.asarray(r["image"], np.uint8) for r in recs])
        labels = np.array([r["label"] if "label" in r else 0 for r in recs], np.int32)
        out = {"image": to_model_images(images, self.image_shape), "label": labels}
        if self.include_index:
            out["index"] = np.array([r["index"] for r in recs], np.int64)
        return out

    @property
    def local_batch_size(self) -> int:
        return self.global_batch_size // self.process_count

    # ------------------------------------------------------------------ training
    def train_iterator(self, split: str | None = None) -> position.GrainPosition:
        """Infinite, shuffled every epoch, this process's slice of each global batch, of
        `split` (default: self.train_split)."""
        split = split or self.train_split
        n = self.num_examples(split)
        if n < self.global_batch_size:
            raise ConfigError(f"{split} has {n} examples, fewer than one batch "
                              f"({self.global_batch_size})")
        rows = grain.MapDataset.range(n).shuffle(seed=self.seed % 2**32).repeat()
        rows = rows[self.process_index::self.process_count]
        ds = rows.batch(self.local_batch_size, drop_remainder=True)
        ds = ds.map(lambda r: self._load(split, r))
        identity = {"split": split, "seed": self.seed, "global_batch_size": self.global_batch_size,
                    "num_examples": n}
        if self.classes:  # (only then: the positions saved by runs before the key stay valid)
            identity["classes"] = list(self.classes)
        if split in self._array_labels:  # a position in one file means nothing in another
            identity["train_images"] = self.train_images["sha256"]
        # image runs always saved their settings, under "next_batch"
        return position.positioned(ds.to_iter_dataset(self._read_options), identity,
                                   key="next_batch", legacy=False)

    # ------------------------------------------------------------------ evaluation
    def eval_batches(self, split: str = "test", batch_size: int = 256,
                     max_batches: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Each example once, in a fixed order; `batch_size` is the global batch. Process p
        gets rows [k*G + p*b, k*G + (p+1)*b) of batch k; rows past the end are padding
        (image -1, label 0, mask 0), so every process yields the same number of batches."""
        if batch_size % self.process_count:
            raise ConfigError(f"eval batch size {batch_size} is not divisible by the process "
                              f"count {self.process_count}")
        n, b = self.num_examples(split), batch_size // self.process_count
        num = math.ceil(n / batch_size)
        if max_batches is not None:
            num = min(num, int(max_batches))

        def one(k: int) -> dict[str, np.ndarray]:
            rows = k * batch_size + self.process_index * b + np.arange(b)
            real = rows[rows < n]
            out = self._load(split, real) if len(real) else None
            pad = b - len(real)
            batch = {"image": np.full((b, *self.image_shape), -1.0, np.float32),
                     "label": np.zeros((b,), np.int32),
                     "mask": (np.arange(b) < len(real)).astype(np.float32)}
            if self.include_index:
                batch["index"] = np.full((b,), -1, np.int64)
            if out is not None:
                for key, value in out.items():
                    batch[key][:b - pad] = value
            return batch

        ds = grain.MapDataset.range(num).map(one)
        yield from ds.to_iter_dataset(self._read_options)

    # ------------------------------------------------------------------ description
    def meta(self) -> dict[str, Any]:
        """JSON saved with every checkpoint: enough to label samples without the data."""
        out = {"dataset": self.dataset, "class_names": self.class_names,
               "image_shape": list(self.image_shape), "data_dir": self.data_dir,
               "classes": [self.class_names[i] for i in self.classes]}  # [] = every class
        if self.train_images:
            out["train_images"] = self.train_images
        return out

    @property
    def card(self) -> dict[str, Any]:
        """What a run trained on: meta() plus split sizes (of the class subset, if any) and
        the duplicate counts (of the whole dataset)."""
        return {**self.meta(), "splits": {s: self.num_examples(s) for s in self.splits},
                "duplicates": self._duplicates}

    def eval_kwargs(self) -> dict[str, Any]:
        return {}
