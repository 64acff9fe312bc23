"""Diffusion family: DDPM objective on a U-Net (eps / x0 / v prediction), conditioned on a
class label or a caption (`conditioning`), with condition dropout for classifier-free
guidance.

Batch: {"image": float32[B, H, W, C] in [-1, 1], "label": int32[B]} (+ "tokens":
int32[B, L] caption ids for text conditioning, genjax/data/captioned_images.py; + "mask":
float32[B] in eval batches; 0 = padding). Training minimises the "simple" loss: the mean
squared error of the network output against its target (eps, x0 or v) at a uniform random
timestep.

Eval reports, per image (sums over the batch + "count"; the loop divides):
  loss         the simple loss (averaged over t as in training)
  vlb_bpd      the variational bound on -log p(x | y) in bits/dim,
               L_T + L_0 + sum_{t=1}^{T-1} L_t, with L_0 (the decoder) exact and the sum
               estimated by stratified sampling: `model.eval_timesteps` geometric strata of
               1..T-1, one t per stratum per image, weighted by the stratum's size. Unbiased; the
               full bound is the same code with T-1 strata. Each image's timesteps and
               noise come from `config.seed` and its own pixels (genjax/example_keys.py):
               the same in every eval, whatever the batch, and independent across images.
  decoder_bpd  L_0 alone; prior_bpd  L_T alone (~0 for a schedule that ends in noise).
"""
from __future__ import annotations

import contextlib
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from genjax import diffusion, example_keys, sharding
from genjax.errors import ConfigError
from genjax.families import image_seam
from genjax.families.image_seam import image_shape, num_classes, throughput_unit  # noqa: F401
from genjax.models import remat, unet

CONDITIONINGS = ("class", "text", "none")
# Capabilities (genjax/families/__init__.py)
likelihood_metrics = ("vlb_bpd", "decoder_bpd", "prior_bpd")
sample_options = ("guidance", "steps")
runtime_keys = ("model.dropout", "model.remat", "model.eval_timesteps")  # how it runs or is scored


# ---------------------------------------------------------------- model and batches
def conditioning(config) -> str:
    """"text" | "class" | "none". Text: configs/t2i_fmnist.py sets model.conditioning;
    configs without that key follow model.class_conditional (shared by the image families)."""
    m = config.model
    if "conditioning" not in m:
        return "class" if m.class_conditional else "none"
    if m.conditioning not in CONDITIONINGS:
        raise ConfigError(f"config.model.conditioning={m.conditioning!r}: choose one of "
                          f"{CONDITIONINGS}")
    if (m.conditioning == "class") != bool(m.class_conditional):
        raise ConfigError(f"config.model.conditioning={m.conditioning!r} contradicts "
                          f"config.model.class_conditional={m.class_conditional}")
    return m.conditioning


def make_model(config) -> unet.UNet:
    m = config.model
    if m.name != "unet":
        raise ConfigError(f"config.model.name={m.name!r}: the diffusion family has: unet")
    dtype = jnp.dtype(config.compute_dtype)
    text, cross = None, ()
    if conditioning(config) == "text":
        from genjax.models.text_encoder import TextEncoder
        t = m.text
        if not t.vocab_size:
            raise ConfigError("config.model.text.vocab_size is 0: resolve it from the data first")
        text = TextEncoder(vocab_size=t.vocab_size, max_words=t.max_words, width=t.width,
                           num_layers=t.num_layers, num_heads=t.num_heads,
                           mlp_ratio=t.mlp_ratio, dtype=dtype)
        cross = tuple(t.cross_attn_resolutions)
    return unet.UNet(
        out_channels=image_shape(config)[-1], width=m.width, channel_mult=tuple(m.channel_mult),
        num_res_blocks=m.num_res_blocks, attn_resolutions=tuple(m.attn_resolutions),
        mid_attention=bool(m.get("mid_attention", True)),  # (configs saved before the key)
        num_heads=m.num_heads, dropout=m.dropout, num_classes=num_classes(config),
        text_encoder=text, cross_attn_resolutions=cross, dtype=dtype,
        remat=_remat(m))


def _remat(m) -> str:
    """config.model.remat (configs without the key: none); unknown -> ConfigError."""
    r = m.get("remat", "none")
    if r not in remat.CHOICES:
        raise ConfigError(f"config.model.remat={r!r}: choose one of {list(remat.CHOICES)}")
    return r


def caption_tokenizer(config):
    """The caption tokenizer of a text model (genjax/data/caption_tokenizer.py)."""
    from genjax.data.caption_tokenizer import CaptionTokenizer
    return CaptionTokenizer.from_captions(int(config.model.text.max_words))


def make_data(config, *, process_index: int, process_count: int):
    if conditioning(config) != "text":
        return image_seam.make_data(config, process_index=process_index,
                                    process_count=process_count)
    from genjax.data.captioned_images import CaptionedImageData
    return CaptionedImageData(
        config.data, global_batch_size=int(config.batch_size), seed=int(config.seed),
        max_words=int(config.model.text.max_words), eval_captions=config.data.eval_captions,
        process_index=process_index, process_count=process_count)


def resolve_config(config, data) -> None:
    image_seam.resolve_config(config, data)
    if conditioning(config) == "text":
        config.model.text.vocab_size = int(data.tokenizer.vocab_size)


def make_schedule(config) -> diffusion.Schedule:
    return diffusion.make_schedule(config.model.schedule, int(config.model.timesteps))


def example_batch(config, batch_size: int) -> dict[str, np.ndarray]:
    batch = {"image": np.zeros((batch_size, *image_shape(config)), np.float32),
             "label": np.zeros((batch_size,), np.int32)}
    if conditioning(config) == "text":
        batch["tokens"] = np.zeros((batch_size, int(config.model.text.max_words)), np.int32)
    return batch


def init_variables(model, rng, batch, config) -> dict:
    b = len(batch["label"])
    return model.init({"params": rng}, jnp.asarray(batch["image"]), jnp.zeros((b,), jnp.int32),
                      _labels(batch, config))


def _labels(batch, config):
    """The model's condition: labels int32[B], caption tokens int32[B, L] or None."""
    cond = conditioning(config)
    if cond == "text":
        return jnp.asarray(batch["tokens"], jnp.int32)
    return jnp.asarray(batch["label"], jnp.int32) if cond == "class" else None


def _null(config):
    """What guidance and condition dropout put in place of the condition: the null class
    id, or PAD (0) in every token position (the empty caption)."""
    return 0 if conditioning(config) == "text" else num_classes(config)


# --------------------------------------------------------------------------- loss
def _noised(batch, rng, config, schedule, lo=0, hi=None):
    """(x0, t, x_t, target) for t uniform in [lo, hi) (default: all T steps)."""
    x0 = batch["image"].astype(jnp.float32)
    t_key, n_key = jax.random.split(rng)
    hi = schedule.num_steps if hi is None else hi
    t_B = jax.random.randint(t_key, (x0.shape[0],), lo, hi)
    noise = jax.random.normal(n_key, x0.shape, jnp.float32)
    return _noised_at(x0, t_B, noise, config, schedule)


def eval_draws(keys_B, lo, hi, shape):
    """(t int32[B] uniform in [lo, hi), noise float32[B, *shape]): one draw per example key."""
    def one(key):
        t_key, n_key = jax.random.split(key)
        return (jax.random.randint(t_key, (), lo, hi),
                jax.random.normal(n_key, tuple(shape), jnp.float32))
    return jax.vmap(one)(keys_B)


def _noised_at(x0, t_B, noise, config, schedule):
    x_t = diffusion.q_sample(schedule, x0, t_B, noise)
    ab = diffusion._b(schedule.alphas_cumprod[t_B], x0)
    target = diffusion.pred_from_x0_eps(config.model.parameterization, x0, noise, ab)
    return x0, t_B, x_t, target


def loss_fn(params, model_state, batch, rng, *, model, config):
    schedule = make_schedule(config)
    noise_key, drop_key, label_key = jax.random.split(rng, 3)
    x0, t_B, x_t, target = _noised(batch, noise_key, config, schedule)
    labels = _labels(batch, config)
    if labels is not None and config.model.label_dropout:  # null class / caption for CFG
        drop = jax.random.bernoulli(label_key, config.model.label_dropout, labels.shape[:1])
        labels = jnp.where(drop.reshape(drop.shape + (1,) * (labels.ndim - 1)), _null(config),
                           labels)
    pred = model.apply({"params": params}, x_t, t_B, labels, train=True,
                       rngs={"dropout": drop_key})
    mse_B = jnp.mean((pred - target) ** 2, axis=(1, 2, 3))
    loss = jnp.mean(mse_B)
    return loss, ({"mse": loss}, model_state)


def eval_strata(num_steps: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) of (at most) k strata partitioning the timesteps 1..T-1, geometrically
    spaced: the bound's terms are largest and change fastest at small t."""
    edges = np.round(np.geomspace(1, num_steps, max(1, k) + 1)).astype(np.int32)
    edges = np.unique(np.concatenate([[1], edges, [num_steps]]))
    return edges[:-1], edges[1:]


def eval_fn(params, model_state, batch, *, model, config):
    """Per-image sums of the simple loss and the bound (bits/dim); see the module docstring."""
    schedule = make_schedule(config)
    x0 = batch["image"].astype(jnp.float32)
    mask = batch.get("mask", jnp.ones((x0.shape[0],), jnp.float32))
    labels = _labels(batch, config)
    lo, hi = eval_strata(schedule.num_steps, int(config.model.eval_timesteps))
    keys_Bxk = jax.vmap(lambda k: jax.random.split(k, len(lo) + 1))(
        example_keys.example_keys(int(config.seed), x0))
    keys = jnp.swapaxes(keys_Bxk, 0, 1)  # [strata + 1, B, 2]

    def terms(keys_B, lo, hi):  # simple loss and L_t at one t per image drawn from [lo, hi)
        t_B, noise = eval_draws(keys_B, lo, hi, x0.shape[1:])
        _, t_B, x_t, target = _noised_at(x0, t_B, noise, config, schedule)
        pred = model.apply({"params": params}, x_t, t_B, labels, train=False)
        mse_B = jnp.mean((pred - target) ** 2, axis=(1, 2, 3))
        term_B = diffusion.vlb_term(schedule, config.model.parameterization,
                                    config.model.var_type, x0, x_t, t_B, pred)
        return mse_B, term_B

    mse0_B, nll0_B = terms(keys[0], 0, 1)
    mse_kxB, term_kxB = jax.lax.map(lambda a: terms(*a), (keys[1:], lo, hi))
    size_kx1 = jnp.asarray(hi - lo, jnp.float32)[:, None]  # stratum j stands for its size terms
    prior_B = diffusion.prior_kl(schedule, x0)
    vlb_B = prior_B + nll0_B + jnp.sum(size_kx1 * term_kxB, axis=0)
    loss_B = (mse0_B + jnp.sum(size_kx1 * mse_kxB, axis=0)) / schedule.num_steps
    to_bpd = 1.0 / (math.prod(x0.shape[1:]) * math.log(2.0))
    return {"loss": jnp.sum(loss_B * mask),
            "vlb_bpd": jnp.sum(vlb_B * to_bpd * mask),
            "decoder_bpd": jnp.sum(nll0_B * to_bpd * mask),
            "prior_bpd": jnp.sum(prior_B * to_bpd * mask),
            "count": jnp.sum(mask)}


def param_labels(params, config):
    return None


# ------------------------------------------------------------------------- sampling
def sample_labels(config, num_samples: int, label=None, prompt=None):
    """The sampler's condition. Class models: `label` None = classes 0, 1, 2, ... in turn;
    an int or int array: those classes (num_classes = the null class: unconditional).
    Text models: `prompt` caption tokens int32[L] (every sample) or [N, L]; None = the
    default caption of classes 0, 1, 2, ... in turn. Unconditional models: None."""
    cond = conditioning(config)
    if cond == "text":
        if label is not None:
            raise ValueError("a text-conditional model takes prompt tokens, not a label")
        if prompt is None:
            from genjax.data import captions
            tok = caption_tokenizer(config)
            prompt = tok.encode_batch([captions.default_caption(i % len(captions.SYNONYMS))
                                       for i in range(num_samples)])
        prompt = jnp.asarray(prompt, jnp.int32)
        return jnp.broadcast_to(prompt, (num_samples, prompt.shape[-1]))
    if prompt is not None:
        raise ValueError(f"a {cond!r}-conditioned model takes no prompt")
    return image_seam.sample_labels(config, num_samples, label)


def sample_images(model, params, config, rng, num_samples: int, label=None, guidance=None,
                  steps=None, *, sampler=None, eta=None, model_state=None,
                  prompt=None) -> jax.Array:
    """float32[N, H, W, C] in [-1, 1]. Defaults from config.sample: sampler (ddim | ddpm),
    steps, eta (DDIM only), guidance (1 = conditional, 0 = unconditional, > 1 = CFG).
    label / prompt: see sample_labels. One jitted lax.scan over the steps, compiled once
    per (model, sampler settings, shape) and reused by later calls."""
    s = config.sample
    sampler = sampler or s.sampler
    if sampler not in ("ddim", "ddpm"):
        raise ConfigError(f"sampler {sampler!r}: use ddim | ddpm")
    fn = make_sampler(model, sampler, int(steps or s.steps), float(s.eta if eta is None else eta),
                  float(s.guidance if guidance is None else guidance),
                  (int(num_samples), *image_shape(config)), str(config.model.schedule),
                  int(config.model.timesteps), str(config.model.parameterization),
                  str(config.model.var_type), _null(config), sharding.mesh_of(params),
                  sharding.rules_from_config(config.sharding_rules))
    return fn(params, rng, sample_labels(config, int(num_samples), label, prompt))


@functools.lru_cache(maxsize=16)
def make_sampler(model, sampler, steps, eta, guidance, shape, schedule_name, timesteps,
                 parameterization, var_type, null_label, mesh, rules):
    """jit(params, rng, labels) -> images float32[shape] for these static settings (params
    are an argument, not baked-in constants); cached. mesh, rules: the params' mesh and
    logical rules (None, () on one device); on a mesh the samples are split over the batch
    axis (each device denoises its share, not the whole batch)."""
    schedule = diffusion.make_schedule(schedule_name, timesteps)
    image_axes = ("batch", "height", "width", "channels")

    def run(params, rng, labels):
        with (sharding.activate(mesh, rules) if mesh is not None else contextlib.nullcontext()):
            return _run(params, rng, labels)

    def _run(params, rng, labels):
        def apply_fn(x, t_B, y):
            x = sharding.constrain(x, image_axes)
            return sharding.constrain(
                model.apply({"params": params}, x, t_B, y, train=False), image_axes)

        common = dict(parameterization=parameterization, labels=labels, guidance=guidance,
                      null_label=null_label)
        if sampler == "ddpm":
            return diffusion.ddpm_sample(apply_fn, schedule, rng, shape, num_steps=steps,
                                         var_type=var_type, **common)
        return diffusion.ddim_sample(apply_fn, schedule, rng, shape, num_steps=steps, eta=eta,
                                     **common)
    return jax.jit(run)
