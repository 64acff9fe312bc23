"""The reward of image preference data: a classifier run's probability of the prompted class.

  net = load(REWARD_RUN, class_names=names, image_shape=(32, 32, 1))
  r_N = net.rewards(images_NxHxWxC, labels_N)   # float32[N] in [0, 1]

Refused with one UserError line: a run that is no image classifier of that shape (a model
that samples, or logits not [N, num_classes]), whose class names differ, or that IS the
evaluators' feature net: its recipe's network (model and seed, feature_net.recipe_preset)
or its shipped weights (feature_net.shipped_preset_with). Ranking with the evaluation net
would reward what the metric responds to, not the garment (configs/fmnist_reward_classifier.py).
The raw params are used: those the run's final test accuracy was measured on.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from genjax import families, inference
from genjax.errors import UserError
from genjax.evaluators import feature_net

DEFINITION = ("softmax probability of the prompted class under the reward classifier, on "
              "the images as saved (uint8 -> [-1, 1])")


@dataclasses.dataclass
class RewardClassifier:
    loaded: inference.Loaded
    net: feature_net.FeatureNet       # batched, jitted probs on one device
    test_accuracy: float              # the run's final_metrics.json (nan if absent)

    def rewards(self, images_NxHxWxC, labels_N) -> np.ndarray:
        """float32[N]: p(labels_N[i] | image i)."""
        p_NxK = self.net.probs(images_NxHxWxC)
        return p_NxK[np.arange(len(p_NxK)), np.asarray(labels_N, np.int64)].astype(np.float32)


def _logits_shape(loaded, image_shape) -> tuple | None:
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    try:
        return tuple(jax.eval_shape(lambda p, x: loaded.model.apply({"params": p}, x),
                                    loaded.params, x).shape)
    except Exception:  # noqa: BLE001 - any model that cannot take images alone
        return None


def load(path: str, *, class_names: Sequence[str], image_shape: Sequence[int],
         weights_dir: str = "") -> RewardClassifier:
    """The reward classifier of run `path` (module docstring); weights_dir: where the
    feature net's shipped weights are looked for (feature_net.shipped_paths)."""
    loaded = inference.load(path, which="raw")
    family, shape = loaded.family, tuple(int(d) for d in image_shape)
    names = list(loaded.meta["data"]["class_names"])
    if families.has(family, "sample_images") or families.has(family, "sample_text"):
        raise UserError(f"--reward={path!r} is a generative model ({loaded.config.family}), "
                        f"not a classifier")
    if names != list(class_names):
        raise UserError(f"--reward={path!r} classifies {names}; the diffusion run's classes "
                        f"are {list(class_names)}")
    if _logits_shape(loaded, shape) != (1, len(names)):
        raise UserError(f"--reward={path!r} is not a classifier of {shape} images into "
                        f"{len(names)} classes")
    preset = feature_net.recipe_preset(loaded.config)
    if preset:
        raise UserError(f"--reward={path!r} is the evaluators' feature net ({feature_net.RECIPE}"
                        f":{preset}: same model and seed); rank with a separately trained "
                        f"classifier, e.g. configs/fmnist_reward_classifier.py:cpu")
    preset = feature_net.shipped_preset_with(loaded.params, weights_dir)
    if preset:
        raise UserError(f"--reward={path!r} holds the evaluators' shipped feature-net weights "
                        f"({feature_net.CACHE_STEM}_{preset}); rank with a separately trained "
                        f"classifier, e.g. configs/fmnist_reward_classifier.py:cpu")
    accuracy = float("nan")
    final = os.path.join(path, "final_metrics.json")
    if os.path.exists(final):
        with open(final) as f:
            accuracy = float(json.load(f).get("accuracy", float("nan")))
    net = feature_net.FeatureNet(
        name=f"reward:{os.path.basename(os.path.abspath(path))}",
        directory=os.path.abspath(path), config=loaded.config, model=loaded.model,
        params=loaded.params, class_names=names, test_accuracy=accuracy, image_shape=shape,
        origin={"source": "reward run", "directory": os.path.abspath(path)})
    return RewardClassifier(loaded=loaded, net=net, test_accuracy=accuracy)
