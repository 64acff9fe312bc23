"""A Gaussian mixture fitted to a VAE's codes during training, to sample from instead of
N(0, I) ("ex-post density estimation", Ghosh et al. 2020).

The KL term pulls the aggregate posterior towards N(0, I) but never onto it: prior draws
land where no training image is encoded and decode to blends of garments. Here each class
g (one group when the data has no classes) keeps decayed sums of its posterior means z:

  count_g <- d count_g + #{b : y_b = g}
  sum_g   <- d sum_g   + sum_{b : y_b = g} z_b            float32[G, D]
  outer_g <- d outer_g + sum_{b : y_b = g} z_b z_b^T      float32[G, D, D]

so that after training, component g is N(mean_g, cov_g) with mean_g = sum_g / count_g,
cov_g = outer_g / count_g - mean_g mean_g^T, weighted by count_g: a moving fit over the
last ~1 / (1 - d) steps (the encoder keeps moving, so older codes are forgotten). The
state is plain arrays: it lives in model_state, is checkpointed and resumed with the run.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

JITTER = 1e-4  # added to each covariance's diagonal (a group seen rarely stays drawable)


def init(num_groups: int, dim: int) -> dict:
    """Empty sums: {"count": float32[G], "sum": float32[G, D], "outer": float32[G, D, D]}."""
    g = max(1, int(num_groups))
    return {"count": jnp.zeros((g,), jnp.float32), "sum": jnp.zeros((g, dim), jnp.float32),
            "outer": jnp.zeros((g, dim, dim), jnp.float32)}


def update(stats: dict, z_BxD, group_B, decay: float) -> dict:
    """The sums after one batch of codes z float32[B, D] of groups int32[B] (module doc)."""
    z = jax.lax.stop_gradient(z_BxD).astype(jnp.float32)
    onehot_BxG = jax.nn.one_hot(group_B, stats["count"].shape[0], dtype=jnp.float32)
    d = jnp.float32(decay)
    return {"count": d * stats["count"] + jnp.sum(onehot_BxG, 0),
            "sum": d * stats["sum"] + jnp.einsum("bg,bd->gd", onehot_BxG, z),
            "outer": d * stats["outer"] + jnp.einsum("bg,bd,be->gde", onehot_BxG, z, z)}


def gaussians(stats: dict):
    """(weights float32[G] summing to 1, means float32[G, D], covariances float32[G, D, D])
    of the fitted mixture (a group never seen: weight 0, N(0, I))."""
    count = stats["count"]
    seen = count > 0
    n = jnp.where(seen, count, 1.0)
    mean = stats["sum"] / n[:, None]
    cov = stats["outer"] / n[:, None, None] - jnp.einsum("gd,ge->gde", mean, mean)
    eye = jnp.eye(mean.shape[-1], dtype=jnp.float32)
    cov = jnp.where(seen[:, None, None], 0.5 * (cov + jnp.swapaxes(cov, 1, 2)), eye)
    return count / jnp.maximum(jnp.sum(count), 1e-9), mean, cov + JITTER * eye


def draw(stats: dict, rng, num_samples: int, group_N=None, temperature: float = 1.0):
    """z float32[N, D]: component g ~ weights (or `group_N` int32[N] given), then
    mean_g + t L_g eps with L_g L_g^T = cov_g, eps ~ N(0, I), t = `temperature`."""
    weights, mean, cov = gaussians(stats)
    key_group, key_eps = jax.random.split(rng)
    if group_N is None:
        group_N = jax.random.categorical(key_group, jnp.log(weights), shape=(num_samples,))
    chol = jnp.linalg.cholesky(cov)
    eps = jax.random.normal(key_eps, (num_samples, mean.shape[-1]), jnp.float32)
    return mean[group_N] + temperature * jnp.einsum("nde,ne->nd", chol[group_N], eps)
