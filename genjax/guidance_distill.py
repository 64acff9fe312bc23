r"""Guidance distillation (Meng et al. 2023, "On distillation of guided diffusion models",
stage 1): the math.

A classifier-free-guided sampler pays two network passes a step, conditional and null.
A student that takes the guidance scale as an input learns the guided teacher in one:

  x~_g(z_t) = x_u + g (x_c - x_u),   loss = max(1, SNR_t) |x^(z_t, g) - x~_g(z_t)|^2

with x_c, x_u the teacher's x0 estimates with the label and with the null label, g drawn
uniformly from [guidance_min, guidance_max] per example, t uniform over the schedule,
and the truncated-SNR weighting of genjax/progressive.py. Convention: genjax's
`guidance` g of genjax/diffusion.py `guided` (1 conditional, 0 unconditional, > 1
guided), i.e. g = 1 + w for the paper's w in x~_w = (1 + w) x_c - w x_u. Guidance there
mixes raw network outputs; every parameterisation's x0 is affine in the output at a fixed
z_t with coefficients that sum to one, so mixing x0 estimates is the same mix.
The family that trains it: genjax/families/diffusion_distill.py (distill.stage =
"guidance"); its progressive rounds keep g as the student's input.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from genjax import progressive
from genjax.diffusion import Schedule
from genjax.errors import ConfigError


def check_range(lo: float, hi: float) -> None:
    """One error line unless 0 <= guidance_min <= guidance_max."""
    if not 0.0 <= float(lo) <= float(hi):
        raise ConfigError(
            f"distill.guidance_min={lo:g}, distill.guidance_max={hi:g}: need 0 <= min <= max "
            "(genjax's guidance: 0 unconditional, 1 conditional, g = 1 + w of Meng et al.)")


def draw(rng, batch_size: int, lo: float, hi: float):
    """float32[B]: g uniform in [lo, hi]."""
    return jax.random.uniform(rng, (batch_size,), jnp.float32, float(lo), float(hi))


def _b(a, x):
    return jnp.asarray(a, jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))


def guided_x0(x0_fn: Callable, z, t_B, labels, null_label, guidance_B):
    """x_u + g (x_c - x_u) of a teacher `x0_fn(z, t_B, labels)`: one call on 2B examples
    (labels, then the null label), as genjax/diffusion.py `guided` batches them."""
    null = jnp.full_like(labels, null_label)
    both = x0_fn(jnp.concatenate([z, z]), jnp.concatenate([t_B, t_B]),
                 jnp.concatenate([labels, null]))
    cond, uncond = jnp.split(both, 2)
    return uncond + _b(guidance_B, z) * (cond - uncond)


def loss(student_x0_fn: Callable, teacher_x0_fn: Callable, schedule: Schedule, z_t, t_B,
         labels, null_label, guidance_B):
    """(per-example loss [B], target x~_g): `student_x0_fn(z, t_B, labels, guidance_B)`,
    `teacher_x0_fn(z, t_B, labels)`; the target is a constant (stop_gradient)."""
    target = jax.lax.stop_gradient(
        guided_x0(teacher_x0_fn, z_t, t_B, labels, null_label, guidance_B))
    x_hat = student_x0_fn(z_t, t_B, labels, guidance_B)
    a_t, s_t = progressive.alpha_sigma(schedule, t_B)
    return progressive.distill_loss(x_hat, target, a_t, s_t), target
