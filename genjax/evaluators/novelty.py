"""Novelty: are samples new images, or copies of training images?

In the feature net's space (genjax/evaluators/feature_net.py), each sample's distance to
its nearest TRAIN image is compared with the same distance for real TEST images (which
the model never saw): the threshold is the 1st percentile of the test -> train distances
of the even-numbered test images.
  near_copies          share of samples at most that close to a training image; a model
                       that memorises approaches 1. Floor: the same share of the
                       odd-numbered test images, held out from the threshold (~0.01 for
                       fresh images; more where test images repeat training images)
  median_nn_distance   median sample -> nearest-train distance (floor: test -> train)
A PNG shows the samples closest to a training image next to that image.
"""
from __future__ import annotations

import os

import numpy as np
from ml_collections import ConfigDict

from genjax.evaluators.image_quality import nearest

NEEDS = ("sample_images",)
SAMPLES = ("images",)  # or images given in a file (genjax.evaluate --samples)
ONE_PROCESS = ("it indexes the training images from one process's batches")  # see image_quality
PERCENTILE = 1.0


def novelty_stats(samples_NxD, train_MxD, test_TxD) -> dict:
    """Nearest-train distances of samples and test images, and the near-copy share.

    Returns {"near_copies", "median_nn_distance", "test_near_copies",
    "test_median_nn_distance", "threshold", "distance_N", "index_N"}."""
    d_s, i_s = nearest(samples_NxD, train_MxD, 1)
    d_t, _ = nearest(test_TxD, train_MxD, 1)
    d_s, d_t = d_s[:, 0], d_t[:, 0]
    if len(d_t) < 2:
        raise ValueError(f"novelty needs >= 2 test images (threshold and floor), got {len(d_t)}")
    threshold = float(np.percentile(d_t[0::2], PERCENTILE))
    # a NaN sample (distance NaN) compares False: NaN, not a silent "no near copy"
    near = float(np.mean(d_s <= threshold)) if np.isfinite(d_s).all() else float("nan")
    return {"near_copies": near,
            "median_nn_distance": float(np.median(d_s)),
            "test_near_copies": float(np.mean(d_t[1::2] <= threshold)),
            "test_median_nn_distance": float(np.median(d_t)),
            "threshold": threshold, "distance_N": d_s, "index_N": i_s[:, 0]}


def train_images(data, rows, batch_size: int = 1000) -> np.ndarray:
    """Images at `rows` of the train split, read in eval order until all are found."""
    want = {int(r) for r in rows}
    found: dict[int, np.ndarray] = {}
    for k, batch in enumerate(data.eval_batches("train", batch_size)):
        for j in range(len(batch["mask"])):
            row = k * batch_size + j
            if row in want and batch["mask"][j] > 0:
                found[row] = batch["image"][j]
        if len(found) == len(want):
            break
    return np.stack([found[int(r)] for r in rows])


def plot_pairs(samples, neighbours, distances, threshold: float, path: str) -> str:
    """Row 1: samples; row 2: their nearest training images; distance in the title."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(samples)
    fig, axes = plt.subplots(2, n, figsize=(1.1 * n, 2.6), squeeze=False)
    for j in range(n):
        for r, img in enumerate((samples[j], neighbours[j])):
            ax = axes[r, j]
            ax.imshow(np.clip((img[..., 0] + 1) / 2, 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, j].set_title(f"{distances[j]:.2f}", fontsize=7,
                             color="red" if distances[j] <= threshold else "black")
    axes[0, 0].set_ylabel("sample", fontsize=7)
    axes[1, 0].set_ylabel("nearest\ntrain", fontsize=7)
    fig.suptitle(f"closest samples to training images (red: <= {threshold:.2f}, the 1st "
                 f"percentile of test images)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# The tiny presets' overrides (tests: seconds; numbers meaningless)
TINY = {"evals.novelty.num_samples": 64, "evals.novelty.num_train": 1000,
        "evals.novelty.num_test": 256, "evals.novelty.feature_preset": "tiny",
        "evals.novelty.batch_size": 32, "evals.novelty.num_pairs": 4}


def settings(**overrides) -> ConfigDict:
    """config.evals.novelty: the keys and their defaults (unknown overrides fail)."""
    s = ConfigDict()
    s.during_training = False      # True: also at each periodic eval (use ~500 samples)
    s.num_samples = 10_000         # generated images, each compared with every train image
    s.batch_size = 256             # sampling batch
    s.feature_preset = "cpu"       # configs/fmnist_classifier.py preset of the feature net
    s.num_train = 0                # training images searched (0 = the whole split)
    s.num_test = 0                 # test images defining the threshold (0 = the whole split)
    s.num_pairs = 16               # closest sample/train pairs in novelty_pairs.png
    from genjax.evaluators import with_overrides
    return with_overrides("novelty", s, overrides)


def evaluate(ctx, settings) -> dict:
    from genjax.evaluators.feature_net import load_feature_net
    net = load_feature_net(ctx.config.data, preset=str(settings.feature_preset),
                           train_fn=ctx.train_fn)
    images, _ = ctx.sample_images(int(settings.num_samples), batch_size=int(settings.batch_size),
                                  seed=ctx.seed)  # image_quality's pool
    n = len(images)
    train_f, _ = net.real_features(ctx.data, "train", int(settings.num_train) or None)
    test_f, _ = net.real_features(ctx.data, "test", int(settings.num_test) or None)
    s = novelty_stats(net.features(images), train_f, test_f)
    order = np.argsort(s["distance_N"])[:int(settings.num_pairs)]
    neighbours = train_images(ctx.data, s["index_N"][order])
    path = plot_pairs(images[order], neighbours, s["distance_N"][order], s["threshold"],
                      os.path.join(ctx.out_dir, "novelty_pairs.png"))
    metrics = {"near_copies": s["near_copies"], "median_nn_distance": s["median_nn_distance"]}
    floors = {"near_copies": s["test_near_copies"],
              "median_nn_distance": s["test_median_nn_distance"]}
    details = {"feature_net": net.name, "feature_net_origin": net.origin, "num_samples": n, "num_train": len(train_f),
               "num_test": len(test_f), "threshold": s["threshold"],
               "closest_train_rows": [int(i) for i in s["index_N"][order]],
               "closest_distances": [float(d) for d in s["distance_N"][order]]}
    markdown = (f"Nearest training image of {n} samples in `{net.name}` feature space, "
                f"against {len(train_f)} training images. Near-copy threshold "
                f"{s['threshold']:.3f} = the {PERCENTILE:g}st percentile of the "
                f"nearest-train distances of the even-numbered of {len(test_f)} test images "
                f"(floor column: the odd-numbered ones, held out from the threshold).")
    return {"metrics": metrics, "floors": floors, "figures": [path], "markdown": markdown,
            "details": details}
