"""Classification Accuracy Score (Ravuri & Vinyals 2019): is generated data useful?

The classifier recipe of configs/fmnist_classifier.py:<preset> is trained -- through the
ordinary loop, `ctx.train_fn` (genjax.train.train) -- on `num_samples` generated images ONLY, labelled with
the class each was requested for, then tested on the real TEST split:
  cas_accuracy   test accuracy of that classifier (class-conditional models only)
Floor (real vs real): the same recipe (same steps) trained on the first `num_samples` real
TRAIN images. The details also give the accuracy of the feature net (the same recipe on
the whole training set) when it is already built.
"""
from __future__ import annotations

import shutil
import tempfile

import numpy as np
from ml_collections import ConfigDict

from genjax import families

NEEDS = ("sample_images", "sample_labels")
SAMPLES = ("images", "labels")  # or labelled images given in a file (genjax.evaluate --samples)
ON_REQUEST = "it trains two classifiers (slow)"  # samples mode: only when --only names it


def real_split(data, split: str, n: int | None = None, batch_size: int = 1000):
    """(images float32[N, H, W, C], labels int32[N]): the first n images of `split`."""
    n = data.num_examples(split) if n is None else min(int(n), data.num_examples(split))
    xs, ys = [], []
    for batch in data.eval_batches(split, batch_size, -(-n // batch_size)):
        keep = batch["mask"] > 0
        xs.append(batch["image"][keep])
        ys.append(batch["label"][keep])
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n].astype(np.int32)


def skip_reason(family, config) -> str | None:
    """CAS labels each sample with its requested class: class-conditional models only."""
    if families.conditioning(family, config) != "class":
        return "the model is not class-conditional (its samples have no labels)"
    return None


def train_and_test(images, labels, test_images, test_labels, class_names, data_cfg, *,
                   train_fn, preset: str = "cpu", total_steps: int = 0,
                   workdir: str | None = None) -> dict:
    """Trains the classifier recipe on (images, labels) held in memory and returns its
    final metrics on (test_images, test_labels): {"accuracy", "loss", "train_seconds"}.
    train_fn: genjax.train.train (passed in: evaluators do not import the loop).
    total_steps 0 = the preset's. `workdir` (default: a temporary folder, deleted) must not
    hold an older run: it would be resumed."""
    from genjax.data.array_data import ArrayData
    from genjax.evaluators.feature_net import classifier_config
    config = classifier_config(data_cfg, preset)
    config.unlock()
    if total_steps:
        config.total_steps = int(total_steps)
        config.ckpt_every_steps = int(total_steps)
    config.eval_every_steps = 0
    config.lock()
    data = ArrayData({"train": (images, labels), "test": (test_images, test_labels)},
                     class_names, global_batch_size=int(config.batch_size), seed=int(config.seed))
    tmp = workdir or tempfile.mkdtemp(prefix="genjax_cas_")
    try:
        return train_fn(config, tmp, data=data)
    finally:
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)


# The tiny presets' overrides (tests: seconds; numbers meaningless)
TINY = {"evals.cas.num_samples": 64, "evals.cas.preset": "tiny", "evals.cas.total_steps": 10,
        "evals.cas.batch_size": 32, "evals.cas.real_baseline": False}


def settings(**overrides) -> ConfigDict:
    """config.evals.cas: the keys and their defaults (unknown overrides fail)."""
    s = ConfigDict()
    s.during_training = False      # True: also at each periodic eval (trains two classifiers!)
    s.num_samples = 10_000         # generated training images (cycled over the classes)
    s.batch_size = 256             # sampling batch
    s.preset = "cpu"               # configs/fmnist_classifier.py preset trained on them
    s.total_steps = 0              # classifier steps (0 = the preset's)
    s.real_baseline = True         # floor: the same training on num_samples real train images
    from genjax.evaluators import with_overrides
    return with_overrides("cas", s, overrides)


def evaluate(ctx, settings) -> dict:
    images, labels = ctx.sample_images(int(settings.num_samples),
                                       batch_size=int(settings.batch_size),
                                       seed=ctx.seed)  # image_quality's pool
    n = len(images)
    if labels is None:
        return {"metrics": {}, "markdown": "CAS skipped: the model is not class-conditional "
                                           "(its samples have no labels)."}
    class_names = list(ctx.meta["data"]["class_names"])
    test_x, test_y = real_split(ctx.data, "test")
    kw = dict(preset=str(settings.preset), total_steps=int(settings.total_steps),
              train_fn=ctx.train_fn)
    synthetic = train_and_test(images, labels, test_x, test_y, class_names, ctx.config.data, **kw)
    metrics = {"cas_accuracy": float(synthetic["accuracy"])}
    floors, details = {}, {"num_samples": n, "preset": str(settings.preset),
                           "synthetic_train_seconds": synthetic.get("train_seconds")}
    if bool(settings.real_baseline):
        train_x, train_y = real_split(ctx.data, "train", n)
        real = train_and_test(train_x, train_y, test_x, test_y, class_names, ctx.config.data,
                              **kw)
        floors["cas_accuracy"] = float(real["accuracy"])
        details["real_train_seconds"] = real.get("train_seconds")
    details["feature_net_test_accuracy"] = _built_feature_net_accuracy(ctx, str(settings.preset))
    markdown = (f"Classifier (configs/fmnist_classifier.py:{settings.preset}) trained on {n} "
                f"generated images labelled with their requested class, tested on the "
                f"{len(test_y)} real test images; floor: the same training on {n} real "
                f"training images.")
    return {"metrics": metrics, "floors": floors, "markdown": markdown, "details": details}


def _built_feature_net_accuracy(ctx, preset: str):
    """Test accuracy of the full-data classifier if it is already cached, else None."""
    from genjax.evaluators.feature_net import cached_info
    info = cached_info(ctx.config.data, preset)
    return None if info is None else info.get("test_accuracy")
