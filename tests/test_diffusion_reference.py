"""genjax/diffusion.py against a float64 reference written from the papers, step by step.

The oracle and one-step tests (test_image_families.py) see only a sampler's last step,
where the posterior mean is the predicted x0 and DDIM's sigma is 0; these pin every step
of a multi-step run with a network that is not an oracle, and each term of the bound:
the posterior from Bayes' rule for two Gaussians (not Ho et al.'s closed form the code
uses), the decoder's bins from scipy's normal CDF, KLs from the textbook formula.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from genjax import diffusion
from genjax.errors import ConfigError
from tests.test_diffusion_dpo import cosine_alphas_cumprod

T = 50


def schedule64(kind):
    """betas and alpha-bar in float64 (Ho et al. 2020; Nichol & Dhariwal 2021, eq. 17)."""
    if kind == "linear":
        betas = np.linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T)
        return betas, np.cumprod(1 - betas)
    ab = cosine_alphas_cumprod(T)
    return 1 - ab / np.concatenate([[1.0], ab[:-1]]), ab


def bin_mass64(x, mean, sd):
    """N(mean, sd^2)'s mass on each 8-bit pixel's bin [x - 1/255, x + 1/255], the edge
    bins open to -inf / +inf, from scipy's normal CDF."""
    upper = np.where(x > 0.999, 1.0, stats.norm.cdf((x + 1 / 255 - mean) / sd))
    lower = np.where(x < -0.999, 0.0, stats.norm.cdf((x - 1 / 255 - mean) / sd))
    return upper - lower


def bayes_posterior(x0, x_t, ab_t, ab_prev):
    """q(x_prev | x_t, x0) from q(x_prev | x0) = N(sqrt(ab_prev) x0, 1 - ab_prev) and
    q(x_t | x_prev) = N(sqrt(a) x_prev, 1 - a), a = ab_t / ab_prev: precisions add."""
    a = ab_t / ab_prev
    precision = 1 / (1 - ab_prev) + a / (1 - a)
    var = 1 / precision
    mean = var * (np.sqrt(ab_prev) * x0 / (1 - ab_prev) + np.sqrt(a) * x_t / (1 - a))
    return mean, var


def eps_net(x, t_B, labels):
    """A fixed network that is not an oracle: eps = 0.7 tanh(1.3 x) + 0.05 + t / 1000."""
    return 0.7 * jnp.tanh(1.3 * x) + 0.05 + t_B[:, None, None, None] / 1000.0


def eps_net64(x, t):
    return 0.7 * np.tanh(1.3 * x) + 0.05 + t / 1000.0


def test_linear_schedule_matches_ho_et_al_at_T_1000():
    s = diffusion.make_schedule("linear", 1000)
    ab = np.asarray(s.alphas_cumprod, np.float64)
    assert ab[0] == pytest.approx(1 - 1e-4, rel=1e-7)
    assert ab[-1] == pytest.approx(4.036e-5, rel=1e-3)  # sqrt(ab_T) ~ 0.0064: data is gone


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedules_equal_the_float64_reference(kind):
    betas, ab = schedule64(kind)
    s = diffusion.make_schedule(kind, T)
    np.testing.assert_allclose(s.betas, betas, rtol=1e-6)
    np.testing.assert_allclose(s.alphas_cumprod, ab, rtol=1e-5)


@pytest.mark.parametrize("steps", [4, 17])
def test_posterior_is_bayes_rule_between_any_two_levels(steps):
    _, ab = schedule64("cosine")
    ts, prevs = diffusion.timestep_pairs(T, steps)
    ab_t, ab_prev = ab[ts], np.where(prevs >= 0, ab[np.maximum(prevs, 0)], 1.0)
    keep = ab_prev < 1  # the last step is deterministic (to clean data)
    rs = np.random.RandomState(0)
    x0, x_t = rs.uniform(-1, 1, len(ts)), rs.normal(size=len(ts))
    mean, var = diffusion.posterior(jnp.asarray(x0, jnp.float32), jnp.asarray(x_t, jnp.float32),
                                    jnp.asarray(ab_t, jnp.float32),
                                    jnp.asarray(ab_prev, jnp.float32))
    want_mean, want_var = bayes_posterior(x0[keep], x_t[keep], ab_t[keep], ab_prev[keep])
    np.testing.assert_allclose(np.asarray(mean)[keep], want_mean, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(np.asarray(var)[keep], want_var, rtol=2e-4)


def test_reverse_log_variance_small_large_and_the_t0_clip():
    betas, ab = schedule64("linear")
    _, post = bayes_posterior(0.0, 0.0, ab[1:], ab[:-1])  # beta~_t for t >= 1
    t = jnp.arange(T)
    small = np.exp(np.asarray(diffusion.reverse_log_variance(diffusion.make_schedule(
        "linear", T), t, "small"), np.float64))
    large = np.exp(np.asarray(diffusion.reverse_log_variance(diffusion.make_schedule(
        "linear", T), t, "large"), np.float64))
    np.testing.assert_allclose(small[1:], post, rtol=1e-4)
    np.testing.assert_allclose(large[1:], betas[1:], rtol=1e-5)
    np.testing.assert_allclose([small[0], large[0]], [post[0], post[0]], rtol=1e-4)  # beta~_1


def _ddim64(x_T, kind, steps, eta, zs):
    """Song et al. 2021, eq. 12, with x0 clipped to [-1, 1] and eps recomputed from it."""
    _, ab = schedule64(kind)
    ts, prevs = diffusion.timestep_pairs(T, steps)
    x = np.asarray(x_T, np.float64)
    for t, p, z in zip(ts, prevs, zs):
        a, a_prev = ab[t], (ab[p] if p >= 0 else 1.0)
        eps = eps_net64(x, t)
        x0 = np.clip((x - np.sqrt(1 - a) * eps) / np.sqrt(a), -1, 1)
        eps = (x - np.sqrt(a) * x0) / np.sqrt(1 - a)
        sigma = eta * np.sqrt((1 - a_prev) / (1 - a)) * np.sqrt(1 - a / a_prev)
        x = np.sqrt(a_prev) * x0 + np.sqrt(max(1 - a_prev - sigma ** 2, 0)) * eps + sigma * z
    return np.clip(x, -1, 1)


def _ddpm64(x_T, kind, steps, zs):
    """Ancestral steps between respaced levels: x_prev ~ q(x_prev | x_t, x0_pred)."""
    _, ab = schedule64(kind)
    ts, prevs = diffusion.timestep_pairs(T, steps)
    x = np.asarray(x_T, np.float64)
    for t, p, z in zip(ts, prevs, zs):
        a = ab[t]
        x0 = np.clip((x - np.sqrt(1 - a) * eps_net64(x, t)) / np.sqrt(a), -1, 1)
        if p < 0:
            x = x0
            continue
        mean, var = bayes_posterior(x0, x, a, ab[p])
        x = mean + np.sqrt(var) * z
    return np.clip(x, -1, 1)


def _sampler_noise(seed, steps, shape):
    """The per-step noise the samplers draw (split(rng) -> loop key -> one key per step)."""
    _, loop_key = jax.random.split(jax.random.key(seed))
    n = len(diffusion.timestep_pairs(T, steps)[0])
    return [np.asarray(jax.random.normal(k, shape), np.float64)
            for k in jax.random.split(loop_key, n)]


@pytest.mark.parametrize("kind, steps, eta", [("cosine", 7, 0.0), ("cosine", 7, 0.6),
                                               ("linear", 5, 1.0), ("linear", 50, 0.3)])
def test_ddim_every_step_equals_the_float64_reference(kind, steps, eta):
    shape = (3, 4, 4, 1)
    x_T = jax.random.normal(jax.random.key(4), shape)
    out = diffusion.ddim_sample(eps_net, diffusion.make_schedule(kind, T), jax.random.key(3), shape,
                                parameterization="eps", num_steps=steps, eta=eta, x_T=x_T)
    want = _ddim64(x_T, kind, steps, eta, _sampler_noise(3, steps, shape))
    assert np.mean(np.abs(want) < 0.999) > 0.3  # not all clipped: every step shapes it
    np.testing.assert_allclose(out, want, atol=2e-4)


@pytest.mark.parametrize("kind, steps", [("cosine", 6), ("linear", 50)])
def test_ddpm_every_step_equals_the_float64_reference(kind, steps):
    shape = (3, 4, 4, 1)
    x_T = jax.random.normal(jax.random.key(6), shape)
    out = diffusion.ddpm_sample(eps_net, diffusion.make_schedule(kind, T), jax.random.key(5), shape,
                                parameterization="eps", num_steps=steps, x_T=x_T)
    want = _ddpm64(x_T, kind, steps, _sampler_noise(5, steps, shape))
    np.testing.assert_allclose(out, want, atol=3e-4)


def test_decoder_bins_equal_scipys_normal_cdf():
    rs = np.random.RandomState(1)
    x = np.concatenate([[-1.0, 1.0, -1.0, 1.0], np.round(rs.uniform(0, 255, 60)) / 127.5 - 1])
    log_scale = np.log(rs.uniform(0.003, 0.5, 64))
    # means up to 8 sd away (the bins' mass stays above float64's underflow), edges included
    mean = x + rs.uniform(-8, 8, 64) * np.exp(log_scale)
    mean[:4] = [-0.9, 0.95, 0.3, -0.2]
    got = diffusion.discretized_gaussian_log_likelihood(
        *(jnp.asarray(a, jnp.float32) for a in (x, mean, log_scale)))
    want = np.log(bin_mass64(x, mean, np.exp(log_scale)))
    assert np.all(np.isfinite(want)) and want.min() < -5  # far bins included
    near = want > -10  # (in the far tails float32's (x - mean) / s costs ~1e-3 relative)
    np.testing.assert_allclose(np.asarray(got)[near], want[near], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, want, rtol=2e-3)


def _kl64(m1, v1, m2, v2):
    """KL(N(m1, v1) || N(m2, v2)) = log(s2 / s1) + (v1 + (m1 - m2)^2) / (2 v2) - 1/2."""
    return 0.5 * np.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / (2 * v2) - 0.5


def test_each_bound_term_equals_the_float64_reference():
    """L_t (t >= 1): KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) summed over pixels, with
    p's mean the posterior at the clipped predicted x0 and its variance beta~_t; L_0: the
    decoder's -log of the bins around x0; L_T: KL(q(x_T | x0) || N(0, I))."""
    kind = "cosine"
    _, ab = schedule64(kind)
    s = diffusion.make_schedule(kind, T)
    rs = np.random.RandomState(2)
    x0 = np.round(rs.uniform(0, 255, (4, 3, 3, 1))) / 127.5 - 1
    t = np.array([0, 1, 17, 49])
    noise = rs.normal(size=x0.shape)
    x_t = np.sqrt(ab[t])[:, None, None, None] * x0 + \
        np.sqrt(1 - ab[t])[:, None, None, None] * noise
    eps = eps_net64(x_t, t[:, None, None, None])
    got = diffusion.vlb_term(s, "eps", "small", *(jnp.asarray(a, jnp.float32) for a in (
        x0, x_t)), jnp.asarray(t), jnp.asarray(eps, jnp.float32))
    _, beta_tilde = bayes_posterior(0.0, 0.0, ab[1:], ab[:-1])
    want = []
    for i, ti in enumerate(t):
        a = ab[ti]
        x0_pred = np.clip((x_t[i] - np.sqrt(1 - a) * eps[i]) / np.sqrt(a), -1, 1)
        if ti == 0:  # decoder: N(x0_pred, beta~_1) integrated over x0's bin
            want.append(-np.sum(np.log(bin_mass64(x0[i], x0_pred, np.sqrt(beta_tilde[0])))))
            continue
        m_true, v_true = bayes_posterior(x0[i], x_t[i], a, ab[ti - 1])
        m_model, _ = bayes_posterior(x0_pred, x_t[i], a, ab[ti - 1])
        want.append(np.sum(_kl64(m_true, v_true, m_model, beta_tilde[ti - 1])))
    assert min(want) > 1e-3  # a wrong network costs nats at every t (least at high noise)
    np.testing.assert_allclose(got, want, rtol=3e-3)
    prior = diffusion.prior_kl(s, jnp.asarray(x0, jnp.float32))
    np.testing.assert_allclose(prior, np.sum(_kl64(np.sqrt(ab[-1]) * x0, 1 - ab[-1], 0.0, 1.0),
                                             axis=(1, 2, 3)), rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("kind, steps", [("linear", 20), ("linear", 10), ("cosine", 0)])
def test_a_schedule_whose_betas_reach_1_is_one_config_error(kind, steps):
    with pytest.raises(ConfigError, match=f"{steps}"):
        diffusion.make_schedule(kind, steps)
    assert np.all(np.asarray(diffusion.make_schedule("linear", 21).alphas_cumprod) > 0)
