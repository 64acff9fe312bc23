"""Evals that draw noise draw it per example (genjax/example_keys.py): an image's score is the
same whatever batch, position or batch size it is scored in, so a split's average rests on
one draw per image, not on one draw per batch position (the old fixed key gave every batch
the same timesteps: 32 timesteps for a whole test set scored at batch 32).

Spec: the eval sums of [a, b] equal those of [b, a] and of [a] plus [b], for the diffusion
bound, the VAE's ELBO/IWAE and Diffusion-DPO's pair loss.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from genjax import example_keys
from genjax.families import diffusion_dpo
from tests.families import tiny_config
from tests.test_dpo import moved
from tests.test_image_families import fake_batch, init, jitted, tiny


def test_keys_follow_the_pixels_and_the_seed_not_the_position():
    x = np.random.default_rng(0).uniform(-1, 1, (3, 4, 4, 1)).astype(np.float32)
    k = np.asarray(example_keys.example_keys(0, x))
    assert k.shape == (3, 2) and k.dtype == np.uint32
    assert len({tuple(r) for r in k}) == 3                       # different images differ
    np.testing.assert_array_equal(example_keys.example_keys(0, x[::-1]), k[::-1])
    np.testing.assert_array_equal(example_keys.example_keys(0, x[1:2]), k[1:2])
    assert not np.any(np.all(np.asarray(example_keys.example_keys(1, x)) == k, axis=1))
    y = x.copy()
    y[0, 2, 3, 0] = np.nextafter(y[0, 2, 3, 0], 2.0)              # one ulp of one pixel
    assert tuple(np.asarray(example_keys.example_keys(0, y))[0]) != tuple(k[0])


def _sums(fn, batch, rows):
    part = jax.tree_util.tree_map(lambda a: a[np.asarray(rows)], batch)
    return {k: float(v) for k, v in fn(part).items()}


def _assert_order_free(fn, batch, keys, rtol=2e-5):
    """Sums over [0, 1] == over [1, 0] == over [0] + over [1] (up to float rounding)."""
    ab, ba = _sums(fn, batch, [0, 1]), _sums(fn, batch, [1, 0])
    a, b = _sums(fn, batch, [0]), _sums(fn, batch, [1])
    for k in keys:
        np.testing.assert_allclose(ba[k], ab[k], rtol=rtol)
        np.testing.assert_allclose(a[k] + b[k], ab[k], rtol=rtol)
    assert a[keys[0]] != b[keys[0]]  # two different images


@pytest.mark.parametrize("family, keys", [("diffusion", ["vlb_bpd", "loss", "decoder_bpd"]),
                                          ("vae", ["nll_iwae", "elbo"])])
def test_an_images_eval_score_does_not_depend_on_its_batch(family, keys):
    c = tiny(family, **({"eval_timesteps": 3} if family == "diffusion" else {"iwae_samples": 4}))
    b = fake_batch(c, 2)
    mod, model, params, state = init(family, c, b)
    params = jax.tree_util.tree_map(  # a network whose output depends on its input
        lambda p: p + 0.05 * jax.random.normal(jax.random.key(9, impl="rbg"), p.shape), params)
    fn = jitted(mod.eval_fn, model=model, config=c)
    _assert_order_free(lambda part: fn(params, state, part), b, keys)


def test_a_pairs_diffusion_dpo_eval_does_not_depend_on_its_batch():
    config = tiny_config("diffusion_dpo")
    model = diffusion_dpo.make_model(config)
    batch = {"image": jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 2, 32, 32, 1)),
                                  jnp.float32), "label": jnp.array([0, 3], jnp.int32)}
    v = nn.meta.unbox(diffusion_dpo.init_variables(model, jax.random.key(0), batch, config))
    policy = moved(v["params"], scale=0.02)
    fn = jax.jit(lambda part: diffusion_dpo.eval_fn(
        policy, {"reference": v["reference"]}, part, model=model, config=config))
    # inner = -(beta / 2) x a difference of errors: batch-size rounding of the U-Net's
    # convolutions (~1e-7) shows at 1e-4 there; a pair drawing another t moves it by O(1)
    _assert_order_free(fn, batch, ["inner", "loss", "mse_winner"], rtol=2e-3)


def test_each_gan_eval_batch_brings_its_own_latents():
    """Each real image brings its fake's latent: two batches of other images (same labels)
    score other fakes (the fixed key scored the same B fakes in every batch: loss_g equal).
    Its generator normalises by batch statistics, so a pair's losses are not its own."""
    c = tiny("gan")
    one, two = fake_batch(c, 4, seed=0), fake_batch(c, 4, seed=1)
    mod, model, params, state = init("gan", c, one)
    fn = jitted(mod.eval_fn, model=model, config=c)
    assert float(fn(params, state, one)["loss_g"]) != float(fn(params, state, two)["loss_g"])
