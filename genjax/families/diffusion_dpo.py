"""Diffusion-DPO (Wallace et al. 2023) of the class-conditional U-Net against a frozen
reference (model_state["reference"]; with LoRA the frozen base, as in genjax/families/dpo.py).

Batch: {"image": float32[B, 2, H, W, C] in [-1, 1] (0 winner, 1 loser), "label": int32[B]}
from config.data.pairs: "" = synthetic pairs of the image dataset (genjax/data/image_pairs.py:
a real image vs its patches permuted), or a folder of pairs sampled from a diffusion run and
ranked by a reward classifier (genjax.data.sample_image_preferences;
genjax/data/sampled_image_pairs.py, eval on its held-out prompts). Winner and loser share
the timestep t and the noise eps (one draw per pair); each image's denoising error is the
mean over pixels of
(prediction - target)^2, for the model and the reference, and the loss per pair is

    -log sigma(-(beta / 2) [(mse_w - mse_l) - (ref_w - ref_l)])     (genjax/preference.py)

ln 2 at step 0 (model = reference). The paper's code reduces the error the same way (a
mean over SD 1.5's 4 x 64 x 64 latent, beta 5000), but its latents are not these pixels, so
its beta does not carry over: sweep config.diffusion_dpo.beta. No condition dropout (both
images keep their label). Sampling and evaluators: the diffusion family's, on the tuned U-Net.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from genjax import diffusion as ddpm
from genjax import example_keys, preference
from genjax.errors import ConfigError
from genjax.families import diffusion, dpo, lora
from genjax.families.image_seam import image_shape, throughput_unit  # noqa: F401

# Capabilities (genjax/families/__init__.py): the tuned model is the diffusion U-Net
make_model = diffusion.make_model
conditioning = diffusion.conditioning
sample_images = diffusion.sample_images
sample_labels = diffusion.sample_labels
sample_options = diffusion.sample_options
runtime_keys = ("model.dropout", "model.eval_timesteps")
load_pretrained = dpo.load_pretrained
finalize_eval = dpo.finalize_eval
reference_params = dpo.reference_params
lora_merged_state = dpo.lora_merged_state


def resolve_config(config, data) -> None:
    """The U-Net's settings from the data; config.diffusion_dpo checked (check_settings)."""
    diffusion.resolve_config(config, data)
    check_settings(config)


def check_settings(config) -> None:
    """One ConfigError line unless diffusion_dpo.beta is > 0 and finite, there is no
    dropout (as DPO: dpo.dropout_problem) and no label dropout (both images keep their
    label: a model.label_dropout would be ignored)."""
    beta = float(config.diffusion_dpo.beta)
    problem = (f"diffusion_dpo.beta={beta}: must be > 0 and finite (a negative one reverses"
               " the preference)" if not (beta > 0 and math.isfinite(beta))
               else dpo.dropout_problem(config))
    if not problem and float(config.model.label_dropout):
        problem = (f"model.label_dropout={float(config.model.label_dropout)}: Diffusion-DPO"
                   " keeps both images' label (set 0)")
    if problem:
        raise ConfigError(f"config.{problem}")


def example_batch(config, batch_size: int) -> dict[str, np.ndarray]:
    return {"image": np.zeros((batch_size, 2, *image_shape(config)), np.float32),
            "label": np.zeros((batch_size,), np.int32)}


def init_variables(model, rng, batch, config) -> dict:
    one = {"image": np.asarray(batch["image"])[:, 0], "label": batch["label"]}
    variables = dict(diffusion.init_variables(model, rng, one, config))
    if not lora.enabled(config):  # with LoRA the frozen base is the reference
        variables[dpo.REFERENCE] = jax.tree_util.tree_map(jnp.copy, variables["params"])
    return variables


def shared_noise(batch, key, config):
    """(t int32[B], eps float32[B, 2, H, W, C]): one timestep and one noise per pair.
    `key` None (eval): each pair's own key from config.seed and its pixels."""
    x0 = batch["image"]
    T = int(config.model.timesteps)
    if key is None:
        keys_B = example_keys.example_keys(int(config.seed), x0)
        t_B, eps = diffusion.eval_draws(keys_B, 0, T, (1, *x0.shape[2:]))
    else:
        t_key, n_key = jax.random.split(key)
        t_B = jax.random.randint(t_key, (x0.shape[0],), 0, T)
        eps = jax.random.normal(n_key, (x0.shape[0], 1, *x0.shape[2:]), jnp.float32)
    return t_B, jnp.broadcast_to(eps, x0.shape)


def pair_mse(model, params, batch, t_B, noise, config, *, train: bool, rng=None):
    """Denoising errors float32[B, 2] of winner and loser at their pair's (t, eps)."""
    schedule = diffusion.make_schedule(config)
    x0 = batch["image"].astype(jnp.float32)                      # [B, 2, H, W, C]
    B = x0.shape[0]
    flat = lambda a: a.reshape(B * 2, *a.shape[2:])  # noqa: E731
    t2 = jnp.repeat(t_B, 2)
    x_t = ddpm.q_sample(schedule, flat(x0), t2, flat(noise))
    ab = ddpm._b(schedule.alphas_cumprod[t2], flat(x0))
    target = ddpm.pred_from_x0_eps(config.model.parameterization, flat(x0), flat(noise), ab)
    labels = diffusion._labels({"label": jnp.repeat(batch["label"], 2)}, config)
    rngs = {"dropout": rng} if rng is not None else None
    pred = model.apply({"params": params}, x_t, t2, labels, train=train, rngs=rngs)
    return jnp.mean((pred - target) ** 2, axis=(1, 2, 3)).reshape(B, 2)


def pair_terms(params, model_state, batch, key, *, model, config, train, rng=None):
    t_B, noise = shared_noise(batch, key, config)
    mse = pair_mse(model, params, batch, t_B, noise, config, train=train, rng=rng)
    ref = pair_mse(model, dpo.reference_params(model_state, params), batch, t_B, noise, config,
                   train=False)
    beta = float(config.diffusion_dpo.beta)
    inner = preference.diffusion_dpo_inner(mse[:, 0], mse[:, 1], ref[:, 0], ref[:, 1], beta)
    loss = preference.diffusion_dpo_loss(mse[:, 0], mse[:, 1], ref[:, 0], ref[:, 1], beta)
    return loss, {"mse_winner": mse[:, 0], "mse_loser": mse[:, 1],
                  "accuracy": (inner > 0).astype(jnp.float32), "inner": inner}


def loss_fn(params, model_state, batch, rng, *, model, config):
    noise_key, drop_key = jax.random.split(rng)
    loss, per = pair_terms(params, model_state, batch, noise_key, model=model, config=config,
                           train=True, rng=drop_key)
    return jnp.mean(loss), ({k: jnp.mean(v) for k, v in per.items()}, model_state)


def eval_fn(params, model_state, batch, *, model, config):
    """Sums over real pairs plus "count" (each pair's t and noise from its own pixels)."""
    mask = batch.get("mask", jnp.ones(batch["label"].shape, jnp.float32))
    loss, per = pair_terms(params, model_state, batch, None,
                           model=model, config=config, train=False)
    return {"loss": jnp.sum(loss * mask), **{k: jnp.sum(v * mask) for k, v in per.items()},
            "count": jnp.sum(mask)}


def param_labels(params, config):
    return None


def make_data(config, *, process_index: int, process_count: int):
    """Winner/loser pairs: sampled ones from config.data.pairs, else the image dataset's
    synthetic pairs (module docstring). Configs saved before the key: synthetic."""
    if "pairs" in config.data and config.data.pairs:
        from genjax.data.sampled_image_pairs import SampledImagePairs
        return SampledImagePairs(config.data.pairs, global_batch_size=int(config.batch_size),
                                 seed=int(config.seed), process_index=process_index,
                                 process_count=process_count)
    from genjax.data.image_pairs import ImagePairs
    images = diffusion.make_data(config, process_index=process_index,
                                 process_count=process_count)
    return ImagePairs(images, patch=int(config.data.pair_patch), seed=int(config.seed))
