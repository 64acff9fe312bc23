"""The VAE's fitted sampling prior (genjax/latent_prior.py, genjax/families/vae.py): decayed
per-class sums of the training codes, a Gaussian per class, drawn from by class weight.

Known answers: the sums and the Gaussians they give equal a float64 numpy fit of the same
codes weighted by decay^age; draws from a mixture built from known weights, means and
covariances reproduce them (within a few standard errors); one training step at decay 0
keeps exactly that batch's posterior means, per class, as an independent encoder call
gives them; temperature 0 decodes the class mean.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import latent_prior
from genjax.errors import UserError
from tests.test_image_families import fake_batch, init, jitted, key, tiny


def test_sums_and_gaussians_equal_a_weighted_numpy_fit():
    rs = np.random.RandomState(0)
    G, D, decay = 3, 4, 0.9
    batches = [(rs.randn(16, D) * [1, 2, 3, 4] + rs.randn(D), rs.randint(0, G, 16))
               for _ in range(5)]
    stats = latent_prior.init(G, D)
    for z, g in batches:
        stats = latent_prior.update(stats, jnp.asarray(z, jnp.float32), jnp.asarray(g), decay)
    weights, means, covs = (np.asarray(a) for a in latent_prior.gaussians(stats))

    # independently: every code with weight decay^(age in steps), per class
    z_all = np.concatenate([z for z, _ in batches])
    g_all = np.concatenate([g for _, g in batches])
    w_all = np.concatenate([np.full(16, decay ** (len(batches) - 1 - t))
                            for t in range(len(batches))])
    mass = np.array([w_all[g_all == k].sum() for k in range(G)])
    np.testing.assert_allclose(weights, mass / mass.sum(), rtol=1e-5)
    for k in range(G):
        zk, wk = z_all[g_all == k], w_all[g_all == k]
        mu = (wk[:, None] * zk).sum(0) / wk.sum()
        cov = ((wk[:, None] * (zk - mu)).T @ (zk - mu)) / wk.sum()  # weighted, biased
        np.testing.assert_allclose(means[k], mu, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(covs[k], cov + latent_prior.JITTER * np.eye(D),
                                   rtol=1e-3, atol=1e-4)


def _stats_of(weights, means, covs, total=1e6):
    """Sums that a long run of codes from this mixture would leave (decay 1)."""
    count = np.asarray(weights) * total
    return {"count": jnp.asarray(count, jnp.float32),
            "sum": jnp.asarray(count[:, None] * means, jnp.float32),
            "outer": jnp.asarray(count[:, None, None] * (covs + np.einsum("gd,ge->gde",
                                                                           means, means)),
                                 jnp.float32)}


def test_draws_reproduce_the_mixture_and_a_given_class_draws_from_its_component():
    weights = np.array([0.2, 0.0, 0.8])  # class 1 never seen: never drawn
    means = np.array([[4.0, 0.0], [9.0, 9.0], [-4.0, 1.0]])
    covs = np.array([[[1.0, 0.5], [0.5, 2.0]], np.eye(2), [[0.25, 0.0], [0.0, 0.5]]])
    stats = _stats_of(weights, means, covs)
    n = 40_000
    z = np.asarray(latent_prior.draw(stats, jax.random.key(0), n))
    first = z[:, 0] > 0  # the components do not overlap along the first axis
    se = np.sqrt(0.2 * 0.8 / n)
    assert abs(first.mean() - 0.2) < 4 * se
    for k, rows in ((0, z[first]), (2, z[~first])):
        np.testing.assert_allclose(rows.mean(0), means[k], atol=0.05)
        np.testing.assert_allclose(np.cov(rows.T), covs[k], atol=0.08)
    z1 = np.asarray(latent_prior.draw(stats, jax.random.key(1), 5000,
                                      jnp.zeros(5000, jnp.int32), temperature=0.5))
    np.testing.assert_allclose(z1.mean(0), means[0], atol=0.05)
    np.testing.assert_allclose(np.cov(z1.T), 0.25 * covs[0], atol=0.04)  # t^2 cov


def test_a_fresh_prior_is_the_standard_normal():
    z = np.asarray(latent_prior.draw(latent_prior.init(10, 3), jax.random.key(2), 20_000))
    np.testing.assert_allclose(z.mean(0), 0.0, atol=0.04)
    np.testing.assert_allclose(np.cov(z.T), np.eye(3), atol=0.05)


def test_a_training_step_at_decay_0_keeps_that_batch_codes_per_class():
    c = tiny("vae", prior_decay=0.0)
    b = fake_batch(c, 8)
    mod, model, params, state = init("vae", c, b)
    _, (_, new_state) = jitted(mod.loss_fn, model=model, config=c)(params, state, b, key(1))
    stats = new_state["latent_prior"]
    mean, _ = model.apply({"params": params}, jnp.asarray(b["image"]), method="encode")
    mean = np.asarray(mean)
    for k in range(10):
        rows = mean[b["label"] == k]
        assert float(stats["count"][k]) == len(rows)
        np.testing.assert_allclose(stats["sum"][k], rows.sum(0), rtol=1e-5, atol=1e-6)


def test_sampling_at_temperature_0_decodes_the_class_mean_and_bad_priors_are_one_line():
    c = tiny("vae")
    b = fake_batch(c, 4)
    mod, model, params, state = init("vae", c, b)
    D = model.latent_dim
    means = np.arange(10 * D, dtype=np.float64).reshape(10, D) / (10 * D)
    state = {**state, "latent_prior": _stats_of(np.full(10, 0.1), means,
                                                np.repeat(np.eye(D)[None], 10, 0))}
    x = mod.sample_images(model, params, c, key(0), 2, label=3, temperature=0.0,
                          model_state=state)
    want = mod._decode_mean(model, params, jnp.asarray(means[[3, 3]], jnp.float32), None)
    np.testing.assert_allclose(x, want, atol=1e-5)
    std = mod.sample_images(model, params, c, key(0), 2, label=3, temperature=0.0,
                            prior="standard", model_state=state)
    assert not np.allclose(std, want, atol=1e-3)  # N(0, I)'s mean 0 is another code
    with pytest.raises(UserError, match="prior='flat'"):
        mod.sample_images(model, params, c, key(0), 2, prior="flat", model_state=state)
    with pytest.raises(UserError, match="no fitted prior"):
        mod.sample_images(model, params, c, key(0), 2)  # no model_state given
