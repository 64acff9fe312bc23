"""VAE family: a conv VAE trained on the (beta-weighted, warmed-up) negative ELBO.

Batch: {"image": float32[B, H, W, C] in [-1, 1], "label": int32[B]} (+ "mask": float32[B]
in eval batches). Likelihood (`model.likelihood`): bernoulli on pixels rescaled to [0, 1]
or a discretised logistic on the 8-bit bins.

Loss = (-log p(x|z) + w * KL(q(z|x) || N(0, I))) / (H*W*C), one reparameterised sample,
w = beta * min(1, training calls / (kl_warmup_steps * accum_steps)) (linear KL warm-up).
The warm-up needs the step inside `loss_fn`, whose signature has none: the count of
training calls is kept in `model_state` ({"kl_warmup": {"count": int32}}), incremented
here; the step carries and checkpoints it like any other model state. (A skipped
non-finite update does not count.)

Sampling prior (`sample.prior`): "fitted" (default) draws z from a Gaussian mixture fitted to
the posterior means of the last ~1 / (1 - model.prior_decay) training steps, one component
per class (genjax/latent_prior.py; sums kept in model_state["latent_prior"]); "standard"
draws from N(0, I), the training prior. Runs saved before the key existed sample from
N(0, I).

Eval (sums + "count"; the loop divides), per image, in nats unless named *_bpd:
  elbo, recon (E_q log p(x|z)), kl       single-sample-per-draw estimates over k draws
  nll_iwae   -log (1/k sum_i p(x, z_i) / q(z_i | x)), k = model.iwae_samples (Burda et al.
             2016): an upper bound on -log p(x) that tightens with k; <= -elbo on average
  elbo_bpd, nll_bpd   the same in bits/dim (meaningful for the logistic likelihood)
Eval draws come from a fixed key (`config.seed`).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from genjax import example_keys, latent_prior, sharding
from genjax.errors import ConfigError, UserError
from genjax.models import vae as vae_lib
from genjax.families.image_seam import (  # noqa: F401  shared by the image families
    image_shape, make_data, num_classes, resolve_config, sample_labels, throughput_unit)


likelihood_metrics = ("elbo", "nll_iwae", "elbo_bpd", "nll_bpd")  # capabilities
sample_options = ("temperature", "prior")  # capability: genjax.sample --temperature, --prior
PRIORS = ("fitted", "standard")


# ---------------------------------------------------------------- model and batches


def make_model(config) -> vae_lib.VAE:
    m = config.model
    if m.name != "conv_vae":
        raise ConfigError(f"config.model.name={m.name!r}: the vae family has: conv_vae")
    return vae_lib.VAE(image_shape=image_shape(config), latent_dim=m.latent_dim, width=m.width,
                       channel_mult=tuple(m.channel_mult), likelihood=m.likelihood,
                       num_classes=num_classes(config), dtype=jnp.dtype(config.compute_dtype))


def example_batch(config, batch_size: int) -> dict[str, np.ndarray]:
    return {"image": np.zeros((batch_size, *image_shape(config)), np.float32),
            "label": np.zeros((batch_size,), np.int32)}


def init_variables(model, rng, batch, config) -> dict:
    b = len(batch["label"])
    variables = model.init({"params": rng}, jnp.asarray(batch["image"]),
                           jnp.asarray(batch["label"]), jnp.zeros((b, model.latent_dim)))
    variables = {**variables, "kl_warmup": {"count": jnp.zeros((), jnp.int32)}}
    if "prior_decay" in config.model:  # runs saved before the fitted prior have none
        variables["latent_prior"] = latent_prior.init(_prior_groups(config), model.latent_dim)
    return variables


def _prior_groups(config) -> int:
    """Components of the fitted prior: the data's classes (resolve_config), else 1."""
    return max(1, int(config.model.get("num_classes", 0) or 0))


def _labels(batch, config):
    return batch["label"].astype(jnp.int32) if num_classes(config) else None


def kl_weight(count, config) -> jax.Array:
    """beta, ramped linearly from 0 over the first kl_warmup_steps optimizer steps."""
    beta = float(config.model.beta)
    steps = int(config.model.kl_warmup_steps) * max(1, int(config.optim.accum_steps))
    if steps <= 0:
        return jnp.asarray(beta, jnp.float32)
    return beta * jnp.minimum(1.0, count.astype(jnp.float32) / steps)


def kl_divergence(mean, logvar) -> jax.Array:
    """KL(N(mean, e^logvar) || N(0, I)) per example."""
    return 0.5 * jnp.sum(mean ** 2 + jnp.exp(logvar) - 1.0 - logvar, axis=-1)


# --------------------------------------------------------------------------- loss
def loss_fn(params, model_state, batch, rng, *, model, config):
    x = batch["image"].astype(jnp.float32)
    eps = jax.random.normal(rng, (x.shape[0], model.latent_dim))
    out, mean, logvar = model.apply({"params": params}, x, _labels(batch, config), eps)
    recon_B = vae_lib.log_likelihood(model.likelihood, x, out)
    kl_B = kl_divergence(mean, logvar)
    count = model_state["kl_warmup"]["count"]
    w = kl_weight(count, config)
    dims = math.prod(x.shape[1:])
    loss = jnp.mean(-recon_B + w * kl_B) / dims
    elbo = jnp.mean(recon_B - kl_B)
    metrics = {"elbo": elbo, "recon": jnp.mean(recon_B), "kl": jnp.mean(kl_B), "kl_weight": w,
               "elbo_bpd": -elbo / (dims * math.log(2.0))}
    new_state = {**model_state, "kl_warmup": {"count": count + 1}}
    if "latent_prior" in model_state:
        groups = _prior_group_ids(batch, model_state["latent_prior"])
        new_state["latent_prior"] = latent_prior.update(
            model_state["latent_prior"], mean, groups, float(config.model.prior_decay))
    return loss, (metrics, new_state)


def _prior_group_ids(batch, stats) -> jax.Array:
    """Each example's prior component: its class (one group: all 0)."""
    if stats["count"].shape[0] == 1 or "label" not in batch:
        return jnp.zeros(batch["image"].shape[:1], jnp.int32)
    return batch["label"].astype(jnp.int32)


def eval_fn(params, model_state, batch, *, model, config):
    x = batch["image"].astype(jnp.float32)
    mask = batch.get("mask", jnp.ones((x.shape[0],), jnp.float32))
    labels = _labels(batch, config)
    k = max(1, int(config.model.iwae_samples))
    variables = {"params": params}
    mean, logvar = model.apply(variables, x, method="encode")

    def one(keys_B):  # one posterior draw per image: log p(x|z), log w = log p(x,z) - log q(z|x)
        noise = jax.vmap(lambda key: jax.random.normal(key, mean.shape[1:]))(keys_B)
        z = mean + jnp.exp(0.5 * logvar) * noise
        out = model.apply(variables, z, labels, method="decode")
        recon = vae_lib.log_likelihood(model.likelihood, x, out)
        log_w = (recon + vae_lib.gaussian_log_prob(z, 0.0, jnp.zeros_like(z))
                 - vae_lib.gaussian_log_prob(z, mean, logvar))
        return recon, log_w

    # each image's k draws from its own key (genjax/example_keys.py): the same in any batch
    keys_Bxk = jax.vmap(lambda key: jax.random.split(key, k))(
        example_keys.example_keys(int(config.seed), x))
    recon_kxB, log_w_kxB = jax.lax.map(one, jnp.swapaxes(keys_Bxk, 0, 1))
    recon_B = jnp.mean(recon_kxB, axis=0)
    kl_B = kl_divergence(mean, logvar)
    elbo_B = recon_B - kl_B
    nll_B = -(jax.nn.logsumexp(log_w_kxB, axis=0) - math.log(k))
    to_bpd = 1.0 / (math.prod(x.shape[1:]) * math.log(2.0))
    s = lambda v: jnp.sum(v * mask)  # noqa: E731
    return {"elbo": s(elbo_B), "recon": s(recon_B), "kl": s(kl_B), "nll_iwae": s(nll_B),
            "elbo_bpd": s(-elbo_B * to_bpd), "nll_bpd": s(nll_B * to_bpd), "count": jnp.sum(mask)}


def param_labels(params, config):
    return None


# ------------------------------------------------------------------ images out
def _decode_mean(model, params, z, labels):
    out = model.apply({"params": params}, z, labels, method="decode")
    return vae_lib.mean_image(model.likelihood, out)


def sample_images(model, params, config, rng, num_samples: int, label=None,
                  temperature=None, prior=None, *, model_state=None) -> jax.Array:
    """Prior samples decoded to the mean image: float32[N, H, W, C] in [-1, 1]. (The mean,
    not a draw from p(x|z), whose pixel noise hides the picture.)
    prior (default config.sample.prior): "fitted" = the mixture fitted to the training codes
    (model_state["latent_prior"]; `label` picks the class's component), "standard" = N(0, I).
    z = mean + t * (the component's or N(0, I)'s noise), t = `temperature` (default
    config.sample.temperature, else 1): t < 1 keeps z nearer the modes, trading diversity
    for fidelity as in Glow/NVAE's reduced-temperature sampling."""
    t = float(config.sample.get("temperature", 1.0) if temperature is None else temperature)
    if t < 0:
        raise ValueError(f"temperature={t}: must be >= 0")
    kind = str(config.sample.get("prior", "standard") if prior is None else prior)
    if kind not in PRIORS:
        raise UserError(f"prior={kind!r}: choose one of {PRIORS}")
    n = int(num_samples)
    labels = sample_labels(config, n, label)
    if kind == "standard":
        z = t * jax.random.normal(rng, (n, model.latent_dim))
    else:
        stats = (model_state or {}).get("latent_prior")
        if stats is None:
            raise UserError("this VAE has no fitted prior (a run saved before it existed, or "
                            "no model_state given): sample with prior=standard "
                            "(genjax.sample --prior=standard)")
        groups = None  # the component: the decoder's class, else `label`, else drawn
        if stats["count"].shape[0] > 1 and (labels is not None or label is not None):
            groups = labels if labels is not None else jnp.broadcast_to(
                jnp.asarray(label, jnp.int32), (n,))
        z = jax.jit(latent_prior.draw, static_argnums=2)(stats, rng, n, groups, t)
    z, labels = (sharding.split_like_params(a, params) for a in (z, labels))
    return jax.jit(_decode_mean, static_argnums=0)(model, params, z, labels)


def reconstruct(model, params, config, images, labels=None) -> jax.Array:
    """Decoder mean at the posterior mean: float32[N, H, W, C] in [-1, 1]."""
    mean, _ = model.apply({"params": params}, jnp.asarray(images, jnp.float32), method="encode")
    if num_classes(config) and labels is None:
        raise ValueError("a class-conditional VAE needs the images' labels to reconstruct them")
    return _decode_mean(model, params, mean, None if labels is None else jnp.asarray(labels))


def interpolate(model, params, config, images_a, images_b, num_steps: int = 8,
                labels=None) -> jax.Array:
    """Decoded points on the line between the posterior means of a and b:
    float32[N, num_steps, H, W, C] in [-1, 1] (labels: the decoder's class, if conditional)."""
    enc = lambda x: model.apply({"params": params}, jnp.asarray(x, jnp.float32),  # noqa: E731
                                method="encode")[0]
    za, zb = enc(images_a), enc(images_b)
    n = za.shape[0]
    alpha = jnp.linspace(0.0, 1.0, num_steps)[None, :, None]
    z = ((1.0 - alpha) * za[:, None] + alpha * zb[:, None]).reshape(n * num_steps, -1)
    if num_classes(config):
        if labels is None:
            raise ValueError("a class-conditional VAE needs labels to interpolate")
        labels = jnp.repeat(jnp.broadcast_to(jnp.asarray(labels, jnp.int32), (n,)), num_steps)
    images = _decode_mean(model, params, z, labels)
    return images.reshape(n, num_steps, *images.shape[1:])
