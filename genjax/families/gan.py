"""GAN family: DCGAN generator and discriminator as two parameter groups of one step.

Batch: {"image": float32[B, H, W, C] in [-1, 1], "label": int32[B]} (+ "mask" in eval).
`loss_fn` returns loss_g + loss_d with stop-gradients routing each player's objective to
its own parameters only:
  loss_d = D-loss(D(x_real), D(stop_gradient(G(z)))) [+ R1]     -> discriminator params
  loss_g = G-loss(D_{stop_gradient(params)}(G(z)))               -> generator params
so d total / d generator = d loss_g / d generator and d total / d discriminator =
d loss_d / d discriminator (tests/test_image_families.py checks both). Losses
(`model.loss`): non_saturating (Goodfellow et al. 2014) | hinge (Lim & Ye 2017; Miyato
et al. 2018). R1 = gamma/2 E ||grad_x D(x_real)||^2 (Mescheder et al. 2018). Fake images
take the real batch's labels (class-conditional models). A discriminator with batch
statistics (model.d_norm=batch, DCGAN) sees the real and the fake batch in separate passes,
so neither half is normalised with the other's statistics.
Updates: simultaneous by default; alternating / n_critic through
config.optim.groups.<generator|discriminator>.every/offset (genjax/optim.py). Samples
come from the EMA params when config.optim.ema_decay > 0 (EMA of both players).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genjax import example_keys, sharding
from genjax.errors import ConfigError
from genjax.models import dcgan
from genjax.families.image_seam import (  # noqa: F401  shared by the image families
    image_shape, make_data, num_classes, resolve_config, sample_labels, throughput_unit)

LOSSES = ("non_saturating", "hinge")
GROUPS = ("generator", "discriminator")
sample_options = ()  # capability: sample_images takes no options


# ---------------------------------------------------------------- model and batches


def make_model(config) -> dcgan.DCGAN:
    m = config.model
    if m.name != "dcgan":
        raise ConfigError(f"config.model.name={m.name!r}: the gan family has: dcgan")
    if m.loss not in LOSSES:
        raise ConfigError(f"config.model.loss={m.loss!r}: choose one of {LOSSES}")
    return dcgan.DCGAN(image_shape=image_shape(config), latent_dim=m.latent_dim,
                       g_width=m.g_width, d_width=m.d_width, channel_mult=tuple(m.channel_mult),
                       num_classes=num_classes(config), spectral_norm=m.spectral_norm,
                       g_norm=m.g_norm, mbstd_group=m.get("mbstd_group", 0),  # runs before it: 0
                       d_norm=m.get("d_norm", "none"),
                       dtype=jnp.dtype(config.compute_dtype))


def example_batch(config, batch_size: int) -> dict[str, np.ndarray]:
    return {"image": np.zeros((batch_size, *image_shape(config)), np.float32),
            "label": np.zeros((batch_size,), np.int32)}


def init_variables(model, rng, batch, config) -> dict:
    b = len(batch["label"])
    return model.init({"params": rng}, jnp.zeros((b, model.latent_dim)),
                      jnp.asarray(batch["label"]))


def _labels(batch, config):
    return batch["label"].astype(jnp.int32) if num_classes(config) else None


# --------------------------------------------------------------------------- loss
def _d_loss(kind, d_real, d_fake):
    if kind == "hinge":
        return jax.nn.relu(1.0 - d_real) + jax.nn.relu(1.0 + d_fake)
    return jax.nn.softplus(-d_real) + jax.nn.softplus(d_fake)


def _g_loss(kind, d_fake):
    return -d_fake if kind == "hinge" else jax.nn.softplus(-d_fake)


def _discriminate(model, variables, x, labels, model_state, update: bool = True):
    """(D logits float32[B], model_state after the pass: power iteration advanced if update)."""
    if model_state and update:
        d, updates = model.apply(variables, x, labels, True, method="discriminate",
                                 mutable=list(model_state))
        return d, {**model_state, **updates}
    return model.apply(variables, x, labels, method="discriminate"), model_state


def player_losses(params, model_state, batch, rng, *, model, config, route: bool = True,
                  r1_gamma: float | None = None, z=None):
    """Per-example (loss_g, loss_d incl. R1, r1, d_real, d_fake) and the new model_state.

    route=True: stop-gradients as in the module docstring (what training uses).
    route=False: no stop-gradients -- each loss's full gradient, for tests and analysis.
    r1_gamma: None = config.model.r1_gamma.
    z: the latents float32[B, latent_dim] (None: drawn from `rng`).
    """
    sg = jax.lax.stop_gradient if route else (lambda x: x)
    kind = config.model.loss
    gamma = float(config.model.r1_gamma if r1_gamma is None else r1_gamma)
    x_real = batch["image"].astype(jnp.float32)
    labels = _labels(batch, config)
    B = x_real.shape[0]
    group = int(config.model.get("mbstd_group", 0))
    if group and B % group:  # a group of [real; fake] would let D read the fakes
        raise ConfigError(f"config.model.mbstd_group={group}: a batch of {B} real images is "
                          f"not a multiple of it")
    z = jax.random.normal(rng, (B, model.latent_dim)) if z is None else z
    live = {"params": params, **model_state}
    fake = model.apply(live, z, labels, method="generate")

    # Discriminator objective: live D params, fakes held fixed. One pass over real + fake
    # (it alone advances the spectral-norm power iteration) -- or, for a discriminator with
    # batch statistics (model.d_norm=batch), one pass per half, so each half is normalised
    # by its own statistics as in DCGAN (the real pass advances the power iteration).
    fake_d = sg(fake).astype(x_real.dtype)
    if config.model.get("d_norm", "none") == "batch":
        d_real, new_state = _discriminate(model, live, x_real, labels, model_state)
        d_fake, _ = _discriminate(model, live, fake_d, labels, model_state, update=False)
    else:
        both_labels = None if labels is None else jnp.concatenate([labels, labels])
        d_both, new_state = _discriminate(model, live, jnp.concatenate([x_real, fake_d]),
                                          both_labels, model_state)
        d_real, d_fake = jnp.split(d_both, 2)
    loss_d = _d_loss(kind, d_real, d_fake)
    r1 = jnp.zeros((B,), jnp.float32)
    if gamma:
        grad_x = jax.grad(lambda x: jnp.sum(model.apply(live, x, labels, method="discriminate")))(
            x_real)
        r1 = 0.5 * gamma * jnp.sum(grad_x.astype(jnp.float32) ** 2, axis=(1, 2, 3))

    # Generator objective: D's params frozen (same power-iteration vectors as above).
    frozen = {"params": {**params, "discriminator": sg(params["discriminator"])}, **model_state}
    loss_g = _g_loss(kind, model.apply(frozen, fake, labels, method="discriminate"))
    return (loss_g, loss_d + r1, r1, d_real, d_fake), new_state


def loss_fn(params, model_state, batch, rng, *, model, config):
    (loss_g, loss_d, r1, d_real, d_fake), new_state = player_losses(
        params, model_state, batch, rng, model=model, config=config)
    loss_g, loss_d = jnp.mean(loss_g), jnp.mean(loss_d)
    metrics = {"loss_g": loss_g, "loss_d": loss_d, "r1": jnp.mean(r1),
               "d_real": jnp.mean(d_real), "d_fake": jnp.mean(d_fake)}
    return loss_g + loss_d, (metrics, new_state)


def eval_fn(params, model_state, batch, *, model, config):
    """Sums of both losses (without R1) and of D's accuracy on real / fake images. Each real
    image brings one latent, drawn from config.seed and its pixels (genjax/example_keys.py):
    evals at different steps see the same latents, and every batch others."""
    x = batch["image"]
    mask = batch.get("mask", jnp.ones((x.shape[0],), jnp.float32))
    z = jax.vmap(lambda k: jax.random.normal(k, (model.latent_dim,)))(
        example_keys.example_keys(int(config.seed), x))
    (loss_g, loss_d, r1, d_real, d_fake), _ = player_losses(
        params, model_state, batch, None, model=model, config=config, r1_gamma=0.0, z=z)
    s = lambda v: jnp.sum(v * mask)  # noqa: E731
    return {"loss_g": s(loss_g), "loss_d": s(loss_d), "d_real_acc": s(d_real > 0),
            "d_fake_acc": s(d_fake < 0), "count": jnp.sum(mask)}


def param_labels(params, config):
    """"generator" / "discriminator" per leaf, by top-level key."""
    if set(params) != set(GROUPS):
        raise ValueError(f"gan params have top-level keys {sorted(params)}, expected {GROUPS}")
    return {k: jax.tree_util.tree_map(lambda _, k=k: k, v) for k, v in params.items()}


# ------------------------------------------------------------------------- sampling
def _generate(model, params, z, labels):
    return model.apply({"params": params}, z, labels, method="generate")


def sample_images(model, params, config, rng, num_samples: int, label=None, *,
                  model_state=None) -> jax.Array:
    """G(z), z ~ N(0, I): float32[N, H, W, C] in [-1, 1]. `params` are both players' (the
    generator's are used)."""
    z = jax.random.normal(rng, (int(num_samples), model.latent_dim))
    labels = sample_labels(config, int(num_samples), label)
    z, labels = (sharding.split_like_params(a, params) for a in (z, labels))
    return jax.jit(_generate, static_argnums=0)(model, params, z, labels)
