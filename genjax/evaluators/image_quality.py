"""Sample quality of image models in the feature space of our own classifier.

Metrics on `num_samples` samples against the real TEST split (`num_real` images, 0 = all),
all on the penultimate features of genjax/evaluators/feature_net.py -- named for it
(fid_fmnist, kid_fmnist), NOT comparable to Inception-based FID/KID:
  fid_fmnist   Frechet distance of Gaussians fitted to the features (Heusel et al. 2017)
  kid_fmnist   unbiased MMD^2 with the kernel (x.y / D + 1)^3, averaged over random subsets
               (Binkowski et al. 2018); std over subsets in details
  precision    share of samples inside the real k-NN manifold; recall: share of real
               images inside the samples' (Kynkaanniemi et al. 2019, k = pr_k)
  conditional_accuracy  share of samples the classifier assigns to the requested class
  conditional_prob      mean probability the classifier gives the requested class: what
               one sample delivers (alignment's image goal; class-conditional models only)
Floors (real vs real): the same metrics for the first `num_samples` TRAIN images (their
true labels for conditional_accuracy) against the same test reference.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from genjax.errors import UserError, warn

NEEDS = ("sample_images",)
SAMPLES = ("images",)  # or images given in a file (genjax.evaluate --samples); labels optional
ONE_PROCESS = ("it builds the feature net and caches the real images' features from one "
               "process's view of the data")  # during training: refused on several
ROWS = 512  # query rows per distance block (and ref rows are padded to a multiple)


# ------------------------------------------------------------------ Frechet distance
def gaussian_stats(f_NxD) -> tuple[np.ndarray, np.ndarray]:
    """(mean float64[D], covariance float64[D, D])."""
    f = np.asarray(f_NxD, np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^1/2), with tr (C1 C2)^1/2 computed as the
    sum of sqrt eigenvalues of the symmetric C1^1/2 C2 C1^1/2 (stable, no complex sqrtm)."""
    w, v = np.linalg.eigh(cov1)
    sqrt1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = sqrt1 @ cov2 @ sqrt1
    tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)))
    fd = float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)
    return max(fd, 0.0)  # a set against itself: -1e-6 of rounding, not a negative distance


def fid_from_features(f1_NxD, f2_MxD) -> float:
    return frechet_distance(*gaussian_stats(f1_NxD), *gaussian_stats(f2_MxD))


# ------------------------------------------------------------------ KID
def kid(f1_NxD, f2_MxD, *, subset_size: int = 1000, num_subsets: int = 100,
        seed: int = 0) -> tuple[float, float]:
    """(mean, std) over subsets of the unbiased MMD^2 with the cubic polynomial kernel."""
    x_all, y_all = np.asarray(f1_NxD, np.float32), np.asarray(f2_MxD, np.float32)
    d = x_all.shape[1]
    m = min(int(subset_size), len(x_all), len(y_all))
    if m < 2:
        raise ValueError(f"KID needs >= 2 examples per set, got {len(x_all)} and {len(y_all)}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(int(num_subsets)):
        x = x_all[rng.choice(len(x_all), m, replace=False)]
        y = y_all[rng.choice(len(y_all), m, replace=False)]
        kxx = (x @ x.T / d + 1).astype(np.float64) ** 3
        kyy = (y @ y.T / d + 1).astype(np.float64) ** 3
        kxy = (x @ y.T / d + 1).astype(np.float64) ** 3
        off = m * (m - 1)
        out.append((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off
                   - 2 * kxy.mean())
    return float(np.mean(out)), float(np.std(out))


# ------------------------------------------------------------------ nearest neighbours
@functools.partial(jax.jit, static_argnames="k")
def _block_knn(q_BxD, ref_MxD, k: int):
    """Squared distances to the k nearest rows of ref (ascending) and their indices."""
    d_BxM = (jnp.sum(q_BxD ** 2, 1)[:, None] + jnp.sum(ref_MxD ** 2, 1)[None]
             - 2 * q_BxD @ ref_MxD.T)
    neg, idx = jax.lax.top_k(-d_BxM, k)
    return jnp.maximum(-neg, 0.0), idx


# |q|^2 + |r|^2 - 2 q.r in float32 is off by up to a few ulps of |q|^2 + |r|^2: a query
# that equals a ref point whose ball has radius 0 (k copies of it) came out outside.
CANCELLATION = 8 * float(np.finfo(np.float32).eps)


@jax.jit
def _block_inside(q_BxD, ref_MxD, radius2_M):
    """Whether each query lies within some ref ball (squared radii, exact), allowing the
    float32 rounding of the expanded squared distance."""
    q2, r2 = jnp.sum(q_BxD ** 2, 1)[:, None], jnp.sum(ref_MxD ** 2, 1)[None]
    d_BxM = q2 + r2 - 2 * q_BxD @ ref_MxD.T
    return jnp.any(d_BxM <= radius2_M[None] + CANCELLATION * (q2 + r2), axis=1)


FAR = 1e4  # padding rows of ref: never anyone's neighbour


def _pad_rows(x, fill: float) -> np.ndarray:
    """x with rows appended (value `fill`) up to a multiple of ROWS: few compiled shapes."""
    x = np.asarray(x, np.float32)
    pad = -len(x) % ROWS
    return np.concatenate([x, np.full((pad, *x.shape[1:]), fill, np.float32)]) if pad else x


def _blocks(fn, q_NxD, *args):
    """fn over ROWS-row blocks of q (the last block padded: one compiled shape)."""
    q = np.asarray(q_NxD, np.float32)
    n, b = len(q), ROWS
    dev = jax.local_devices()[0]  # one device of this process: see FeatureNet
    args = [jax.device_put(np.asarray(a), dev) for a in args]
    outs = []
    for i in range(0, n, b):
        chunk = q[i:i + b]
        pad = b - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, q.shape[1]), np.float32)])
        res = fn(jax.device_put(chunk, dev), *args)
        outs.append(jax.tree_util.tree_map(lambda r: np.asarray(r)[:b - pad], res))
    return jax.tree_util.tree_map(lambda *r: np.concatenate(r), *outs)


def nearest(query_NxD, ref_MxD, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(Euclidean distances float32[N, k] ascending, indices int32[N, k]) into ref."""
    ref = np.asarray(ref_MxD, np.float32)
    _, idx = _blocks(functools.partial(_block_knn, k=int(k)), query_NxD, _pad_rows(ref, FAR))
    # Exact distances of the found neighbours: |q|^2 + |r|^2 - 2 q.r cancels badly for
    # near-identical vectors (a copy would be at 1e-2 instead of 0).
    q = np.asarray(query_NxD, np.float32)
    d = np.stack([np.linalg.norm(q - ref[idx[:, j]], axis=1) for j in range(idx.shape[1])], 1)
    order = np.argsort(d, axis=1, kind="stable")
    return np.take_along_axis(d, order, 1), np.take_along_axis(idx, order, 1)


def knn_radii(f_NxD, k: int) -> np.ndarray:
    """Distance of each row to its k-th nearest other row: float32[N]."""
    if len(f_NxD) <= k:
        raise ValueError(f"k={k} nearest neighbours need more than {k} points, got {len(f_NxD)}")
    d, _ = nearest(f_NxD, f_NxD, k + 1)  # the first neighbour is the point itself
    return d[:, k]


def coverage(query_NxD, ref_MxD, radii_M) -> float:
    """Share of queries inside the union of balls around ref with the given radii."""
    radius2 = np.asarray(radii_M, np.float32) ** 2
    inside = _blocks(_block_inside, query_NxD, _pad_rows(ref_MxD, FAR),
                     _pad_rows(radius2, -1.0))  # padding: a ball nothing is inside
    return float(np.mean(inside))


def precision_recall(real_NxD, fake_MxD, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN manifolds."""
    precision = coverage(fake_MxD, real_NxD, knn_radii(real_NxD, k))
    recall = coverage(real_NxD, fake_MxD, knn_radii(fake_MxD, k))
    return precision, recall


# ------------------------------------------------------------------ all metrics
def quality_metrics(real_NxD, fake_MxD, *, k: int = 3, kid_subset_size: int = 1000,
                    kid_subsets: int = 100, seed: int = 0) -> tuple[dict, dict]:
    """(metrics, details) of features `fake` against the reference `real`; every metric
    NaN if a fake row is not finite (one NaN row made recall a silent 0.0)."""
    bad = int(np.sum(~np.isfinite(np.asarray(fake_MxD)).all(axis=1)))
    if bad:
        nan = float("nan")
        return ({"fid_fmnist": nan, "kid_fmnist": nan, "precision": nan, "recall": nan},
                {"kid_fmnist_std": nan, "nonfinite_samples": bad})
    kid_mean, kid_std = kid(fake_MxD, real_NxD, subset_size=kid_subset_size,
                            num_subsets=kid_subsets, seed=seed)
    precision, recall = precision_recall(real_NxD, fake_MxD, k)
    return ({"fid_fmnist": fid_from_features(fake_MxD, real_NxD), "kid_fmnist": kid_mean,
             "precision": precision, "recall": recall}, {"kid_fmnist_std": kid_std})


def conditional_accuracy(probs_NxK, labels_N) -> float:
    """Share of images whose most probable class is the requested one."""
    return float(np.mean(np.argmax(probs_NxK, -1) == np.asarray(labels_N)))


def conditional_prob(probs_NxK, labels_N) -> float:
    """Mean probability of the requested class."""
    probs = np.asarray(probs_NxK)
    return float(np.mean(probs[np.arange(len(probs)), np.asarray(labels_N)]))


# The tiny presets' overrides (tests: seconds; numbers meaningless)
TINY = {"evals.image_quality.num_samples": 64, "evals.image_quality.num_real": 256,
        "evals.image_quality.feature_preset": "tiny", "evals.image_quality.batch_size": 32,
        "evals.image_quality.kid_subset_size": 32, "evals.image_quality.kid_subsets": 5}


def settings(**overrides) -> ConfigDict:
    """config.evals.image_quality: the keys and their defaults (unknown overrides fail)."""
    s = ConfigDict()
    s.during_training = False      # True: also at each periodic eval (use ~500 samples)
    s.num_samples = 10_000         # generated images (the floor uses as many train images)
    s.num_real = 0                 # test images of the reference set (0 = the whole split)
    s.batch_size = 256             # sampling batch
    s.feature_preset = "cpu"       # configs/fmnist_classifier.py preset of the feature net
    s.pr_k = 3                     # k of the k-NN manifolds (precision/recall)
    s.kid_subset_size = 1000       # KID: examples per subset...
    s.kid_subsets = 100            # ...and subsets averaged
    from genjax.evaluators import with_overrides
    return with_overrides("image_quality", s, overrides)


def check_settings(settings) -> None:
    """k-NN manifolds need more than pr_k points a set, KID two (one UserError line)."""
    k = int(settings.pr_k)
    if k < 1:
        raise UserError(f"image_quality.pr_k={k}: must be >= 1")
    for key in ("num_samples", "num_real"):
        n = int(settings[key])
        if (key == "num_samples" or n) and n <= max(k, 1):
            raise UserError(f"image_quality.{key}={n}: precision/recall's k-NN radii "
                            f"(pr_k={k}) need more than {max(k, 1)} images a set")


def evaluate(ctx, settings) -> dict:
    from genjax.evaluators import plots
    from genjax.evaluators.feature_net import load_feature_net
    net = load_feature_net(ctx.config.data, preset=str(settings.feature_preset),
                           train_fn=ctx.train_fn)
    num_real = int(settings.num_real) or None
    real_f, _ = net.real_features(ctx.data, "test", num_real)
    images, labels = ctx.sample_images(int(settings.num_samples),
                                       batch_size=int(settings.batch_size), seed=ctx.seed)
    n = len(images)
    fake_f = net.features(images)
    train_f, train_y = net.real_features(ctx.data, "train", n)
    kw = dict(k=int(settings.pr_k), kid_subset_size=int(settings.kid_subset_size),
              kid_subsets=int(settings.kid_subsets), seed=ctx.seed)
    metrics, details = quality_metrics(real_f, fake_f, **kw)
    floors, floor_details = quality_metrics(real_f, train_f, **kw)
    if bad := details.get("nonfinite_samples", 0):
        warn(f"image_quality: {bad} of {n} samples hold NaN/Inf; every metric is NaN")
    if labels is not None:
        fake_p, train_p = net.probs_from_features(fake_f), net.probs_from_features(train_f)
        for name, fn in (("conditional_accuracy", conditional_accuracy),
                         ("conditional_prob", conditional_prob)):
            metrics[name], floors[name] = fn(fake_p, labels), fn(train_p, train_y)
            metrics[name] = float("nan") if bad else metrics[name]
    keys = [k for k in ("precision", "recall", "conditional_accuracy", "conditional_prob")
            if k in metrics]
    rows = {"samples": {k: metrics[k] for k in keys},
            "real train (floor)": {k: floors[k] for k in keys}}
    path = plots.precision_recall_bars(
        rows,
        os.path.join(ctx.out_dir, "precision_recall.png"),
        title=f"{ctx.source}: {n} vs {len(real_f)} test images")
    details.update(feature_net=net.name, feature_net_origin=net.origin,
                   feature_net_test_accuracy=net.test_accuracy,
                   num_samples=n, num_real=len(real_f), pr_k=int(settings.pr_k),
                   floor_kid_fmnist_std=floor_details["kid_fmnist_std"])
    markdown = (f"Features: `{net.name}` (configs/fmnist_classifier.py:{settings.feature_preset}"
                f", test accuracy {net.test_accuracy:.4f}, {net.describe_origin()}); "
                f"fid_fmnist/kid_fmnist are NOT Inception FID/KID. {n} samples "
                f"({ctx.source}) vs {len(real_f)} test "
                f"images; floors: the first {len(train_f)} train images vs the same test "
                f"images.")
    return {"metrics": metrics, "floors": floors, "figures": [path], "markdown": markdown,
            "details": details}
