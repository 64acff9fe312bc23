"""The image evaluators' feature network: shipped weights, else a classifier trained here.

Inception weights cannot be downloaded here, so FID-style metrics use our own network.
Shipped: `genjax/evaluators/weights/fmnist_classifier_<preset>.msgpack` (the params,
flax.serialization) with its `.json` (sha256 of the msgpack, the recipe+dataset checksum
below, test accuracy, the command that made it; written by
`python -m genjax.evaluators.ship_feature_net`), so the same samples score the same on
every machine. They are used when the json's checksum is this recipe's and dataset's (a
msgpack whose sha256 differs from the json's is an error); folder: the `weights_dir`
argument, else $GENJAX_FEATURE_NET_WEIGHTS, else the package's. Otherwise (other
datasets or presets) the network is trained on first use through the ordinary loop (`train_fn`: genjax.train.train, passed in
by the command that needs the net) from
configs/fmnist_classifier.py:<preset>, and named after it ("fid_fmnist", never "FID").

  net = load_feature_net(config.data, preset="cpu", train_fn=genjax.train.train)
  f_NxD = net.features(images_NxHxWxC)      # penultimate layer, float32
  p_NxK = net.probs(images_NxHxWxC)         # softmax, float32
  net.name, net.class_names, net.test_accuracy
  net.origin                                # {"source": "shipped", "sha256": ...} or
                                            # {"source": "trained here", "directory": ...}

Cache: `<cache_dir>/<config stem>-<hash8>/`, the hash over the classifier config (paths
removed) and the dataset's identity (its content fingerprint, shape, classes, split
sizes), so a changed recipe or dataset trains a new network. A build trains in a hidden
temporary folder and is renamed into place only after it finished and wrote
`feature_net.json`; a crashed or interrupted build leaves nothing that is later trusted.
cache_dir: argument, else $GENJAX_CACHE_DIR/feature_net, else ~/.cache/genjax/feature_net.
"""
from __future__ import annotations

import dataclasses
import hashlib
import types
import importlib
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any

import jax
import numpy as np

from genjax import config_lib
from genjax.data import data_card
from genjax.errors import UserError
from genjax.inference import load

RECIPE = "genjax.families.classifier_recipe"  # get_config(preset); found by module name
CACHE_STEM = "fmnist_classifier"  # cache folder names: <stem>-<hash8>
DONE = "feature_net.json"      # written last: its presence marks a finished build
# The run's data keys the net copies: never `classes`, the net learns every class even
# when a run fine-tunes or is evaluated on a subset (tests/test_image_subset.py).
DATA_KEYS = ("name", "source_dir", "image_folder", "image_size", "channels", "data_dir")
PATH_KEYS = ("source_dir", "image_folder", "data_dir")  # where, not what: not hashed
# Always ()/"" for the net (see DATA_KEYS) and not hashed, so that nets built before the
# keys existed keep their checksum.
UNHASHED_KEYS = PATH_KEYS + ("classes", "train_images")
# Top-level keys added after the net was shipped that do not change what it learns: how a
# run starts from another (the net never does); how data-parallel gradients are summed.
UNHASHED_TOP_KEYS = ("init_from_params", "grad_sync")
BATCH = 256                    # images per forward pass (one compiled shape)
_LOADED: dict[str, "FeatureNet"] = {}  # folder -> net: loaded (and compiled) once per process
WEIGHTS_ENV = "GENJAX_FEATURE_NET_WEIGHTS"  # a folder of shipped weights (tests, other copies)


def default_cache_dir() -> str:
    root = os.environ.get("GENJAX_CACHE_DIR")
    return os.path.join(root, "feature_net") if root else os.path.expanduser(
        "~/.cache/genjax/feature_net")


def classifier_config(data_cfg, preset: str = "cpu"):
    """The classifier recipe (RECIPE) at `preset` with the data keys of `data_cfg` (locked)."""
    config = importlib.import_module(RECIPE).get_config(preset)
    config.unlock()
    for key in DATA_KEYS:
        if key in data_cfg:
            config.data[key] = data_cfg[key]
    config.lock()
    return config


def dataset_identity(data) -> dict[str, Any]:
    """What the network is trained on, independent of where the files are."""
    return {"dataset": data.dataset, "image_shape": list(data.image_shape),
            "class_names": list(data.class_names),
            "splits": {s: data.num_examples(s) for s in data.splits}}


def checksum(config, identity: dict) -> str:
    """sha256 hex over the config (without path keys) and the dataset identity."""
    d = config_lib.to_dict(config)
    d["data"] = {k: v for k, v in d["data"].items() if k not in UNHASHED_KEYS}
    d = {k: v for k, v in d.items() if k not in UNHASHED_TOP_KEYS}
    blob = json.dumps({"config": d, "data": identity}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclasses.dataclass
class FeatureNet:
    """A trained classifier; images are the model format: float32[N, H, W, C] in [-1, 1]."""
    name: str
    directory: str
    config: Any
    model: Any
    params: Any
    class_names: list
    test_accuracy: float
    image_shape: tuple
    origin: dict = dataclasses.field(default_factory=dict)  # shipped (sha256) or trained here

    def describe_origin(self) -> str:
        """"shipped weights sha256 1a2b3c4d..." or "trained here (<folder>)"."""
        if self.origin.get("source") == "shipped":
            return f"shipped weights sha256 {self.origin['sha256'][:16]}..."
        return f"trained here ({self.directory})"

    def __post_init__(self):
        # One device: on a multi-device mesh, replicated params would make every device
        # compute the whole batch.
        self.params = jax.device_put(jax.device_get(self.params), jax.local_devices()[0])
        model = self.model
        self._features = jax.jit(lambda p, x: model.apply({"params": p}, x, method="features"))
        self._probs = jax.jit(lambda p, x: jax.nn.softmax(model.apply({"params": p}, x), -1))
        self._head = jax.jit(lambda p, f: jax.nn.softmax(model.apply(
            {"params": p}, f, method=lambda m, f: m.head(f)), -1))

    def _batched(self, fn, images) -> np.ndarray:
        x = np.asarray(images, np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.image_shape):
            shape = ", ".join(map(str, self.image_shape))
            raise ValueError(f"{self.name} takes images [N, {shape}] in [-1, 1], got shape "
                             f"{x.shape}")
        n, b = len(x), BATCH
        out = []
        for i in range(0, n, b):  # the last batch is padded: one compiled shape
            chunk = x[i:i + b]
            pad = b - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.full((pad, *chunk.shape[1:]), -1, np.float32)])
            out.append(np.asarray(fn(self.params, chunk))[:b - pad])
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def features(self, images_NxHxWxC) -> np.ndarray:
        """Penultimate-layer features: float32[N, D]."""
        return self._batched(self._features, images_NxHxWxC).astype(np.float32)

    def probs(self, images_NxHxWxC) -> np.ndarray:
        """Class probabilities: float32[N, num_classes]."""
        return self._batched(self._probs, images_NxHxWxC).astype(np.float32)

    def probs_from_features(self, f_NxD) -> np.ndarray:
        """Class probabilities from penultimate features: float32[N, num_classes]."""
        f = np.asarray(f_NxD, np.float32)
        return np.asarray(self._head(self.params, f), np.float32) if len(f) else f[:, :0]

    def real_features(self, data, split: str, max_examples: int | None = None,
                      batch_size: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
        """(features float32[N, D], labels int32[N]) of the first N images of `split` of
        `data` (an ImageData-like object); cached in this network's folder when the data
        names its dataset (and its class subset, `data.classes`, if it has one)."""
        n = data.num_examples(split)
        n = n if max_examples is None else min(n, int(max_examples))
        path = None
        if getattr(data, "dataset", None):
            subset = [list(data.classes)] if getattr(data, "classes", ()) else []
            key = hashlib.sha256(json.dumps([data.dataset, list(data.image_shape), split, n,
                                             *subset]).encode()).hexdigest()[:12]
            path = os.path.join(self.directory, f"features_{split}_{n}_{key}.npz")
            if os.path.exists(path):
                with np.load(path) as z:
                    return z["features"], z["labels"]
        feats, labels = [], []
        for batch in data.eval_batches(split, batch_size, -(-n // batch_size)):
            keep = batch["mask"] > 0
            feats.append(self.features(batch["image"][keep]))
            labels.append(batch["label"][keep])
        f_NxD, y_N = np.concatenate(feats)[:n], np.concatenate(labels)[:n].astype(np.int32)
        if path:
            tmp = f"{path}.{os.getpid()}.tmp.npz"
            np.savez(tmp, features=f_NxD, labels=y_N)
            os.replace(tmp, path)
        return f_NxD, y_N


def _build(config, directory: str, digest: str, preset: str, cache_dir: str,
           train_fn) -> None:
    """Trains into a temporary folder, then renames it to `directory` (atomic)."""
    if train_fn is None:
        raise UserError(f"the feature net {directory} is not built and no training function "
                        f"was given to build it: pass train_fn=genjax.train.train")
    os.makedirs(cache_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".building-{os.path.basename(directory)}-", dir=cache_dir)
    msg = (f"feature net: training configs/fmnist_classifier.py:{preset} into {directory} "
           f"(first use; later runs reuse it)")
    print(msg, flush=True)
    try:
        t0 = time.time()
        final = train_fn(config, tmp)
        if "accuracy" not in final:
            raise RuntimeError(f"feature net training in {tmp} ended without a test accuracy")
        info = {"checksum": digest, "preset": preset, "test_accuracy": float(final["accuracy"]),
                "test_loss": float(final.get("loss", float("nan"))),
                "train_seconds": time.time() - t0, "built_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        with open(os.path.join(tmp, DONE), "w") as f:
            json.dump(info, f, indent=2)
        try:
            os.rename(tmp, directory)
        except OSError:
            if not os.path.exists(os.path.join(directory, DONE)):
                raise
            logging.info("feature net %s was built concurrently; using that one", directory)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def locate(data_cfg, preset: str = "cpu", cache_dir: str = ""):
    """(cache folder, checksum, classifier config, dataset identity) for `data_cfg`."""
    from genjax.data.image_loader import ImageData
    config = classifier_config(data_cfg, preset)
    identity = dataset_identity(ImageData(config.data, global_batch_size=1, seed=0))
    if not config.data.channels:  # as training resolves it: a run's resolved data config
        config.unlock()           # and the unresolved one name the same network
        config.data.channels = int(identity["image_shape"][2])
        config.lock()
    digest = checksum(config, identity)
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
    return os.path.join(cache_dir, f"{CACHE_STEM}-{digest[:8]}"), digest, config, identity


def cached_info(data_cfg, preset: str = "cpu", cache_dir: str = "") -> dict | None:
    """The finished build's feature_net.json (test accuracy...), or None if not built."""
    directory, digest, _, _ = locate(data_cfg, preset, cache_dir)
    done = os.path.join(directory, DONE)
    if not os.path.exists(done):
        return None
    with open(done) as f:
        info = json.load(f)
    if info.get("checksum") != digest:
        raise RuntimeError(f"{directory} holds another feature net (hash prefix collision); "
                           f"delete it")
    return info


# ------------------------------------------------------------------ identity
def recipe_preset(config) -> str | None:
    """The RECIPE preset whose network `config` trains (same model keys, num_classes aside,
    and same seed: same init and data order), else None. The schedule (steps, lr, batch)
    is not compared: the same network trained longer is still the evaluators' network."""
    recipe = importlib.import_module(RECIPE)
    mine = config_lib.to_dict(config)
    for preset in recipe.PRESETS:
        theirs = config_lib.to_dict(recipe.get_config(preset))
        keys = (set(theirs["model"]) & set(mine.get("model", {}))) - {"num_classes"}
        if mine.get("seed") == theirs["seed"] and keys and all(
                mine["model"][k] == theirs["model"][k] for k in keys):
            return preset
    return None


def shipped_preset_with(params, weights_dir: str = "") -> str | None:
    """The preset whose shipped weights (shipped_paths) are `params`, array for array
    (same paths, shapes and values), else None."""
    from flax import serialization, traverse_util
    mine = traverse_util.flatten_dict(jax.device_get(dict(params)))
    for preset in importlib.import_module(RECIPE).PRESETS:
        weights, _ = shipped_paths(preset, weights_dir)
        if not os.path.isfile(weights):
            continue
        with open(weights, "rb") as f:
            theirs = traverse_util.flatten_dict(serialization.msgpack_restore(f.read()))
        if mine.keys() == theirs.keys() and all(
                np.shape(mine[k]) == np.shape(theirs[k]) and np.array_equal(mine[k], theirs[k])
                for k in mine):
            return preset
    return None


# ------------------------------------------------------------------ shipped weights
def shipped_paths(preset: str, weights_dir: str = "") -> tuple[str, str]:
    """(msgpack, json) paths of the shipped weights of `preset` (they may not exist)."""
    folder = weights_dir or os.environ.get(WEIGHTS_ENV) or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "weights")
    stem = os.path.join(os.path.expanduser(folder), f"{CACHE_STEM}_{preset}")
    return f"{stem}.msgpack", f"{stem}.json"


def shipped_info(preset: str, digest: str, weights_dir: str = "") -> dict | None:
    """The shipped json of `preset` when its recipe+dataset checksum is `digest` and its
    msgpack is there (None: nothing shipped for this recipe and dataset); UserError when
    the msgpack's sha256 is not the json's (a damaged or replaced file)."""
    weights, meta = shipped_paths(preset, weights_dir)
    if not os.path.isfile(meta):
        return None
    with open(meta) as f:
        info = json.load(f)
    if info.get("checksum") != digest:
        return None
    if not os.path.isfile(weights):
        raise UserError(f"{meta} names {os.path.basename(weights)}, which is missing")
    sha = data_card.sha256_file(weights)
    if sha != info.get("sha256"):
        raise UserError(f"{weights}: sha256 {sha[:16]}... is not the {str(info.get('sha256'))[:16]}"
                        f"... recorded in {os.path.basename(meta)} (damaged or replaced file)")
    return {**info, "path": weights}


def _shipped_net(info: dict, name: str, config, identity: dict, cache_dir: str) -> FeatureNet:
    """The network of verified shipped weights; its real-image features are cached in
    <cache_dir>/<name>-shipped-<sha8>."""
    from flax import serialization
    from genjax import families
    config = config_lib.from_dict(config_lib.to_dict(config))  # an unlocked copy
    family = families.get(config.family)
    # resolution reads the data's shape and classes: the dataset identity has both
    family.resolve_config(config, types.SimpleNamespace(
        image_shape=tuple(identity["image_shape"]), class_names=identity["class_names"]))
    with open(info["path"], "rb") as f:
        params = serialization.msgpack_restore(f.read())
    directory = os.path.join(cache_dir, f"{name}-shipped-{info['sha256'][:8]}")
    os.makedirs(directory, exist_ok=True)
    return FeatureNet(name=name, directory=directory, config=config,
                      model=family.make_model(config), params=params,
                      class_names=list(identity["class_names"]),
                      test_accuracy=float(info["test_accuracy"]),
                      image_shape=tuple(identity["image_shape"]),
                      origin={"source": "shipped", "sha256": info["sha256"],
                              "file": os.path.basename(info["path"])})


def load_feature_net(data_cfg, *, preset: str = "cpu", cache_dir: str = "",
                     train_fn=None, weights_dir: str = "") -> FeatureNet:
    """The classifier for `data_cfg`'s dataset: the shipped weights when they are this
    recipe's and dataset's, else trained on first use with `train_fn` (genjax.train.train;
    see module docstring)."""
    directory, digest, config, identity = locate(data_cfg, preset, cache_dir)
    info = shipped_info(preset, digest, weights_dir)
    if info is not None:
        key = f"{info['path']}:{info['sha256']}"
        if key not in _LOADED:
            _LOADED[key] = _shipped_net(info, os.path.basename(directory), config, identity,
                                        os.path.dirname(directory))
        return _LOADED[key]
    if directory in _LOADED and os.path.exists(os.path.join(directory, DONE)):
        return _LOADED[directory]
    info = cached_info(data_cfg, preset, cache_dir)
    if info is None:
        if os.path.exists(directory):  # not ours to trust (e.g. copied by hand, incomplete)
            raise RuntimeError(f"{directory} exists without {DONE}: an incomplete feature net;"
                               f" delete it to rebuild")
        _build(config, directory, digest, preset, os.path.dirname(directory), train_fn)
        info = cached_info(data_cfg, preset, cache_dir)
    loaded = load(directory, which="raw")
    net = FeatureNet(name=os.path.basename(directory), directory=directory,
                     config=loaded.config, model=loaded.model, params=loaded.params,
                     class_names=list(loaded.meta["data"]["class_names"]),
                     test_accuracy=float(info["test_accuracy"]),
                     image_shape=tuple(identity["image_shape"]),
                     origin={"source": "trained here", "directory": directory})
    _LOADED[directory] = net
    return net
