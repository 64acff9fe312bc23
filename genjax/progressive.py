r"""Progressive distillation of a diffusion sampler (Salimans & Ho 2022): the math.

A student that takes N DDIM steps learns to match its teacher's 2N steps: from z_t the
teacher takes two deterministic DDIM steps t -> t' -> t'' and the student's target x0 is
the one that makes ONE DDIM step t -> t'' land where the teacher landed:

  x~ = (z_t'' - (sigma_t''/sigma_t) z_t) / (alpha_t'' - (sigma_t''/sigma_t) alpha_t)

with alpha = sqrt(ab), sigma = sqrt(1 - ab) (genjax/diffusion.py's ab; ab = 1, sigma = 0 at
the clean end). The ratio uses the END of the two steps, t'' (not the midpoint t': the
swap of diffusers PR #1010). The loss is the truncated-SNR weighted x-error,
max(1, alpha_t^2 / sigma_t^2) |x^ - x~|^2 = max(x_mse, eps_mse) (the paper's choice for
v-prediction students, which start as copies of the teacher).

Grids: N steps over T training timesteps are the levels round(i T / N) - 1, i = N .. 0
(-1 = clean data), so the N-step grid is exactly every other level of the 2N-step grid on
any T; a round N -> N/2 needs N even and N <= T (else one error line).
The family that trains a round: genjax/families/diffusion_distill.py.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from genjax.diffusion import Schedule
from genjax.errors import ConfigError


def levels(num_train_steps: int, num_steps: int) -> np.ndarray:
    """int32[num_steps + 1], descending: round(i T / N) - 1 for i = N .. 0 (-1 = clean)."""
    T, N = int(num_train_steps), int(num_steps)
    if not 1 <= N <= T:
        raise ConfigError(f"{N} sampling steps on a schedule of {T} timesteps: use 1..{T}")
    i = np.arange(N, -1, -1, dtype=np.int64)
    return ((2 * i * T + N) // (2 * N) - 1).astype(np.int32)  # exact round-half-up


def halving_levels(num_train_steps: int, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(student grid of N/2 steps, teacher grid of N steps): one round N -> N/2. The
    N/2 grid is exactly every other level of the N grid (same i T / N, rounded alike)."""
    T, N = int(num_train_steps), int(num_steps)
    if N < 2 or N % 2 or N > T:
        raise ConfigError(f"progressive distillation cannot halve {N} steps on a schedule of "
                          f"{T} timesteps: the step count must be even and at most {T}")
    return levels(T, N // 2), levels(T, N)


def alpha_sigma(schedule: Schedule, t):
    """(alpha_t, sigma_t) = (sqrt(ab_t), sqrt(1 - ab_t)), ab = 1 at t = -1."""
    ab = jnp.where(t >= 0, schedule.alphas_cumprod[jnp.maximum(t, 0)], 1.0)
    return jnp.sqrt(ab), jnp.sqrt(1.0 - ab)


def _b(a, x):
    a = jnp.asarray(a, jnp.float32)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def ddim_step(x0, z_t, a_t, s_t, a_s, s_s):
    """Deterministic DDIM from level t to s given the x0 estimate (eps from z_t and x0)."""
    eps = (z_t - a_t * x0) / s_t
    return a_s * x0 + s_s * eps


def target_x0(z_t, z_end, a_t, s_t, a_end, s_end):
    """x~: the x0 with which one DDIM step from z_t lands on z_end."""
    r = s_end / s_t
    return (z_end - r * z_t) / (a_end - r * a_t)


def teacher_target(x0_fn: Callable, schedule: Schedule, z_t, t_B, t_mid_B, t_end_B):
    """(x~, z_end) for z_t [B, ...]: `x0_fn(z, t_B)` is the teacher's x0 estimate."""
    (a_t, s_t), (a_m, s_m), (a_e, s_e) = (
        tuple(_b(v, z_t) for v in alpha_sigma(schedule, t)) for t in (t_B, t_mid_B, t_end_B))
    z_mid = ddim_step(x0_fn(z_t, t_B), z_t, a_t, s_t, a_m, s_m)
    z_end = ddim_step(x0_fn(z_mid, t_mid_B), z_mid, a_m, s_m, a_e, s_e)
    return target_x0(z_t, z_end, a_t, s_t, a_e, s_e), z_end


def student_steps(num_train_steps: int, num_steps: int, index_B):
    """(t, t', t'') per example for student step `index_B` in [0, N/2) of a round N -> N/2."""
    student, teacher = halving_levels(num_train_steps, num_steps)
    i = jnp.asarray(index_B, jnp.int32)
    return (jnp.asarray(student)[i], jnp.asarray(teacher)[2 * i + 1],
            jnp.asarray(student)[i + 1])


def distill_loss(x0_student, x_target, a_t, s_t):
    """Per-example max(1, SNR_t) * mean squared x-error (truncated SNR weighting)."""
    w = jnp.maximum(1.0, (a_t / s_t) ** 2)
    err = jnp.mean((x0_student - x_target) ** 2, axis=tuple(range(1, x0_student.ndim)))
    return w.reshape(-1) * err


def ddim_on_levels(x0_fn: Callable, schedule: Schedule, grid: np.ndarray, x_T, clip_x0=True):
    """Deterministic DDIM along `grid` (descending levels ending at -1) from noise x_T;
    `x0_fn(z, t_B)` is the model's x0 estimate. Returns the clean sample."""
    def body(z, pair):
        t, s = pair
        t_B = jnp.full((z.shape[0],), t, jnp.int32)
        x0 = x0_fn(z, t_B)
        x0 = jnp.clip(x0, -1.0, 1.0) if clip_x0 else x0
        (a_t, s_t), (a_s, s_s) = alpha_sigma(schedule, t), alpha_sigma(schedule, s)
        return ddim_step(x0, z, a_t, s_t, a_s, s_s), None

    grid = jnp.asarray(grid, jnp.int32)
    z, _ = jax.lax.scan(body, x_T, (grid[:-1], grid[1:]))
    return z
