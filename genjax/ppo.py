r"""PPO's objectives as pure functions of per-token log-probs, values and rewards (no model).

Shapes: R rollouts, L target positions; mask float32[R, L] = 1 on the completion's tokens
(contiguous in genjax/families/rl.py; a 0 ends an episode). Means are over the mask = 1
tokens of the whole batch (trl's masked_mean).

Per-token rewards: the KL leash per token (k1) plus the sequence reward r at the last
completion token,   r_t = -beta (log pi_old(y_t) - log ref(y_t)) + [t = last] r.
GAE (Schulman et al. 2016), with V = 0 after the episode:
    delta_t = r_t + gamma V_{t+1} - V_t,      A_t = delta_t + gamma lam A_{t+1}
    returns R_t = A_t + V_t (before whitening); A whitened over the batch's tokens (trl).
gamma = lam = 1: A_t = sum_{k >= t} r_k - V_t (reward-to-go minus the value).
Clipped surrogate (Schulman et al. 2017), ratio rho_t = exp(log pi(y_t) - log pi_old(y_t)):
    L_pg = mean max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps))
Clipped value loss (trl's cliprange_value):
    L_vf = 0.5 mean max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(x, mask):
    """Mean of x over mask = 1 (any shape), float32 scalar; 0 for an empty mask."""
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def masked_whiten(x, mask, eps: float = 1e-8):
    """(x - mean) / sqrt(var + eps) over mask = 1 (unbiased variance, as trl), 0 elsewhere."""
    n = jnp.maximum(jnp.sum(mask), 2.0)
    mean = masked_mean(x, mask)
    var = jnp.sum((x - mean) ** 2 * mask) / (n - 1.0)
    return (x - mean) * jax.lax.rsqrt(var + eps) * mask


def token_rewards(reward_R, logp_old_RxL, ref_RxL, mask_RxL, beta: float):
    """r_t float32[R, L]: -beta (log pi_old - log ref) on the mask, plus reward_R at each
    row's last mask = 1 position."""
    L = mask_RxL.shape[1]
    last = L - 1 - jnp.argmax(mask_RxL[:, ::-1] > 0, axis=1)          # [R]
    at_last = (jnp.arange(L)[None] == last[:, None]) & (mask_RxL > 0)
    return (-beta * (logp_old_RxL - ref_RxL) * mask_RxL
            + jnp.where(at_last, reward_R[:, None], 0.0))


def gae(rewards_RxL, values_RxL, mask_RxL, gamma: float, lam: float):
    """Advantages A float32[R, L] (module doc), 0 where mask = 0; returns = A + values."""
    m = mask_RxL.astype(jnp.float32)
    zeros = jnp.zeros_like(m[:, :1])
    v_next = jnp.concatenate([values_RxL[:, 1:] * m[:, 1:], zeros], axis=1)
    delta = rewards_RxL + gamma * v_next - values_RxL

    def back(a_next_R, x):
        delta_R, m_R = x
        a = m_R * (delta_R + gamma * lam * a_next_R)
        return a, a
    _, adv_LxR = jax.lax.scan(back, zeros[:, 0], (delta.T, m.T), reverse=True)
    return adv_LxR.T


def policy_loss(logp_RxL, logp_old_RxL, adv_RxL, mask_RxL, clip: float):
    """(L_pg, stats): the clipped surrogate (module doc); stats: clipfrac (share of tokens
    where the clipped term is the larger: its gradient is 0), approx_kl (mean of
    (log rho)^2 / 2, trl's), ratio_mean / ratio_min / ratio_max over the mask."""
    # 0 off the mask: exp of a large masked log-ratio would be inf, and inf * 0 is NaN
    log_ratio = jnp.where(mask_RxL > 0, logp_RxL - logp_old_RxL, 0.0)
    ratio = jnp.exp(log_ratio)
    unclipped = -adv_RxL * ratio
    clipped = -adv_RxL * jnp.clip(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(jnp.maximum(unclipped, clipped), mask_RxL)
    r = jax.lax.stop_gradient(ratio)
    on = mask_RxL > 0
    stats = {"clipfrac": masked_mean((clipped > unclipped).astype(jnp.float32), mask_RxL),
             "approx_kl": masked_mean(0.5 * jax.lax.stop_gradient(log_ratio) ** 2, mask_RxL),
             "ratio_mean": masked_mean(r, mask_RxL),
             "ratio_min": jnp.min(jnp.where(on, r, jnp.inf)),
             "ratio_max": jnp.max(jnp.where(on, r, -jnp.inf))}
    return loss, stats


def value_loss(values_RxL, values_old_RxL, returns_RxL, mask_RxL, clip_value: float):
    """(L_vf, clipfrac): the clipped value loss (module doc) and the share of tokens where
    the clipped error is the larger."""
    clipped_v = values_old_RxL + jnp.clip(values_RxL - values_old_RxL, -clip_value, clip_value)
    err = (values_RxL - returns_RxL) ** 2
    err_clipped = (clipped_v - returns_RxL) ** 2
    loss = 0.5 * masked_mean(jnp.maximum(err, err_clipped), mask_RxL)
    return loss, masked_mean((err_clipped > err).astype(jnp.float32), mask_RxL)
