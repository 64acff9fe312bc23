"""The VAE's and GAN's formulas against answers computed apart from the code: scipy's
densities, float64 bins, an SVD, numpy's minibatch statistics, and a VAE whose weights are
all zero (q = the prior, a decoder that ignores z), which must score exactly 1 bit/dim under
the Bernoulli likelihood (a fair coin per pixel) whatever the number of IWAE draws.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from scipy import stats

from genjax.families import vae as vae_family
from genjax.models import dcgan
from genjax.models import vae as vae_lib
from tests.test_image_families import fake_batch, init, jitted, tiny


def test_gaussian_and_bernoulli_log_probs_and_the_kl_equal_scipy():
    rs = np.random.RandomState(0)
    z, mean, logvar = rs.normal(size=(3, 5)), rs.normal(size=(3, 5)), rs.uniform(-2, 1, (3, 5))
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    want = stats.norm.logpdf(z, mean, np.exp(0.5 * logvar)).sum(-1)
    np.testing.assert_allclose(vae_lib.gaussian_log_prob(f32(z), f32(mean), f32(logvar)), want,
                               rtol=1e-5)
    # KL(N(m, v) || N(0, 1)) = log(1 / sd) + (v + m^2) / 2 - 1/2, per dim
    v = np.exp(logvar)
    kl = (np.log(1 / np.sqrt(v)) + (v + mean ** 2) / 2 - 0.5).sum(-1)
    np.testing.assert_allclose(vae_family.kl_divergence(f32(mean), f32(logvar)), kl, rtol=1e-5)
    x = np.round(rs.uniform(0, 255, (2, 3, 3, 1))) / 127.5 - 1
    logits = rs.normal(size=x.shape) * 3
    t = (x + 1) / 2  # targets in [0, 1]
    bce = (t * np.log(1 / (1 + np.exp(-logits))) + (1 - t) * np.log(1 / (1 + np.exp(logits))))
    np.testing.assert_allclose(vae_lib.bernoulli_log_prob(f32(x), f32(logits)),
                               bce.sum(axis=(1, 2, 3)), rtol=1e-5)


def logistic_bin_mass(x, mean, scale):
    """The logistic's mass on each 8-bit pixel's bin [x - 1/255, x + 1/255], the edge bins
    open to -inf / +inf (Salimans et al. 2017), in float64."""
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    upper = np.where(x > 0.999, 1.0, sig((x + 1 / 255 - mean) / scale))
    lower = np.where(x < -0.999, 0.0, sig((x - 1 / 255 - mean) / scale))
    return upper - lower


def test_discretized_logistic_is_the_logistic_mass_of_each_pixels_bin():
    """log(sigmoid((x + 1/255 - m) / s) - sigmoid((x - 1/255 - m) / s)), the edge bins open
    to -inf / +inf (Salimans et al. 2017), in float64."""
    rs = np.random.RandomState(1)
    n = 400
    x = np.round(rs.uniform(0, 255, n)) / 127.5 - 1
    x[:20], x[20:40] = -1.0, 1.0
    log_scale = rs.uniform(-4.5, 0.0, n)
    mean = x + rs.uniform(-4, 4, n) * np.exp(log_scale)
    mass = logistic_bin_mass(x, mean, np.exp(log_scale))
    want = np.log(mass)
    keep = mass > 1e-5  # (below, the code takes the density at the centre)
    assert keep.mean() > 0.9 and want[keep].min() < -5
    out = np.stack([mean, log_scale], -1).reshape(n, 1, 1, 2).astype(np.float32)
    got = vae_lib.discretized_logistic_log_prob(
        jnp.asarray(x.reshape(n, 1, 1, 1), jnp.float32), jnp.asarray(out))
    np.testing.assert_allclose(np.asarray(got)[keep], want[keep], rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic"])
def test_a_vae_with_zero_weights_scores_its_closed_form(likelihood):
    """All weights 0: q(z|x) = N(0, I) = the prior and the decoder ignores z, so every
    importance weight is p(x) itself: KL = 0, IWAE = ELBO for any k, and p(x) is a fair
    coin per pixel (Bernoulli: exactly 1 bit/dim) or the standard logistic's mass of each
    pixel's bin (logistic)."""
    c = tiny("vae", likelihood=likelihood, iwae_samples=16)
    b = fake_batch(c, 4, mask=False)
    mod, model, params, state = init("vae", c, b)
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    sums = jitted(mod.eval_fn, model=model, config=c)(zero, state, b)
    n = float(sums["count"])
    x = np.asarray(b["image"], np.float64)
    if likelihood == "bernoulli":
        nll = x[0].size * math.log(2)
    else:
        nll = -np.log(logistic_bin_mass(x, 0.0, 1.0)).sum() / len(x)
    np.testing.assert_allclose(float(sums["kl"]) / n, 0.0, atol=1e-6)
    np.testing.assert_allclose(float(sums["nll_iwae"]) / n, nll, rtol=1e-5)
    np.testing.assert_allclose(-float(sums["elbo"]) / n, nll, rtol=1e-5)
    bpd = nll / (x[0].size * math.log(2))
    np.testing.assert_allclose(float(sums["nll_bpd"]) / n, bpd, rtol=1e-5)
    if likelihood == "bernoulli":
        assert bpd == pytest.approx(1.0)


def test_spectral_norm_divides_by_the_largest_singular_value():
    """After enough power iterations the normalised kernel's largest singular value (an
    SVD, float64) is 1, and the kernel is the raw one over that of the raw."""
    layer = dcgan.SNDense(6, spectral_norm=True)
    x = jnp.eye(9)  # I @ W + 0 = W: the effective kernel
    variables = nn.meta.unbox(layer.init(jax.random.PRNGKey(0), x))
    for _ in range(60):
        _, upd = layer.apply(variables, x, True, mutable=["spectral"])
        variables = {**variables, **upd}
    w_eff = np.asarray(layer.apply(variables, x), np.float64)
    raw = np.asarray(variables["params"]["kernel"], np.float64)
    top = np.linalg.svd(raw, compute_uv=False)[0]
    np.testing.assert_allclose(np.linalg.svd(w_eff, compute_uv=False)[0], 1.0, rtol=1e-4)
    np.testing.assert_allclose(w_eff, raw / top, rtol=1e-4, atol=1e-7)


def test_minibatch_std_is_the_groups_mean_feature_std():
    """Karras et al. 2018: per group of consecutive examples, the (biased) std over the group
    of each feature and location, averaged to one number, appended as a channel."""
    h = np.random.RandomState(2).normal(size=(6, 2, 3, 4)).astype(np.float32)
    out = np.asarray(dcgan.minibatch_std(jnp.asarray(h), 3))
    groups = h.astype(np.float64).reshape(2, 3, 2, 3, 4)
    std = np.sqrt(groups.var(axis=1) + 1e-8).mean(axis=(1, 2, 3))   # [2]
    np.testing.assert_array_equal(out[..., :4], h)
    np.testing.assert_allclose(out[..., 4], np.repeat(std, 3)[:, None, None]
                               * np.ones((6, 2, 3)), rtol=1e-5)
    assert abs(std[0] - std[1]) > 1e-3  # two groups, two numbers
