"""Preference objectives (genjax/preference.py) against answers computed independently:
closed forms with `math`/numpy, and the optima of tabular problems whose solution is
known (pi* = pi_ref exp(r / beta) / Z; Bradley-Terry scores up to a constant)."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import preference
from genjax.errors import ConfigError

BETA = 0.1


def value_and_slope(loss_type, delta, beta=BETA, eps=0.0):
    f = lambda d: preference.dpo_loss(d, beta, loss_type, eps)  # noqa: E731
    return float(f(jnp.float32(delta))), float(jax.grad(f)(jnp.float32(delta)))


def test_step_zero_losses_are_ln2_and_ipo_target_squared():
    # policy = reference: delta is 0 exactly
    d = preference.log_ratio_margin(*(jnp.full((3,), -7.25),) * 4)
    assert np.all(np.asarray(d) == 0)
    assert np.allclose(preference.dpo_loss(d, BETA, "sigmoid"), math.log(2), rtol=0, atol=1e-7)
    assert np.allclose(preference.dpo_loss(d, BETA, "ipo"), (1 / (2 * BETA)) ** 2, rtol=1e-7)
    assert np.allclose(preference.dpo_loss(d, BETA, "sigmoid", 0.3), math.log(2), atol=1e-7)


@pytest.mark.parametrize("loss_type, want, slope", [
    ("sigmoid", math.log1p(math.exp(-0.6)), -0.1 / (1 + math.exp(0.6))),  # 0.437488, -0.0354
    ("hinge", 0.4, -0.1),
    ("ipo", 1.0, 2.0)])
def test_known_values_and_gradients_at_delta_6_beta_0_1(loss_type, want, slope):
    value, grad = value_and_slope(loss_type, 6.0)
    assert value == pytest.approx(want, abs=1e-6)
    assert grad == pytest.approx(slope, abs=1e-6)
    if loss_type == "sigmoid":
        assert (round(value, 6), round(grad, 4)) == (0.437488, -0.0354)


def test_label_smoothing_mixes_both_orientations():
    value, _ = value_and_slope("sigmoid", 6.0, eps=0.25)
    want = 0.75 * math.log1p(math.exp(-0.6)) + 0.25 * math.log1p(math.exp(0.6))
    assert value == pytest.approx(want, abs=1e-6)


def test_unknown_loss_type_is_an_error_naming_the_choices():
    with pytest.raises(ConfigError, match="sigmoid.*ipo.*hinge"):
        preference.dpo_loss(jnp.zeros(2), BETA, "sigmoide")


def test_bradley_terry_value_margin_and_shift_invariance():
    r_w, r_l = jnp.array([2.0, -1.0]), jnp.array([0.5, 0.0])
    got = preference.bradley_terry_loss(r_w, r_l, margin=0.5)
    want = [math.log1p(math.exp(-(2.0 - 0.5 - 0.5))), math.log1p(math.exp(-(-1.0 - 0.5)))]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(preference.bradley_terry_loss(r_w + 5, r_l + 5),
                               preference.bradley_terry_loss(r_w, r_l), rtol=1e-6)
    c = (preference.bradley_terry_loss(r_w, r_l, center=0.01)
         - preference.bradley_terry_loss(r_w, r_l))
    np.testing.assert_allclose(c, 0.01 * np.array([2.5, -1.0]) ** 2, rtol=1e-5)


# ------------------------------------------------------------------ tabular optima
def _problem(seed=0, prompts=3, n=4):
    rng = np.random.default_rng(seed)
    ref = rng.dirichlet(np.ones(n), size=prompts)           # pi_ref[prompt, response]
    r = rng.normal(0, 0.3, size=(prompts, n))               # gold rewards
    pairs = np.array(list(itertools.combinations(range(n), 2)))
    return ref, r, pairs


def _gd(loss, theta, lr, steps):
    step = jax.jit(lambda t: t - lr * jax.grad(loss)(t))
    for _ in range(steps):
        theta = step(theta)
    return theta


def _tv(p, q):
    return 0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum(-1).max()


def test_tabular_dpo_on_bradley_terry_soft_labels_reaches_ref_times_exp_r_over_beta():
    ref, r, pairs = _problem()
    beta = 0.5
    i, j = pairs.T
    p_ij = 1 / (1 + np.exp(-(r[:, i] - r[:, j])))            # P(i preferred to j)
    log_ref = jnp.log(jnp.asarray(ref, jnp.float32))

    def loss(theta):
        logp = jax.nn.log_softmax(theta, -1)
        delta = preference.log_ratio_margin(logp[:, i], logp[:, j], log_ref[:, i], log_ref[:, j])
        # soft label p: the pair (i, j) with weight p, (j, i) with 1 - p = label smoothing
        return jnp.mean(preference.dpo_loss(delta, beta, "sigmoid", 1 - p_ij))

    theta = _gd(loss, log_ref, lr=20.0, steps=3000)
    want = ref * np.exp(r / beta)
    want /= want.sum(-1, keepdims=True)
    assert _tv(jax.nn.softmax(theta, -1), want) < 1e-3
    assert _tv(ref, want) > 0.1  # the answer is far from the start


def test_tabular_bradley_terry_reward_model_recovers_reward_differences():
    _, r, pairs = _problem(1)
    i, j = pairs.T
    p_ij = 1 / (1 + np.exp(-(r[:, i] - r[:, j])))

    def loss(rhat):
        fwd = preference.bradley_terry_loss(rhat[:, i], rhat[:, j])
        back = preference.bradley_terry_loss(rhat[:, j], rhat[:, i])
        return jnp.mean(p_ij * fwd + (1 - p_ij) * back)

    rhat = np.asarray(_gd(loss, jnp.zeros_like(jnp.asarray(r, jnp.float32)), 20.0, 3000))
    np.testing.assert_allclose(rhat[:, i] - rhat[:, j], r[:, i] - r[:, j], atol=1e-3)


def test_bandit_kl_regularised_policy_gradient_reaches_softmax_of_log_ref_plus_r_over_beta():
    ref, r, _ = _problem(2, prompts=2, n=5)
    beta = 0.25
    log_ref = jnp.log(jnp.asarray(ref, jnp.float32))

    def surrogate(theta):  # exact REINFORCE with the KL folded into the reward
        logp = jax.nn.log_softmax(theta, -1)
        shaped = preference.kl_shaped_reward(r, logp, log_ref, beta)
        weight = jax.lax.stop_gradient(jnp.exp(logp) * shaped)
        return -jnp.sum(weight * logp)

    theta = _gd(surrogate, log_ref, lr=5.0, steps=3000)
    want = jax.nn.softmax(log_ref + r / beta, -1)
    assert _tv(jax.nn.softmax(theta, -1), want) < 1e-3
    assert _tv(ref, want) > 0.1


def test_rloo_advantages_known_values_sum_to_zero_and_constant_reward_gives_zero_gradient():
    rewards = np.array([[1.0, 2.0, 3.0, 6.0], [0.5, -0.5, 2.0, 0.0]], np.float32)
    adv = np.asarray(preference.rloo_advantages(jnp.asarray(rewards)))
    want = [[rw - (row.sum() - rw) / 3 for rw in row] for row in rewards]
    np.testing.assert_allclose(adv, want, rtol=1e-6)
    np.testing.assert_allclose(adv.sum(-1), 0.0, atol=1e-6)

    logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5)), jnp.float32)
    actions = jnp.array([[0, 1, 1, 4], [2, 2, 3, 0]])

    def surrogate(theta, reward):
        logp = jnp.take_along_axis(jax.nn.log_softmax(theta, -1), actions, -1)
        return -jnp.mean(jax.lax.stop_gradient(preference.rloo_advantages(reward)) * logp)

    zero = jax.grad(surrogate)(logits, jnp.full((2, 4), 3.7))
    assert np.all(np.asarray(zero) == 0)
    assert np.abs(np.asarray(jax.grad(surrogate)(logits, jnp.asarray(rewards)))).max() > 1e-3
    with pytest.raises(ConfigError, match="K >= 2"):
        preference.rloo_advantages(jnp.ones((2, 1)))
