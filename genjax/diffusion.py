r"""Gaussian diffusion (DDPM): noise schedules, q_sample, the three prediction
parameterisations, DDPM (ancestral) and DDIM samplers with classifier-free guidance, and
the variational bound in bits/dim.

Conventions. Timestep indices t = 0..T-1; `ab_t` = alpha-bar_t = prod_{s<=t} (1 - beta_s)
and q(x_t | x_0) = N(sqrt(ab_t) x_0, (1 - ab_t) I), so t = 0 is the least noisy latent
(x_1 in Ho et al. 2020). Data x_0 are 8-bit images scaled to [-1, 1] (bins of width 2/255).
The network sees integer t and predicts one of (`parameterization`):
  eps   the noise                      (Ho et al. 2020)
  x0    the clean image
  v     sqrt(ab) eps - sqrt(1-ab) x0   (Salimans & Ho 2022)
All three are linear in the network output given x_t, so guidance can mix raw outputs.

Nothing here knows about flax: samplers take `apply_fn(x_BxHxWxC, t_B, labels_B | None)`.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genjax.errors import ConfigError

PARAMETERIZATIONS = ("eps", "x0", "v")
SCHEDULES = ("linear", "cosine")
VAR_TYPES = ("small", "large")  # reverse variance: posterior beta~_t | beta_t (Ho et al. 3.2)

ApplyFn = Callable[[jax.Array, jax.Array, "jax.Array | None"], jax.Array]


class Schedule(NamedTuple):
    betas: jax.Array           # float32[T]
    alphas_cumprod: jax.Array  # float32[T]: ab_t

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])


def make_schedule(kind: str, num_steps: int) -> Schedule:
    """linear: Ho et al. 2020 (1e-4..0.02 at T=1000, rescaled for other T);
    cosine: Nichol & Dhariwal 2021 (s = 0.008, betas clipped at 0.999)."""
    T = int(num_steps)
    if T < 1:
        raise ConfigError(f"a diffusion schedule of {T} timesteps: use 1 or more")
    if kind == "linear":
        if T <= 20:  # beta_max = 0.02 * 1000 / T reaches 1: ab_t hits 0 and x0 = inf
            raise ConfigError(f"the linear schedule needs more than 20 timesteps (its last "
                              f"beta is 20 / T), not {T}; use schedule=cosine")
        scale = 1000.0 / T
        betas = np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64)
    elif kind == "cosine":
        s = 0.008
        f = np.cos((np.arange(T + 1, dtype=np.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
        betas = np.minimum(1.0 - f[1:] / f[:-1], 0.999)
    else:
        raise ConfigError(f"schedule {kind!r}: choose one of {SCHEDULES}")
    ab = np.cumprod(1.0 - betas)
    return Schedule(jnp.asarray(betas, jnp.float32), jnp.asarray(ab, jnp.float32))


def _b(a, x):
    """Broadcasts a per-example array [B] against x [B, ...]."""
    a = jnp.asarray(a, jnp.float32)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def q_sample(schedule: Schedule, x0: jax.Array, t_B: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise."""
    ab = _b(schedule.alphas_cumprod[t_B], x0)
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise


# -------------------------------------------------------------- parameterisations
def _check(parameterization: str) -> None:
    if parameterization not in PARAMETERIZATIONS:
        raise ConfigError(f"parameterization {parameterization!r}: choose one of {PARAMETERIZATIONS}")


def pred_from_x0_eps(parameterization: str, x0, eps, ab):
    """The regression target of the network (`ab` broadcastable to x0)."""
    _check(parameterization)
    if parameterization == "eps":
        return eps
    if parameterization == "x0":
        return x0
    return jnp.sqrt(ab) * eps - jnp.sqrt(1.0 - ab) * x0


def x0_eps_from_pred(parameterization: str, pred, x_t, ab):
    """(x0, eps) implied by a network output at x_t."""
    _check(parameterization)
    sa, s1a = jnp.sqrt(ab), jnp.sqrt(1.0 - ab)
    if parameterization == "eps":
        return (x_t - s1a * pred) / sa, pred
    if parameterization == "x0":
        return pred, (x_t - sa * pred) / s1a
    return sa * x_t - s1a * pred, s1a * x_t + sa * pred


def posterior(x0, x_t, ab_t, ab_prev):
    """Mean and variance of q(x_prev | x_t, x0) between any two levels ab_prev > ab_t."""
    beta = 1.0 - ab_t / ab_prev
    mean = (jnp.sqrt(ab_prev) * beta / (1.0 - ab_t)) * x0 + \
        (jnp.sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab_t)) * x_t
    return mean, beta * (1.0 - ab_prev) / (1.0 - ab_t)


def _ab_prev(schedule: Schedule, t_prev):
    """ab at t_prev, with ab = 1 (clean data) for t_prev = -1."""
    return jnp.where(t_prev >= 0, schedule.alphas_cumprod[jnp.maximum(t_prev, 0)], 1.0)


def reverse_log_variance(schedule: Schedule, t_B, var_type: str):
    """log sigma_t^2 of p(x_{t-1} | x_t) on the full schedule; t = 0 borrows beta~_1 (Ho et al.)."""
    if var_type not in VAR_TYPES:
        raise ConfigError(f"var_type {var_type!r}: choose one of {VAR_TYPES}")
    ab = schedule.alphas_cumprod
    ab_prev = jnp.concatenate([jnp.ones((1,)), ab[:-1]])
    post = schedule.betas * (1.0 - ab_prev) / (1.0 - ab)
    var = post if var_type == "small" else schedule.betas
    var = var.at[0].set(post[1])
    return jnp.log(var)[t_B]


# -------------------------------------------------------------------- guidance
def guided(apply_fn: ApplyFn, x, t_B, labels, guidance: float, null_label: int):
    """Classifier-free guidance on raw outputs: out(null) + guidance * (out(y) - out(null)).

    guidance = 1: the conditional model (one pass); 0: the unconditional model (labels
    replaced by `null_label`); > 1: guided (Ho & Salimans 2022 with w = guidance - 1).
    `labels=None` (an unconditional model): one plain pass, guidance ignored.
    """
    if labels is None or guidance == 1.0:
        return apply_fn(x, t_B, labels)
    null = jnp.full_like(labels, null_label)
    if guidance == 0.0:
        return apply_fn(x, t_B, null)
    both = apply_fn(jnp.concatenate([x, x]), jnp.concatenate([t_B, t_B]),
                    jnp.concatenate([labels, null]))
    cond, uncond = jnp.split(both, 2)
    return uncond + guidance * (cond - uncond)


# -------------------------------------------------------------------- samplers
def timestep_pairs(num_train_steps: int, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Evenly spaced timesteps from T - 1 down to 0, and each one's successor (-1 = clean
    data); one step goes from T - 1 to clean data. ConfigError outside 1..T."""
    T, S = int(num_train_steps), int(num_steps)
    if not 1 <= S <= T:
        raise ConfigError(f"{S} sampling steps on a schedule of {T} timesteps: use 1..{T}")
    if S == 1:  # linspace(0, T - 1, 1) is [0]: the noise would be read as nearly clean
        return np.array([T - 1], np.int32), np.array([-1], np.int32)
    ts = np.unique(np.round(np.linspace(0, T - 1, S)).astype(np.int32))[::-1]
    prev = np.concatenate([ts[1:], [-1]]).astype(np.int32)
    return ts.copy(), prev


def _sample(apply_fn, schedule, rng, shape, *, parameterization, num_steps, labels, guidance,
            null_label, x_T, clip_x0, update):
    init_key, loop_key = jax.random.split(rng)
    x = jax.random.normal(init_key, shape, jnp.float32) if x_T is None else x_T
    ts, prevs = timestep_pairs(schedule.num_steps, num_steps)
    keys = jax.random.split(loop_key, len(ts))

    def body(x, inp):
        t, t_prev, key = inp
        ab_t, ab_prev = schedule.alphas_cumprod[t], _ab_prev(schedule, t_prev)
        out = guided(apply_fn, x, jnp.full((shape[0],), t, jnp.int32), labels, guidance, null_label)
        x0, eps = x0_eps_from_pred(parameterization, out.astype(jnp.float32), x, ab_t)
        if clip_x0:  # keep eps consistent with the clipped x0
            x0 = jnp.clip(x0, -1.0, 1.0)
            eps = (x - jnp.sqrt(ab_t) * x0) / jnp.sqrt(1.0 - ab_t)
        return update(x, x0, eps, ab_t, ab_prev, jax.random.normal(key, shape)), None

    x, _ = jax.lax.scan(body, x, (jnp.asarray(ts), jnp.asarray(prevs), keys))
    return jnp.clip(x, -1.0, 1.0)


def ddpm_sample(apply_fn: ApplyFn, schedule: Schedule, rng, shape, *, parameterization: str,
                num_steps: int | None = None, var_type: str = "small", labels=None,
                guidance: float = 1.0, null_label: int = 0, x_T=None,
                clip_x0: bool = True) -> jax.Array:
    """Ancestral sampling. `num_steps` < T respaces the schedule (Nichol & Dhariwal 2021):
    betas between the kept steps are 1 - ab_t / ab_prev. Returns float32[shape] in [-1, 1]."""
    if var_type not in VAR_TYPES:
        raise ConfigError(f"var_type {var_type!r}: choose one of {VAR_TYPES}")

    def update(x, x0, eps, ab_t, ab_prev, z):
        mean, var = posterior(x0, x, ab_t, ab_prev)
        if var_type == "large":
            var = 1.0 - ab_t / ab_prev
        return mean + jnp.where(ab_prev < 1.0, jnp.sqrt(var), 0.0) * z  # no noise at the end

    return _sample(apply_fn, schedule, rng, shape, parameterization=parameterization,
                   num_steps=num_steps or schedule.num_steps, labels=labels, guidance=guidance,
                   null_label=null_label, x_T=x_T, clip_x0=clip_x0, update=update)


def ddim_sample(apply_fn: ApplyFn, schedule: Schedule, rng, shape, *, parameterization: str,
                num_steps: int = 50, eta: float = 0.0, labels=None, guidance: float = 1.0,
                null_label: int = 0, x_T=None, clip_x0: bool = True) -> jax.Array:
    """DDIM (Song et al. 2021, eq. 12): eta = 0 deterministic given x_T, eta = 1 ~ DDPM."""
    def update(x, x0, eps, ab_t, ab_prev, z):
        sigma = eta * jnp.sqrt((1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev))
        direction = jnp.sqrt(jnp.maximum(1.0 - ab_prev - sigma ** 2, 0.0)) * eps
        return jnp.sqrt(ab_prev) * x0 + direction + sigma * z

    return _sample(apply_fn, schedule, rng, shape, parameterization=parameterization,
                   num_steps=num_steps, labels=labels, guidance=guidance, null_label=null_label,
                   x_T=x_T, clip_x0=clip_x0, update=update)


# ---------------------------------------------------------- variational bound
def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * jnp.exp(-logvar2))


def discretized_gaussian_log_likelihood(x, mean, log_scale):
    """log P(x) for 8-bit data in [-1, 1] under N(mean, e^{2 log_scale}) integrated over the
    pixel's bin of width 2/255 (edge bins extend to +-inf), elementwise."""
    from jax.scipy.special import log_ndtr
    inv = jnp.exp(-log_scale)
    upper = inv * (x - mean + 1.0 / 255)
    lower = inv * (x - mean - 1.0 / 255)
    log_cdf_upper = log_ndtr(upper)
    log_sf_lower = log_ndtr(-lower)
    # log(Phi(upper) - Phi(lower)), stable on either side of the mean
    log_mid = jnp.where(
        lower > 0, log_sf_lower + jnp.log1p(-jnp.exp(jnp.minimum(log_ndtr(-upper) - log_sf_lower, -1e-12))),
        log_cdf_upper + jnp.log1p(-jnp.exp(jnp.minimum(log_ndtr(lower) - log_cdf_upper, -1e-12))))
    return jnp.where(x < -0.999, log_cdf_upper, jnp.where(x > 0.999, log_sf_lower, log_mid))


def prior_kl(schedule: Schedule, x0) -> jax.Array:
    """L_T = KL(q(x_T | x0) || N(0, I)) per example, in nats."""
    ab = schedule.alphas_cumprod[-1]
    kl = normal_kl(jnp.sqrt(ab) * x0, jnp.log(1.0 - ab), 0.0, 0.0)
    return jnp.sum(kl, axis=tuple(range(1, x0.ndim)))


def vlb_term(schedule: Schedule, parameterization: str, var_type: str, x0, x_t, t_B, pred,
             clip_x0: bool = True) -> jax.Array:
    """One term of the bound per example, in nats: KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t))
    for t > 0 and the decoder NLL -log p(x0 | x_t) for t = 0."""
    ab_t = _b(schedule.alphas_cumprod[t_B], x0)
    ab_prev = _b(_ab_prev(schedule, t_B - 1), x0)
    x0_pred, _ = x0_eps_from_pred(parameterization, pred.astype(jnp.float32), x_t, ab_t)
    if clip_x0:
        x0_pred = jnp.clip(x0_pred, -1.0, 1.0)
    true_mean, true_var = posterior(x0, x_t, ab_t, ab_prev)
    model_mean, _ = posterior(x0_pred, x_t, ab_t, ab_prev)
    logvar = _b(reverse_log_variance(schedule, t_B, var_type), x0)
    axes = tuple(range(1, x0.ndim))
    kl = jnp.sum(normal_kl(true_mean, jnp.log(jnp.maximum(true_var, 1e-20)), model_mean, logvar),
                 axis=axes)
    nll = -jnp.sum(discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * logvar), axis=axes)
    return jnp.where(t_B == 0, nll, kl)
