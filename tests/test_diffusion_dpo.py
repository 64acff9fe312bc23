"""Diffusion-DPO (genjax/families/diffusion_dpo.py, genjax/preference.py) and its pairs.

Known answers: ln 2 when the model is the reference; the gradient there is
(beta / 4) grad(mse_w - mse_l); swapping winner and loser negates the inner term; the
pair shares t and noise, so identical images give identical errors (ln 2 for any model);
a moved policy's loss equals the paper's formula recomputed in float64 numpy.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from genjax import preference
from genjax.data import image_pairs
from genjax.families import diffusion_dpo
from genjax.errors import ConfigError
from tests.families import tiny_config, one_error_line
from tests.test_dpo import moved


def test_pure_loss_ln2_at_the_reference_gradient_and_swap():
    w = jnp.array([0.3, -1.2, 2.0])
    def mse(p, x):
        return jnp.mean((p - x) ** 2)
    xw, xl, beta = jnp.array([1.0, 0.0, 1.0]), jnp.array([0.0, 2.0, -1.0]), 7.0
    ref_w, ref_l = mse(w, xw), mse(w, xl)
    def loss(p):
        return preference.diffusion_dpo_loss(mse(p, xw), mse(p, xl), ref_w, ref_l, beta)
    assert float(loss(w)) == np.float32(math.log(2))
    want = (beta / 4) * jax.grad(lambda p: mse(p, xw) - mse(p, xl))(w)
    np.testing.assert_allclose(jax.grad(loss)(w), want, rtol=1e-6)
    p = w + 0.1
    a = preference.diffusion_dpo_inner(mse(p, xw), mse(p, xl), ref_w, ref_l, beta)
    b = preference.diffusion_dpo_inner(mse(p, xl), mse(p, xw), ref_l, ref_w, beta)
    assert float(a) == -float(b) and float(a) != 0


def setup():
    config = tiny_config("diffusion_dpo")
    model = diffusion_dpo.make_model(config)
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.uniform(-1, 1, (3, 2, 32, 32, 1)), jnp.float32),
             "label": jnp.array([0, 3, 7], jnp.int32)}
    v = nn.meta.unbox(diffusion_dpo.init_variables(model, jax.random.key(0), batch, config))
    return config, model, batch, v


def loss_of(params, v, batch, config, model):
    loss, (m, _) = diffusion_dpo.loss_fn(params, {"reference": v["reference"]}, batch,
                                         jax.random.key(1), model=model, config=config)
    return float(loss), m


def test_family_step_zero_is_ln2_and_a_pair_shares_timestep_and_noise():
    config, model, batch, v = setup()
    assert loss_of(v["params"], v, batch, config, model)[0] == np.float32(math.log(2))
    policy = moved(v["params"], scale=0.02)
    same = {**batch, "image": jnp.repeat(batch["image"][:, :1], 2, axis=1)}
    loss, m = loss_of(policy, v, same, config, model)
    assert loss == np.float32(math.log(2)) and float(m["inner"]) == 0.0
    loss, m = loss_of(policy, v, batch, config, model)
    swapped = {**batch, "image": batch["image"][:, ::-1]}
    _, m2 = loss_of(policy, v, swapped, config, model)
    assert float(m["inner"]) != 0
    np.testing.assert_allclose(float(m2["inner"]), -float(m["inner"]), rtol=1e-5)


def cosine_alphas_cumprod(T, s=0.008):
    """Nichol & Dhariwal 2021, eq. 17, float64; betas clipped at 0.999 as their code does."""
    f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * math.pi / 2) ** 2
    return np.cumprod(1 - np.minimum(1 - f[1:] / f[:-1], 0.999))


def test_a_moved_policys_loss_is_the_papers_formula_recomputed_in_numpy():
    """Policy != reference: at the step's (t, eps) (one per pair, from the noise key, the
    first half of the step key), x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps in float64, each
    model's eps-prediction error averaged over pixels, and
    -log sigmoid(-(beta / 2) [(mse_w - mse_l) - (ref_w - ref_l)]) averaged over pairs."""
    config, model, batch, v = setup()
    assert (config.model.schedule, config.model.parameterization) == ("cosine", "eps")
    policy = moved(v["params"], scale=0.02)
    loss, m = loss_of(policy, v, batch, config, model)
    t, eps = diffusion_dpo.shared_noise(batch, jax.random.split(jax.random.key(1))[0], config)
    t, eps = np.asarray(t), np.asarray(eps, np.float64)
    np.testing.assert_array_equal(eps[:, 0], eps[:, 1])  # one noise per pair
    ab = cosine_alphas_cumprod(int(config.model.timesteps))[t][:, None, None, None]
    x0 = np.asarray(batch["image"], np.float64)

    def mse(params, i):  # image i (0 winner, 1 loser) of every pair, float64 [B]
        x_t = np.sqrt(ab) * x0[:, i] + np.sqrt(1 - ab) * eps[:, i]
        pred = model.apply({"params": params}, jnp.asarray(x_t, jnp.float32),
                           jnp.asarray(t), batch["label"], train=False)
        return ((np.asarray(pred, np.float64) - eps[:, i]) ** 2).mean(axis=(1, 2, 3))
    (mw, ml), (rw, rl) = [(mse(p, 0), mse(p, 1)) for p in (policy, v["reference"])]
    inner = -float(config.diffusion_dpo.beta) / 2 * ((mw - ml) - (rw - rl))
    want = np.mean(np.log1p(np.exp(-inner)))
    np.testing.assert_allclose(float(m["mse_winner"]), mw.mean(), rtol=1e-4)
    np.testing.assert_allclose(float(m["inner"]), inner.mean(), rtol=1e-3, atol=1e-5)
    assert abs(want - math.log(2)) > 1e-3
    np.testing.assert_allclose(loss, want, rtol=1e-4)


def test_scrambled_loser_moves_every_patch_and_keeps_every_pixel():
    perm = image_pairs.patch_permutation(32, 4, seed=0)
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 1)).astype(np.float32)
    y = image_pairs.scramble(x, perm, 4)
    assert not np.any(np.all((x == y).reshape(2, 8, 4, 8, 4).transpose(0, 1, 3, 2, 4)
                             .reshape(2, 64, 16), axis=-1))
    np.testing.assert_array_equal(image_pairs.scramble(y, np.argsort(perm), 4), x)
    for size, patch in ((30, 4), (32, 32), (32, 0), (32, 5)):  # 32: one patch never moves
        with pytest.raises(ConfigError, match=f"data.pair_patch={patch}: must divide"):
            image_pairs.ImagePairs(type("D", (), {"image_shape": (size, size, 1),
                                                 "class_names": [], "splits": []})(),
                                   patch=patch, seed=0)


@pytest.mark.parametrize("overrides, match", [
    ({"diffusion_dpo.beta": 0.0}, "diffusion_dpo.beta=0.0: must be > 0"),
    ({"diffusion_dpo.beta": math.inf}, "diffusion_dpo.beta=inf: must be > 0 and finite"),
    ({"model.label_dropout": 0.5}, "model.label_dropout=0.5: Diffusion-DPO keeps both")])
def test_settings_the_loss_would_break_or_ignore_are_one_error_line(overrides, match):
    with one_error_line(ConfigError, match=match):
        diffusion_dpo.check_settings(tiny_config("diffusion_dpo", **overrides))


def test_why_those_settings_are_refused_an_infinite_beta_and_an_ignored_label_dropout():
    # beta = inf: the step-0 loss is NaN, not ln 2
    assert math.isnan(float(preference.diffusion_dpo_loss(0.1, 0.1, 0.1, 0.1, math.inf)))
    config, model, batch, v = setup()  # a label dropout would change nothing: ignored
    dropped = tiny_config("diffusion_dpo", **{"model.label_dropout": 0.5})
    assert loss_of(v["params"], v, batch, dropped, model) == loss_of(
        v["params"], v, batch, config, model)
    diffusion_dpo.check_settings(config)
