"""GAN player losses against hand-computed answers (issue #18).

A linear generator x = z W and a linear discriminator d = x . v have gradients one can
write down, so each player's gradient through `gan.loss_fn` (the routed total that the
step differentiates) is checked against numpy, not against the code under test:
  non_saturating  dL/dW = mean_i -s(-d_f,i) z_i v^T
                  dL/dv = mean_i [-s(-d_r,i) x_r,i + s(d_f,i) x_f,i]      (s = sigmoid)
  hinge           dL/dW = mean_i -z_i v^T
                  dL/dv = mean_i [-[d_r,i < 1] x_r,i + [d_f,i > -1] x_f,i]
And DCGAN's batch-normalised discriminator (model.d_norm=batch) must judge the real
half by the real batch's statistics alone.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from configs import gan_fmnist
from genjax.families import gan
from genjax.models import dcgan

B, Z, P = 6, 3, 4  # batch, latent size, pixels (2x2x1)


class LinearGAN(nn.Module):
    """x = z W (2x2x1 images); d = x . v. Top-level groups as in dcgan.DCGAN."""
    latent_dim: int = Z

    def setup(self):
        self.generator = nn.Dense(P, use_bias=False)
        self.discriminator = nn.Dense(1, use_bias=False)

    def generate(self, z_BxZ, labels_B=None):
        return self.generator(z_BxZ).reshape(-1, 2, 2, 1)

    def discriminate(self, x_BxHxWxC, labels_B=None, update_stats: bool = False):
        return self.discriminator(x_BxHxWxC.reshape(x_BxHxWxC.shape[0], -1))[:, 0]


def _config(loss, d_norm="none"):
    c = gan_fmnist.get_config("tiny")
    c.data.channels, c.model.num_classes = 1, 10
    c.model.loss, c.model.d_norm = loss, d_norm
    return c


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("d_norm", ["none", "batch"])   # one pass over [real; fake] | two
@pytest.mark.parametrize("loss", ["non_saturating", "hinge"])
def test_each_player_gets_its_hand_computed_gradient(loss, d_norm):
    c = _config(loss, d_norm)
    model = LinearGAN()
    rs = np.random.RandomState(0)
    W = rs.randn(Z, P).astype(np.float32)
    v = rs.randn(P, 1).astype(np.float32)
    params = {"generator": {"kernel": jnp.asarray(W)},
              "discriminator": {"kernel": jnp.asarray(v)}}
    x_r = rs.randn(B, P).astype(np.float32)
    batch = {"image": jnp.asarray(x_r.reshape(B, 2, 2, 1)), "label": jnp.zeros((B,), jnp.int32)}
    rng = jax.random.key(7, impl="rbg")
    z = np.asarray(jax.random.normal(jax.random.clone(rng), (B, Z)), np.float64)

    grads = jax.jit(jax.grad(lambda p, k: gan.loss_fn(p, {}, batch, k, model=model,
                                                      config=c)[0]))(params, rng)

    x_f = z @ W
    d_r, d_f = x_r @ v[:, 0], x_f @ v[:, 0]
    if loss == "non_saturating":
        dW = (-_sigmoid(-d_f)[:, None] * z).T @ np.ones((B, 1)) @ v.T / B
        dv = (-_sigmoid(-d_r)[:, None] * x_r + _sigmoid(d_f)[:, None] * x_f).mean(0)
    else:
        dW = -z.mean(0)[:, None] @ v.T
        on_r, on_f = (d_r < 1).astype(float), (d_f > -1).astype(float)  # hinge active
        dv = (-on_r[:, None] * x_r + on_f[:, None] * x_f).mean(0)
    np.testing.assert_allclose(grads["generator"]["kernel"], dW, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads["discriminator"]["kernel"][:, 0], dv, rtol=1e-4,
                               atol=1e-6)


def test_batch_norm_discriminator_judges_reals_by_the_real_batch_alone():
    """d_norm=batch: d_real is D on the real batch by itself, whatever the fakes are (a
    pass over [real; fake] would normalise the reals with the fakes' statistics)."""
    c = _config("non_saturating", "batch")
    c.model.spectral_norm = False
    model = gan.make_model(c)
    assert model.d_norm == "batch"
    rs = np.random.RandomState(0)
    batch = {"image": jnp.asarray(rs.uniform(-1, 1, (8, 32, 32, 1)).astype(np.float32)),
             "label": jnp.zeros((8,), jnp.int32)}
    variables = jax.jit(lambda k: gan.init_variables(model, k, batch, c))(
        jax.random.key(0, impl="rbg"))
    params = dict(variables)["params"]
    losses = jax.jit(lambda p, k: gan.player_losses(p, {}, batch, k, model=model,
                                                    config=c)[0])
    _, _, _, d_real, d_fake = losses(params, jax.random.key(1, impl="rbg"))
    alone = model.apply({"params": params}, batch["image"], method="discriminate")
    np.testing.assert_allclose(d_real, alone, rtol=1e-5, atol=1e-6)
    # other fakes (another z): the reals' logits do not move, the fakes' do
    _, _, _, d_real2, d_fake2 = losses(params, jax.random.key(2, impl="rbg"))
    np.testing.assert_allclose(d_real2, d_real, rtol=1e-5, atol=1e-6)
    assert not np.allclose(d_fake2, d_fake)
    with pytest.raises(ValueError, match="discriminator norm"):
        dcgan.Discriminator(norm="group").init(jax.random.PRNGKey(0), batch["image"])
