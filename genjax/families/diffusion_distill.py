r"""Progressive distillation of a diffusion sampler (Salimans & Ho 2022), one round a run.

  python -m genjax.train --config=configs/diffusion_fmnist.py:cpu --workdir=runs/dm
  python -m genjax.train --config=configs/diffusion_distill_fmnist.py:cpu \
      --workdir=runs/dm_32 --config.init_from=runs/dm --config.distill.steps=64
  python -m genjax.train --config=configs/diffusion_distill_fmnist.py:cpu \
      --workdir=runs/dm_16 --config.init_from=runs/dm_32 --config.distill.steps=32  # ...

A round: the teacher samples with `distill.steps` = N DDIM steps on the grid of
genjax/progressive.py, the student learns to take N/2 (it starts as a copy of the teacher
and predicts v). Per example a student step i in [0, N/2) is drawn, z_t = q(x0, t) and the
target x~ makes one DDIM step t -> t'' land on the teacher's two steps t -> t' -> t''
(progressive.teacher_target); the loss is max(1, SNR_t) |x^ - x~|^2. The teacher is frozen
in `model_state["teacher"]`; `config.init_from` names it (a diffusion run or the previous
round): `load_pretrained` places its params as teacher AND as the student's start (and
EMA); `resolve_config` takes its model keys (the student keeps `model.parameterization`;
the teacher's goes to `distill.teacher_parameterization`) and requires the same image
shape and a step count the schedule can halve (else one error line each). Without
init_from a run is an error unless `distill.random_teacher` (the tiny preset, for tests).
The student samples (`sample_images`, steps default N/2) by DDIM on the same grid.

Stated limits: the teacher is evaluated on the true label without guidance, so the student
distils the conditional model (guided sampling of the student is not the guided teacher:
that needs guidance distillation first, not built); eta = 0 only; one device sampling.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from genjax import checkpoint as ckpt_lib
from genjax import config_lib, diffusion, progressive
from genjax.errors import ConfigError, UserError
from genjax.families import diffusion as base
from genjax.families import image_seam

TEACHER = "teacher"  # model_state key of the frozen teacher params

make_model = base.make_model
example_batch = base.example_batch
make_data = base.make_data
eval_fn = base.eval_fn
conditioning = base.conditioning
sample_labels = base.sample_labels
throughput_unit = base.throughput_unit
likelihood_metrics = base.likelihood_metrics
runtime_keys = base.runtime_keys
sample_options = ("steps",)


def init_variables(model, rng, batch, config) -> dict:
    """The student's variables; the teacher starts as the same params (random_teacher)."""
    variables = base.init_variables(model, rng, batch, config)
    return {**variables, TEACHER: jax.tree_util.tree_map(lambda x: x, variables["params"])}


def _teacher_param(config) -> str:
    return config.distill.teacher_parameterization or config.model.parameterization


def _x0(model, params, parameterization, schedule, labels):
    def fn(z, t_B):
        out = model.apply({"params": params}, z, t_B, labels, train=False).astype(jnp.float32)
        ab = diffusion._b(schedule.alphas_cumprod[t_B], z)
        return diffusion.x0_eps_from_pred(parameterization, out, z, ab)[0]
    return fn


def loss_fn(params, model_state, batch, rng, *, model, config):
    schedule = base.make_schedule(config)
    x0 = batch["image"].astype(jnp.float32)
    i_key, n_key, drop_key = jax.random.split(rng, 3)
    n = int(config.distill.steps)
    idx = jax.random.randint(i_key, (x0.shape[0],), 0, n // 2)
    t, t_mid, t_end = progressive.student_steps(schedule.num_steps, n, idx)
    z_t = diffusion.q_sample(schedule, x0, t, jax.random.normal(n_key, x0.shape, jnp.float32))
    labels = base._labels(batch, config)
    teacher = _x0(model, model_state[TEACHER], _teacher_param(config), schedule, labels)
    x_tilde, _ = progressive.teacher_target(teacher, schedule, z_t, t, t_mid, t_end)
    x_tilde = jax.lax.stop_gradient(x_tilde)
    out = model.apply({"params": params}, z_t, t, labels, train=True, rngs={"dropout": drop_key})
    ab = diffusion._b(schedule.alphas_cumprod[t], z_t)
    x_hat = diffusion.x0_eps_from_pred(config.model.parameterization,
                                       out.astype(jnp.float32), z_t, ab)[0]
    a_t, s_t = progressive.alpha_sigma(schedule, t)
    loss = jnp.mean(progressive.distill_loss(x_hat, x_tilde, a_t, s_t))
    return loss, ({"x_mse": jnp.mean((x_hat - x_tilde) ** 2)}, model_state)


def param_labels(params, config):
    return None


def sample_images(model, params, config, rng, num_samples: int, label=None, steps=None, *,
                  prompt=None, **_) -> jax.Array:
    """float32[N, H, W, C] in [-1, 1]: DDIM on the student's grid (steps default N/2)."""
    fn = make_sampler(model, (int(num_samples), *image_seam.image_shape(config)),
                      str(config.model.schedule), int(config.model.timesteps),
                      str(config.model.parameterization),
                      int(steps or int(config.distill.steps) // 2))
    return fn(params, rng, sample_labels(config, int(num_samples), label, prompt))


@functools.lru_cache(maxsize=8)
def make_sampler(model, shape, schedule_name, timesteps, parameterization, steps):
    schedule = diffusion.make_schedule(schedule_name, timesteps)
    grid = progressive.levels(timesteps, steps)

    def run(params, rng, labels):
        x_T = jax.random.normal(rng, shape, jnp.float32)
        z = progressive.ddim_on_levels(_x0(model, params, parameterization, schedule, labels),
                                       schedule, grid, x_T)
        return jnp.clip(z, -1.0, 1.0)
    return jax.jit(run)


def merge_params(params, model_state):
    """Inference applies the student alone."""
    return params, {k: v for k, v in model_state.items() if k != TEACHER}


def pretrained_target(abstract_state):
    return abstract_state.params


def load_pretrained(state, src_params, config):
    """init_from: the teacher, frozen, and the student's (and EMA's) starting point."""
    copy = lambda: jax.tree_util.tree_map(jnp.copy, src_params)  # noqa: E731
    state = state.replace(params=src_params, model_state={**state.model_state, TEACHER: copy()})
    if jax.tree_util.tree_leaves(state.ema_params):
        state = state.replace(ema_params=copy())
    return state


def resolve_config(config, data) -> None:
    """The teacher's model keys from its checkpoint; same image shape; N halvable."""
    if config.init_from:
        saved = config_lib.from_saved(ckpt_lib.run_meta(config.init_from)["config"])
        if saved.family not in ("diffusion", "diffusion_distill") or saved.lora.rank:
            raise UserError(f"teacher {config.init_from!r} is a {saved.family!r} run: "
                            "progressive distillation needs a diffusion run (LoRA merged)")
        base.resolve_config(config, data)
        if image_seam.image_shape(saved) != image_seam.image_shape(config):
            raise UserError(f"teacher {config.init_from!r} makes images of shape "
                            f"{image_seam.image_shape(saved)}, this run's data "
                            f"{image_seam.image_shape(config)}")
        config.distill.teacher_parameterization = saved.model.parameterization
        for k in config.model:
            if k in saved.model and k not in ("parameterization", "dropout"):
                config.model[k] = saved.model[k]
    elif not config.distill.random_teacher:
        raise ConfigError("progressive distillation needs a teacher: "
                          "--config.init_from=TEACHER_WORKDIR (or distill.random_teacher)")
    else:
        base.resolve_config(config, data)
    progressive.halving_levels(int(config.model.timesteps), int(config.distill.steps))
