"""Specification of the image evaluators (genjax/evaluators/{feature_net, image_quality,
novelty, cas}.py) by known answers: a set against itself, disjoint sets, copies of the
training data, real images in place of samples. The feature net is the tiny preset of
configs/fmnist_classifier.py, built once per session (tests/conftest.py) and copied into a
temporary cache of this module.
"""
import os

import numpy as np
import pytest

from configs import fmnist_classifier
from genjax import train
from genjax.data.array_data import ArrayData
from genjax.evaluators import cas, feature_net, image_quality as iq, novelty
from genjax.errors import UserError


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """<tmp>/feature_net: where the evaluators look with GENJAX_CACHE_DIR=<tmp>."""
    return os.path.join(str(tmp_path_factory.mktemp("genjax_cache")), "feature_net")


@pytest.fixture(scope="module")
def data_cfg(data_dir):
    return fmnist_classifier.get_config("tiny").data


@pytest.fixture(scope="module")
def net(data_cfg, cache_dir, copy_tiny_feature_net):
    copy_tiny_feature_net(cache_dir)
    return feature_net.load_feature_net(data_cfg, preset="tiny", cache_dir=cache_dir,
                                        train_fn=train.train)


@pytest.fixture(scope="module")
def real(data_cfg):
    """The first 2000 train and test images: {split: (images, labels)}."""
    from genjax.data.image_loader import ImageData
    data = ImageData(data_cfg, global_batch_size=8, seed=0)
    return {s: cas.real_split(data, s, 2000) for s in ("train", "test")}


# ------------------------------------------------------------------ feature net
def test_feature_net_is_a_trained_classifier(net, real):
    x, y = real["test"]
    f = net.features(x[:300])
    p = net.probs(x[:300])
    assert f.shape == (300, net.config.model.feature_dim) and f.dtype == np.float32
    assert p.shape == (300, 10) and np.allclose(p.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(net.probs_from_features(f), p, atol=1e-5)
    assert net.name.startswith("fmnist_classifier-") and len(net.class_names) == 10
    # 60 steps of the tiny preset: well above chance (0.1), measured on 640 test images
    assert 0.4 < net.test_accuracy <= 1.0
    assert abs(np.mean(p.argmax(1) == y[:300]) - net.test_accuracy) < 0.12
    with pytest.raises(ValueError, match=r"takes images \[N, 32, 32, 1\]"):
        net.features(np.zeros((2, 28, 28, 1), np.float32))


def test_feature_net_cache_is_reused_and_rebuilt_when_the_config_changes(
        net, data_cfg, cache_dir, monkeypatch):
    class Trained(Exception):
        pass

    def no_training(config, workdir, **kw):
        os.makedirs(os.path.join(workdir, "checkpoints"), exist_ok=True)  # a half-built net
        raise Trained(config.model.feature_dim)

    monkeypatch.setattr(feature_net, "_LOADED", {})  # a new process: only the disk cache
    again = feature_net.load_feature_net(data_cfg, preset="tiny", cache_dir=cache_dir,
                                         train_fn=no_training)
    assert again.name == net.name and again.test_accuracy == net.test_accuracy

    changed = fmnist_classifier.get_config("tiny")
    changed.unlock()
    changed.model.feature_dim = 24
    monkeypatch.setattr(feature_net, "classifier_config", lambda d, p: changed)
    with pytest.raises(Trained):  # another checksum: a new build starts...
        feature_net.load_feature_net(data_cfg, preset="tiny", cache_dir=cache_dir,
                                     train_fn=no_training)
    # ...and its failure leaves nothing behind that a later call would trust
    assert sorted(os.listdir(cache_dir)) == [net.name]
    assert feature_net.cached_info(data_cfg, "tiny", cache_dir) is None


# ------------------------------------------------------------------ FID / KID / P&R
def test_frechet_distance_of_gaussians_has_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    c1, c2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 1.0])
    # commuting covariances: ||mu1 - mu2||^2 + sum (sqrt a - sqrt b)^2 = 5 + (1 + 1 + 4)
    assert iq.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(11.0, abs=1e-9)
    assert iq.frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_non_commuting_covariances():
    # tr sqrt(M) of a 2x2 M with positive eigenvalues is sqrt(tr M + 2 sqrt(det M)):
    # A B = [[2, 4], [1, 8]], tr 10, det 12. tr(sqrt(A) sqrt(B)) (the textbook bug) gives 0.804
    a, b = np.array([[2.0, 1.0], [1.0, 2.0]]), np.diag([1.0, 4.0])
    want = np.trace(a) + np.trace(b) - 2 * np.sqrt(10 + 2 * np.sqrt(12))
    assert iq.frechet_distance(np.zeros(2), a, np.zeros(2), b) == pytest.approx(want, abs=1e-9)
    assert want == pytest.approx(0.7712204, abs=1e-6)


def test_fid_fmnist_of_a_set_with_itself_is_zero_and_grows_with_noise(net, real):
    x = real["test"][0][:1000]
    f = net.features(x)
    assert iq.fid_from_features(f, f) == pytest.approx(0.0, abs=1e-6)
    rs = np.random.RandomState(0)
    fids = [iq.fid_from_features(f, net.features(np.clip(x + s * rs.randn(*x.shape), -1, 1)
                                                 .astype(np.float32)))
            for s in (0.1, 0.3, 0.6)]
    assert 0 < fids[0] < fids[1] < fids[2], fids


def test_kid_is_zero_for_one_distribution_and_positive_for_two():
    rs = np.random.RandomState(0)
    a, b = rs.randn(2, 1000, 16).astype(np.float32)
    same, same_std = iq.kid(a, b, subset_size=200, num_subsets=10)
    assert abs(same) < 0.02 and same_std > 0
    shifted, _ = iq.kid(a, b + 0.5, subset_size=200, num_subsets=10)
    assert shifted > 10 * abs(same) and shifted > 0.05


def test_precision_recall_of_a_set_with_itself_is_one_and_of_disjoint_clusters_zero():
    rs = np.random.RandomState(0)
    a = rs.randn(500, 8).astype(np.float32)
    assert iq.precision_recall(a, a, k=3) == (1.0, 1.0)
    assert iq.precision_recall(a, a + 100.0, k=3) == (0.0, 0.0)
    # samples covering half of the real manifold: full precision, about half the recall
    half = a[a[:, 0] > 0]
    p, r = iq.precision_recall(a, half, k=3)
    assert p == 1.0 and 0.35 < r < 0.75


def test_precision_recall_radii_exclude_the_point_itself():
    # k = 1 on a line. Real radii (nearest OTHER real): 0->1, 1->1, 3->2, 7->4; fake radii:
    # 1.9->3.6, 5.5->3.6, 10->2, 12->2. Fakes inside a real ball: 1.9, 5.5, 10 (not 12): 3/4;
    # reals inside a fake ball: all four. A radius counting the point itself (0) gives (0, 0)
    real = np.array([[0.0], [1.0], [3.0], [7.0]], np.float32)
    fake = np.array([[1.9], [5.5], [10.0], [12.0]], np.float32)
    assert iq.precision_recall(real, fake, k=1) == (0.75, 1.0)


def _brute_precision_recall(real, fake, k):
    """Kynkaanniemi et al. in float64 over every pair: radius = distance to the k-th
    nearest other point of the same set; inside = within some ball of the other set."""
    def radii(x):
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself
    def inside(q, ref):
        d = np.linalg.norm(q[:, None] - ref[None], axis=-1)
        return float(np.mean((d <= radii(ref)[None]).any(axis=1)))
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    return inside(fake, real), inside(real, fake)


def test_precision_recall_equal_the_brute_force_definition_with_exact_duplicates():
    """Far from the origin (|x| ~ 240, as real features are not centred) and with each
    point repeated k + 1 times, so that its ball has radius 0: a copy is inside it. The
    float32 |q|^2 + |r|^2 - 2 q.r put copies outside (0.48 instead of 1.0)."""
    rs = np.random.RandomState(1)
    base = (np.abs(rs.randn(100, 64)) + 30).astype(np.float32)
    dup = np.repeat(base[:25], 4, axis=0)
    assert iq.precision_recall(dup, dup, k=3) == (1.0, 1.0) == \
        _brute_precision_recall(dup, dup, 3)
    fake = np.concatenate([dup[:40], base[60:] + rs.randn(40, 64).astype(np.float32)])
    for k in (1, 3):
        assert iq.precision_recall(dup, fake, k) == pytest.approx(
            _brute_precision_recall(dup, fake, k), abs=1e-12)


def test_fid_and_kid_equal_a_float64_reference_of_their_papers_formulas():
    """FID (pytorch-fid's formula): unbiased (ddof = 1) covariances and scipy's matrix
    square root; KID (Binkowski et al.): the unbiased MMD^2 over every pair of one subset
    holding whole sets, kernel (x.y / D + 1)^3. Fewer samples (40) than dimensions (64)."""
    import scipy.linalg
    rs = np.random.RandomState(2)
    a = rs.randn(40, 64)
    b = 0.7 * rs.randn(60, 64) @ rs.randn(64, 64) / 8 + 0.3
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False, ddof=1), np.cov(b, rowvar=False, ddof=1)
    want = np.sum((mu_a - mu_b) ** 2) + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real)
    assert iq.fid_from_features(a, b) == pytest.approx(want, rel=1e-6)
    x, y = a[:30].astype(np.float32), b[:30].astype(np.float32)
    kern = lambda u, v: (float(u @ v) / 64 + 1) ** 3  # noqa: E731
    m = 30
    kxx = sum(kern(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(kern(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(kern(x[i], y[j]) for i in range(m) for j in range(m)) / m ** 2
    mean, std = iq.kid(x, y, subset_size=m, num_subsets=3)
    assert mean == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-5) and std < 1e-6 * abs(mean)


def test_a_sample_with_nan_features_makes_every_metric_nan_never_a_silent_number():
    """One NaN row used to make every k-NN radius NaN (recall a silent 0.0), FID a
    LinAlgError and near_copies an undercount."""
    rs = np.random.RandomState(3)
    real, fake = rs.randn(2, 50, 8).astype(np.float32)
    fake[7, 2] = np.nan
    metrics, details = iq.quality_metrics(real, fake, k=3, kid_subset_size=20, kid_subsets=2)
    assert all(np.isnan(v) for v in metrics.values()) and details["nonfinite_samples"] == 1
    s = novelty.novelty_stats(fake, rs.randn(60, 8), rs.randn(20, 8))
    assert np.isnan(s["near_copies"]) and np.isnan(s["median_nn_distance"])
    assert np.isfinite(s["test_near_copies"])


def test_too_few_images_for_the_k_nn_radii_is_one_user_error_line():
    settings = iq.settings(num_samples=3, pr_k=3)
    with pytest.raises(UserError, match=r"image_quality.num_samples=3: .*pr_k=3"):
        iq.check_settings(settings)
    iq.check_settings(iq.settings(num_samples=4, pr_k=3))
    with pytest.raises(UserError, match=r"image_quality.num_real=2"):
        iq.check_settings(iq.settings(num_samples=100, num_real=2))


def test_conditional_prob_averages_the_requested_class_probability():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.25, 0.25]])
    assert iq.conditional_prob(probs, [0, 2, 1]) == pytest.approx((0.7 + 0.3 + 0.25) / 3)


def test_conditional_accuracy_counts_the_requested_class():
    probs = np.eye(4)[[0, 1, 2, 3, 0]]
    assert iq.conditional_accuracy(probs, [0, 1, 2, 3, 1]) == pytest.approx(0.8)


# ------------------------------------------------------------------ novelty
def test_the_near_copy_floor_is_measured_on_test_images_held_out_from_the_threshold():
    # 1-D features, one train image at 0. Even test rows (the threshold's) lie at 1..100,
    # whose 1st percentile is 1.99; the odd rows alternate 0.5 (a repeat of the train
    # image) and 50: a floor of 1/2, where a threshold taken over every row gave ~0.01
    even = np.arange(1, 101, dtype=np.float32)
    odd = np.where(np.arange(100) % 2 == 0, 0.5, 50.0).astype(np.float32)
    test = np.stack([even, odd], 1).reshape(-1, 1)
    s = novelty.novelty_stats(np.array([[0.2], [3.0]], np.float32),
                              np.zeros((1, 1), np.float32), test)
    assert s["threshold"] == pytest.approx(1.99, abs=1e-5)
    assert s["test_near_copies"] == 0.5 and s["near_copies"] == 0.5


def test_novelty_flags_copies_of_training_images_and_not_real_test_images(net, real):
    train_f = net.features(real["train"][0])
    test_f = net.features(real["test"][0])
    ref, fresh = test_f[:1000], test_f[1000:]
    copies = novelty.novelty_stats(train_f[::4], train_f, ref)
    assert copies["near_copies"] == 1.0 and copies["median_nn_distance"] == 0.0
    other = novelty.novelty_stats(fresh, train_f, ref)
    assert other["near_copies"] < 0.04
    assert other["median_nn_distance"] == pytest.approx(other["test_median_nn_distance"],
                                                        rel=0.2)
    assert 0 < other["test_near_copies"] < 0.04  # held-out test images: ~the percentile
    rows = np.array([5, 1, 1999])  # what the PNG shows: the images at those rows
    np.testing.assert_array_equal(
        novelty.train_images(ArrayData({"train": real["train"]}, net.class_names,
                                       global_batch_size=8), rows, batch_size=300),
        real["train"][0][rows])


# ------------------------------------------------------------------ CAS
@pytest.mark.slow
def test_cas_of_real_images_matches_the_real_classifier(net, real, data_cfg):
    """The tiny recipe (60 steps of 32) on 2000 real labelled images in memory scores what
    the feature net (the same recipe on the training stream) scores."""
    (x, y), (tx, ty) = real["train"], real["test"]
    out = cas.train_and_test(x, y, tx, ty, net.class_names, data_cfg, preset="tiny",
                             train_fn=train.train)
    assert abs(out["accuracy"] - net.test_accuracy) < 0.12, (out, net.test_accuracy)


def test_cas_trains_on_the_samples_with_their_requested_labels_and_tests_on_real_test(
        data_cfg):
    """The wiring, with a recording stand-in for the training loop: the synthetic run
    trains on exactly the samples and the classes they were requested for, the floor on
    the first num_samples real training images, both test on the whole real test split."""
    from types import SimpleNamespace
    rs = np.random.RandomState(5)
    img = lambda n: rs.rand(n, 4, 4, 1).astype(np.float32)  # noqa: E731
    names = ["a", "b", "c"]
    real = ArrayData({"train": (img(30), rs.randint(0, 3, 30).astype(np.int32)),
                      "test": (img(20), rs.randint(0, 3, 20).astype(np.int32))}, names,
                     global_batch_size=4)
    fake_x, fake_y = img(12), np.arange(12, dtype=np.int32) % 3
    calls = []

    def record(config, workdir, *, data):
        calls.append({s: cas.real_split(data, s) for s in ("train", "test")} |
                     {"steps": int(config.total_steps)})
        return {"accuracy": [0.25, 0.75][len(calls) - 1]}
    ctx = SimpleNamespace(sample_images=lambda n, batch_size, seed: (fake_x[:n], fake_y[:n]),
                          meta={"data": {"class_names": names}}, data=real, seed=0,
                          config=SimpleNamespace(data=data_cfg), train_fn=record)
    out = cas.evaluate(ctx, cas.settings(num_samples=12, preset="tiny", total_steps=3))
    assert out["metrics"] == {"cas_accuracy": 0.25} and out["floors"] == {"cas_accuracy": 0.75}
    synthetic, floor = calls
    want = {"train": (fake_x, fake_y), "test": cas.real_split(real, "test")}
    floor_want = {"train": cas.real_split(real, "train", 12), "test": want["test"]}
    for got, expected in ((synthetic, want), (floor, floor_want)):
        assert got["steps"] == 3
        for split in ("train", "test"):
            np.testing.assert_array_equal(got[split][0], expected[split][0])
            np.testing.assert_array_equal(got[split][1], expected[split][1])
    assert len(floor["test"][1]) == 20


def test_array_data_batches_resume_and_pad():
    x = np.arange(10, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 1), np.float32)
    y = np.arange(10, dtype=np.int32) % 3
    data = ArrayData({"train": (x, y), "test": (x[:5], y[:5])}, ["a", "b", "c"],
                     global_batch_size=4, seed=1)
    it = data.train_iterator()
    seen = [next(it)["image"][:, 0, 0, 0] for _ in range(5)]  # crosses an epoch boundary
    assert sorted(np.concatenate(seen[:2]).tolist() + seen[2][:2].tolist()) == list(range(10))
    state = it.get_state()
    it2 = data.train_iterator()
    it2.set_state(state)
    np.testing.assert_array_equal(next(it2)["label"], next(it)["label"])
    batches = list(data.eval_batches("test", 4))
    assert [b["mask"].tolist() for b in batches] == [[1, 1, 1, 1], [1, 0, 0, 0]]
    assert batches[1]["image"][0, 0, 0, 0] == 4.0
    with pytest.raises(ValueError, match="labels outside"):
        ArrayData({"train": (x, y + 3)}, ["a", "b", "c"], global_batch_size=4)


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
@pytest.mark.parametrize("family", ["diffusion", "vae", "gan"])
def test_evaluate_runs_the_image_evaluators_on_a_tiny_run(family, tiny_run, net, cache_dir,
                                                          monkeypatch):
    """genjax.evaluate on the session's 6-step run of each image family (class-conditional:
    tests/families.py): every metric with its real-vs-real floor, figures, report."""
    from genjax.evaluate import evaluate_workdir
    monkeypatch.setenv("GENJAX_CACHE_DIR", os.path.dirname(cache_dir))  # the tiny net
    out = evaluate_workdir(str(tiny_run(family)), only=["image_quality", "novelty", "cas"])
    r = out["results"]
    quality = {"fid_fmnist", "kid_fmnist", "precision", "recall", "conditional_accuracy",
               "conditional_prob"}
    assert set(r["image_quality"]["metrics"]) == set(r["image_quality"]["floors"]) == quality
    assert r["image_quality"]["details"]["feature_net"] == net.name  # the cached one
    assert r["image_quality"]["floors"]["fid_fmnist"] < r["image_quality"]["metrics"]["fid_fmnist"]
    for name in ("image_quality", "novelty"):
        assert all(os.path.isfile(f) for f in r[name]["figures"]) and r[name]["figures"]
    with open(out["report_md"]) as f:
        report = f.read()
    assert "fid_fmnist" in report and "near_copies" in report and "cas_accuracy" in report


def test_a_feature_net_evaluator_during_multi_process_training_is_one_config_error():
    """image_quality and novelty read one process's view of the data (and build nets
    in folders of their own), so with several processes they run after training."""
    from genjax import evaluators, families
    from genjax.errors import ConfigError
    from tests.families import tiny_config
    family = families.for_inference(families.get("vae"))
    for name in ("image_quality", "novelty"):  # (cas runs only when --only names it)
        config = tiny_config("vae", **{f"evals.{name}.during_training": True})
        evaluators.check_during_training(config, family, process_count=1)  # one process: fine
        with pytest.raises(ConfigError, match=rf"evals.{name}.during_training=True with 2 "
                                              rf"processes: .*--only={name} after training"):
            evaluators.check_during_training(config, family, process_count=2)
    evaluators.check_during_training(tiny_config("vae"), family, process_count=2)  # defaults
