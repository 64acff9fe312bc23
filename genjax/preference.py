"""Preference objectives as pure functions of log-probabilities and rewards (no model).

Notation (shapes: B pairs): logp_w, logp_l = the policy's log-probability of the chosen
(winner) and rejected (loser) completion, summed over completion tokens (IPO: averaged
per token); ref_w, ref_l = the same under the frozen reference. The margin of the log
ratios is

    delta = (logp_w - ref_w) - (logp_l - ref_l)        float32[B], nats

and the DPO losses (Rafailov et al. 2023; IPO: Azar et al. 2023; cDPO label smoothing)
are, per pair, with beta the KL leash (0.1 in TRL):

    sigmoid   -(1 - eps) log sigma(beta delta) - eps log sigma(-beta delta)
    ipo       (delta - 1 / (2 beta))^2
    hinge     max(0, 1 - beta delta)

At step 0 (policy = reference, delta = 0): sigmoid = ln 2, ipo = (1 / (2 beta))^2,
hinge = 1. The Bradley-Terry reward loss (a reward model r) is
-log sigma(r_w - r_l - margin) + c (r_w + r_l)^2 (c: centring, TRL's
center_rewards_coefficient). RLOO: a prompt's K sampled rewards, each minus the mean of
the other K - 1.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.errors import ConfigError

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def log_ratio_margin(logp_w, logp_l, ref_w, ref_l):
    """delta = (logp_w - ref_w) - (logp_l - ref_l), elementwise (nats)."""
    return (logp_w - ref_w) - (logp_l - ref_l)


def check_loss_type(loss_type: str) -> str:
    """`loss_type` if known, else ConfigError naming the choices (never a silent default)."""
    if loss_type not in LOSS_TYPES:
        raise ConfigError(f"preference loss_type={loss_type!r}: choose one of {LOSS_TYPES}")
    return loss_type


def dpo_loss(delta, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0):
    """Per-pair loss float32[B] of the log-ratio margins `delta` float32[B] (module doc)."""
    check_loss_type(loss_type)
    z = beta * delta
    if loss_type == "sigmoid":
        return (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(z)
                - label_smoothing * jax.nn.log_sigmoid(-z))
    if loss_type == "ipo":
        return (delta - 1.0 / (2.0 * beta)) ** 2
    return jax.nn.relu(1.0 - z)


def bradley_terry_loss(r_w, r_l, margin=0.0, center: float = 0.0):
    """Per-pair -log sigma(r_w - r_l - margin) + center (r_w + r_l)^2, float32[B]."""
    return -jax.nn.log_sigmoid(r_w - r_l - margin) + center * (r_w + r_l) ** 2


def implicit_rewards(logp, ref, beta: float):
    """DPO's implicit reward beta (log pi - log ref) of a completion, float32[B]."""
    return beta * (logp - ref)


def rloo_advantages(rewards_PxK):
    """Leave-one-out advantages float32[P, K]: r_k - mean_{j != k} r_j (K >= 2), formed
    as the mean of the differences r_k - r_j, so equal rewards give exactly 0."""
    k = rewards_PxK.shape[-1]
    if k < 2:
        raise ConfigError(f"RLOO needs K >= 2 samples per prompt, got {k}")
    diffs = rewards_PxK[..., :, None] - rewards_PxK[..., None, :]  # [P, K, K], 0 on the diagonal
    return jnp.sum(diffs, axis=-1) / (k - 1)


def kl_shaped_reward(reward, logp, ref_logp, beta: float):
    """Reward with the KL leash folded in: r - beta (log pi(y) - log ref(y)) (k1 estimate,
    whose mean over y ~ pi is KL(pi || ref))."""
    return reward - beta * (logp - ref_logp)


def diffusion_dpo_inner(mse_w, mse_l, ref_mse_w, ref_mse_l, beta: float):
    """Diffusion-DPO's logit (Wallace et al. 2023): -(beta / 2) [(mse_w - mse_l) -
    (ref_mse_w - ref_mse_l)], the denoising errors of winner and loser at one shared
    timestep and noise. Swapping winner and loser negates it."""
    return -0.5 * beta * ((mse_w - mse_l) - (ref_mse_w - ref_mse_l))


def diffusion_dpo_loss(mse_w, mse_l, ref_mse_w, ref_mse_l, beta: float):
    """Per-pair -log sigma(inner): ln 2 when the model is the reference; the gradient there
    is (beta / 4) grad(mse_w - mse_l)."""
    return -jax.nn.log_sigmoid(diffusion_dpo_inner(mse_w, mse_l, ref_mse_w, ref_mse_l, beta))
