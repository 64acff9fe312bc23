r"""Ship a trained feature net: its params and their record, for every machine to score with.

  python -m genjax.train --config=configs/fmnist_classifier.py:cpu --workdir=runs/clf_cpu
  python -m genjax.evaluators.ship_feature_net --workdir=runs/clf_cpu --preset=cpu

W: a finished run of configs/fmnist_classifier.py:<preset> (or a feature-net cache folder,
which is one). Writes into --out (default: $GENJAX_FEATURE_NET_WEIGHTS, else the package's
genjax/evaluators/weights/):
  fmnist_classifier_<preset>.msgpack   flax.serialization.to_bytes of the raw params
  fmnist_classifier_<preset>.json      sha256 and size of the msgpack, preset, recipe,
                                       checksum (recipe + dataset, as feature_net.locate
                                       computes it) and the dataset identity, test
                                       accuracy, step, the commands, and `features_check`:
                                       sum and some values of the features of the first 64
                                       test images (tests compare them, rtol 1e-4)
The run's config must be the recipe's at that preset (after resolution) for its dataset;
otherwise a UserError lists the keys that differ. Package data: pyproject.toml ships
weights/*.msgpack and *.json.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from genjax import cli, config_lib, inference, runtime
from genjax.errors import UserError
from genjax.data import data_card
from genjax.evaluators import feature_net as fn

CHECK_IMAGES = 64   # features_check: the first CHECK_IMAGES test images


def features_check(net, data) -> dict:
    """Sum, absolute sum and a few values of the features of data's first test images."""
    batch = next(iter(data.eval_batches("test", CHECK_IMAGES, 1)))
    f = net.features(batch["image"][batch["mask"] > 0]).astype(np.float64)
    return {"images": f"test[:{len(f)}]", "sum": float(f.sum()),
            "abs_sum": float(np.abs(f).sum()), "first": [float(v) for v in f[0, :8]],
            "last": [float(v) for v in f[-1, -8:]]}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def check_recipe(run_config, recipe_config, identity: dict) -> None:
    """UserError listing the keys where the run's config is not the (resolved) recipe's;
    where the data is read from does not count."""
    from genjax import families
    recipe = config_lib.from_dict(config_lib.to_dict(recipe_config))
    families.get(recipe.family).resolve_config(recipe, _identity_data(identity))
    a, b = (_flat(config_lib.to_dict(c)) for c in (run_config, recipe))
    where = {f"data.{k}" for k in fn.PATH_KEYS}
    diff = sorted(k for k in set(a) | set(b) if k not in where and a.get(k) != b.get(k))
    if diff:
        shown = ", ".join(f"{k}: run {a.get(k)!r} vs recipe {b.get(k)!r}" for k in diff[:6])
        raise UserError(f"the run is not the recipe's preset ({len(diff)} keys differ: "
                        f"{shown})")


def _identity_data(identity: dict):
    import types
    return types.SimpleNamespace(image_shape=tuple(identity["image_shape"]),
                                 class_names=identity["class_names"])


def _test_accuracy(workdir: str) -> float:
    for name, key in (("final_metrics.json", "accuracy"), (fn.DONE, "test_accuracy")):
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            with open(path) as f:
                info = json.load(f)
            if key in info:
                return float(info[key])
    raise UserError(f"{workdir}: no final_metrics.json with a test accuracy (an unfinished run?)")


def _write(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def export(workdir: str, preset: str = "cpu", out_dir: str = "", *,
           cache_dir: str = "") -> tuple[str, str]:
    """Writes the two files (module docstring) from run `workdir`; returns their paths."""
    from flax import serialization
    from genjax.data.image_loader import ImageData
    if not os.path.isdir(workdir):
        raise UserError(f"--workdir={workdir!r} does not exist")
    accuracy = _test_accuracy(workdir)
    loaded = inference.load(workdir, which="raw")
    _, digest, recipe, identity = fn.locate(loaded.config.data, preset, cache_dir)
    check_recipe(loaded.config, recipe, identity)
    weights, meta = fn.shipped_paths(preset, out_dir)
    os.makedirs(os.path.dirname(weights), exist_ok=True)
    blob = serialization.to_bytes(loaded.params)
    _write(weights, blob)
    info = {"file": os.path.basename(weights), "sha256": data_card.sha256_file(weights),
            "bytes": len(blob), "preset": preset, "recipe": fn.RECIPE, "checksum": digest,
            "dataset": identity, "test_accuracy": accuracy, "step": int(loaded.step),
            "trained_by": f"python -m genjax.train --config=configs/fmnist_classifier.py:"
                          f"{preset} --workdir={workdir}",
            "command": f"python -m genjax.evaluators.ship_feature_net --workdir={workdir} "
                       f"--preset={preset}",
            "made_at": time.strftime("%Y-%m-%d %H:%M:%S"), "genjax_version": runtime.version()}
    _write(meta, json.dumps(info, indent=2).encode())
    # read back through the loader (sha256 verified), then record what it computes
    net = fn.load_feature_net(loaded.config.data, preset=preset, cache_dir=cache_dir,
                              weights_dir=os.path.dirname(weights))
    info["features_check"] = features_check(net, ImageData(recipe.data, global_batch_size=1,
                                                           seed=0))
    _write(meta, json.dumps(info, indent=2).encode())
    return weights, meta


# ---------------------------------------------------------------------- CLI
def main(argv) -> None:
    from absl import flags
    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    runtime.setup_logging()
    weights, meta = export(FLAGS.workdir, FLAGS.preset, FLAGS.out)
    with open(meta) as f:
        info = json.load(f)
    print(f"wrote {weights} ({info['bytes']:,} bytes, sha256 {info['sha256'][:16]}...) and "
          f"{meta} (test accuracy {info['test_accuracy']:.4f})", flush=True)


def define_flags():
    from absl import flags
    flags.DEFINE_string("workdir", None, "a finished classifier run", required=True)
    flags.DEFINE_string("preset", "cpu", "its configs/fmnist_classifier.py preset")
    flags.DEFINE_string("out", "", "folder (default: $GENJAX_FEATURE_NET_WEIGHTS, else the "
                                   "package's genjax/evaluators/weights)")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
