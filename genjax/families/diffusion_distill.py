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
round): `load_pretrained` places its params (its EMA: the diffusion configs'
init_from_params, what that run's samples were scored with) as teacher AND as the
student's start (and EMA); `resolve_config` takes its model keys (the student keeps
`model.parameterization`; the teacher's goes to `distill.teacher_parameterization`) and
requires the same image shape and a step count the schedule can halve (else one error
line each). Without
init_from a run is an error unless `distill.random_teacher` (the tiny preset, for tests).
The student samples (`sample_images`, steps default N/2) by DDIM on the same grid.

Guidance first (`distill.stage = "guidance"`, Meng et al. 2023 stage 1; the math and the
guidance convention in genjax/guidance_distill.py): from a class/caption-conditional
diffusion run trained with condition dropout, the student (the teacher's U-Net plus a
zero-initialised embedding of the guidance scale g, `model.guidance_input`) learns the
teacher's guided x0, x_u + g (x_c - x_u), at t uniform and g ~ U[distill.guidance_min,
distill.guidance_max]; it starts with the teacher's weights, so as the teacher's
conditional model when both predict the same parameterization (from an eps teacher the
config's v student does not, and still ends better: README's ablation). Progressive
rounds from such a run keep g as an input (copied with the teacher's model keys): teacher
and student see the same drawn g. Its sampler (`genjax.sample --guidance=2`) passes g to
the net: ONE network pass a step; a student without g takes no guidance but 1.

Stated limits: eta = 0 only; one device sampling; g outside the trained range is
extrapolation (not refused).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from genjax import checkpoint as ckpt_lib
from genjax import config_lib, diffusion, guidance_distill, progressive
from genjax.errors import ConfigError, UserError
from genjax.families import diffusion as base
from genjax.families import image_seam, lora

TEACHER = "teacher"  # model_state key of the frozen teacher params
GUIDANCE = "guidance_embed"  # the student's params the teacher has not (genjax/models/unet.py)
STAGES = ("progressive", "guidance")

example_batch = base.example_batch
make_data = base.make_data
conditioning = base.conditioning
sample_labels = base.sample_labels
throughput_unit = base.throughput_unit
likelihood_metrics = base.likelihood_metrics
runtime_keys = base.runtime_keys
sample_options = ("guidance", "steps")


def _stage(config) -> str:
    """distill.stage (runs saved before the key existed: progressive)."""
    return config.distill.get("stage", "progressive")


def _takes_guidance(config) -> bool:
    """The guidance stage's student, and progressive rounds from it, take g as input."""
    return _stage(config) == "guidance" or bool(config.model.get("guidance_input", False))


def make_model(config):
    return base.make_model(config).clone(guidance_input=_takes_guidance(config))


def init_variables(model, rng, batch, config) -> dict:
    """The student's variables; the teacher starts as the same params minus the guidance
    embedding (random_teacher)."""
    b, guide = len(batch["label"]), _stage(config) == "guidance"
    init_key, noise_key = jax.random.split(rng) if guide else (rng, None)
    g = jnp.ones((b,), jnp.float32) if model.guidance_input else None
    variables = model.init({"params": init_key}, jnp.asarray(batch["image"]),
                           jnp.zeros((b,), jnp.int32), base._labels(batch, config), guidance_B=g)
    params = variables["params"]
    if guide:
        teacher = {k: v for k, v in params.items() if k != GUIDANCE}
        if config.distill.random_teacher:  # replaced by init_from's params otherwise
            teacher = _unzeroed(teacher, noise_key)
            params = {**params, **teacher}
    else:
        teacher = params
    return {**variables, "params": params, TEACHER: jax.tree_util.tree_map(lambda x: x, teacher)}


def _unzeroed(params, rng, scale: float = 0.1):
    """Kernels initialised to zero (the U-Net's output convs) drawn from N(0, scale^2): a
    random teacher whose outputs are all 0 predicts x_c = x_u, and a guidance stage on it
    would have nothing to learn (its loss would be 0 at every step)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(rng, len(leaves))
    return jax.tree_util.tree_unflatten(tree, [
        jnp.where(jnp.all(x == 0), scale * jax.random.normal(k, x.shape, x.dtype), x)
        if x.ndim >= 2 else x for x, k in zip(leaves, keys)])


def _teacher_param(config) -> str:
    return config.distill.teacher_parameterization or config.model.parameterization


def _x0(model, params, parameterization, schedule, guidance_B=None, **kw):
    """x0_fn(z, t_B, labels) of the net; `guidance_B` goes to a net that takes it."""
    def fn(z, t_B, labels):
        out = model.apply({"params": params}, z, t_B, labels, guidance_B=guidance_B,
                          **(kw or {"train": False})).astype(jnp.float32)
        ab = diffusion._b(schedule.alphas_cumprod[t_B], z)
        return diffusion.x0_eps_from_pred(parameterization, out, z, ab)[0]
    return fn


def _progressive_loss(params, model_state, batch, rng, model, config):
    schedule = base.make_schedule(config)
    x0 = batch["image"].astype(jnp.float32)
    w = _takes_guidance(config)
    i_key, n_key, drop_key, *g_key = jax.random.split(rng, 4 if w else 3)
    g = guidance_distill.draw(g_key[0], x0.shape[0], config.distill.guidance_min,
                              config.distill.guidance_max) if w else None
    n = int(config.distill.steps)
    idx = jax.random.randint(i_key, (x0.shape[0],), 0, n // 2)
    t, t_mid, t_end = progressive.student_steps(schedule.num_steps, n, idx)
    z_t = diffusion.q_sample(schedule, x0, t, jax.random.normal(n_key, x0.shape, jnp.float32))
    labels = base._labels(batch, config)
    teacher = _x0(model, model_state[TEACHER], _teacher_param(config), schedule, g)
    x_tilde, _ = progressive.teacher_target(lambda z, tt: teacher(z, tt, labels), schedule,
                                            z_t, t, t_mid, t_end)
    x_tilde = jax.lax.stop_gradient(x_tilde)
    x_hat = _x0(model, params, config.model.parameterization, schedule, g, train=True,
                rngs={"dropout": drop_key})(z_t, t, labels)
    a_t, s_t = progressive.alpha_sigma(schedule, t)
    loss = jnp.mean(progressive.distill_loss(x_hat, x_tilde, a_t, s_t))
    return loss, ({"x_mse": jnp.mean((x_hat - x_tilde) ** 2)}, model_state)


def _guidance_loss(params, model_state, batch, rng, model, config):
    schedule = base.make_schedule(config)
    x0 = batch["image"].astype(jnp.float32)
    t_key, n_key, drop_key, g_key = jax.random.split(rng, 4)
    t = jax.random.randint(t_key, (x0.shape[0],), 0, schedule.num_steps)
    z_t = diffusion.q_sample(schedule, x0, t, jax.random.normal(n_key, x0.shape, jnp.float32))
    g = guidance_distill.draw(g_key, x0.shape[0], config.distill.guidance_min,
                              config.distill.guidance_max)
    teacher = _x0(model.clone(guidance_input=False), model_state[TEACHER],
                  _teacher_param(config), schedule)

    def student(z, t_B, labels, g_B):
        return _x0(model, params, config.model.parameterization, schedule, g_B, train=True,
                   rngs={"dropout": drop_key})(z, t_B, labels)
    loss_B, target = guidance_distill.loss(student, teacher, schedule, z_t, t,
                                           base._labels(batch, config), base._null(config), g)
    return jnp.mean(loss_B), ({"target_rms": jnp.sqrt(jnp.mean(target ** 2))}, model_state)


def loss_fn(params, model_state, batch, rng, *, model, config):
    if _stage(config) == "guidance":
        return _guidance_loss(params, model_state, batch, rng, model, config)
    return _progressive_loss(params, model_state, batch, rng, model, config)


@dataclasses.dataclass(frozen=True)
class AtGuidance:
    """A net that takes g, applied at a fixed g (as the diffusion family's nets are)."""
    inner: Any
    guidance: float = 1.0

    def apply(self, variables, x, t_B, labels=None, **kwargs):
        g = jnp.full(t_B.shape, self.guidance, jnp.float32)
        return self.inner.apply(variables, x, t_B, labels, guidance_B=g, **kwargs)


def eval_fn(params, model_state, batch, *, model, config):
    """The diffusion family's eval; a net that takes g is evaluated at g = 1 (conditional)."""
    model = AtGuidance(model) if _takes_guidance(config) else model
    return base.eval_fn(params, model_state, batch, model=model, config=config)


def param_labels(params, config):
    return None


def _default_steps(config) -> int:
    n = int(config.distill.steps)
    return n if _stage(config) == "guidance" else n // 2


def sample_images(model, params, config, rng, num_samples: int, label=None, guidance=None,
                  steps=None, *, prompt=None, **_) -> jax.Array:
    """float32[N, H, W, C] in [-1, 1]: DDIM on the student's grid (steps default N/2; N
    after the guidance stage). `guidance` (default config.sample.guidance) goes to a net
    that takes it; a net that does not takes none but 1 (the conditional model)."""
    g = float(config.sample.guidance if guidance is None else guidance)
    if not _takes_guidance(config) and g != 1.0:
        raise UserError(f"guidance {g:g}: this student distils the conditional model and has "
                        "no guidance input (distil guidance first: distill.stage=guidance)")
    fn = make_sampler(model, (int(num_samples), *image_seam.image_shape(config)),
                      str(config.model.schedule), int(config.model.timesteps),
                      str(config.model.parameterization), int(steps or _default_steps(config)))
    labels = sample_labels(config, int(num_samples), label, prompt)
    return fn(params, rng, labels, jnp.float32(g) if _takes_guidance(config) else None)


@functools.lru_cache(maxsize=8)
def make_sampler(model, shape, schedule_name, timesteps, parameterization, steps):
    """jit(params, rng, labels, guidance | None): DDIM on progressive.levels, one pass a
    step (a scalar guidance is passed to the net as float32[B])."""
    schedule = diffusion.make_schedule(schedule_name, timesteps)
    grid = progressive.levels(timesteps, steps)

    def run(params, rng, labels, guidance):
        g = None if guidance is None else jnp.full((shape[0],), guidance, jnp.float32)
        x0_fn = _x0(model, params, parameterization, schedule, g)
        x_T = jax.random.normal(rng, shape, jnp.float32)
        z = progressive.ddim_on_levels(lambda z, t: x0_fn(z, t, labels), schedule, grid, x_T)
        return jnp.clip(z, -1.0, 1.0)
    return jax.jit(run)


def merge_params(params, model_state):
    """Inference applies the student alone."""
    return params, {k: v for k, v in model_state.items() if k != TEACHER}


def pretrained_target(abstract_state):
    """What init_from restores: the teacher's params (the student's lack g's embedding)."""
    return abstract_state.model_state[TEACHER]


def load_pretrained(state, src_params, config):
    """init_from: the teacher, frozen, and the student's (and EMA's) starting point (plus
    the student's fresh, zero-output guidance embedding in the guidance stage)."""
    # every leaf its own buffer (the step donates the state: no two leaves may share one)
    copy = lambda: jax.tree_util.tree_map(jnp.copy, {**state.params, **src_params})  # noqa: E731
    state = state.replace(params=copy(), model_state={**state.model_state, TEACHER: src_params})
    if jax.tree_util.tree_leaves(state.ema_params):
        state = state.replace(ema_params=copy())
    return state


def _check_teacher(config, saved) -> None:
    """The teacher run a stage can start from (one error line otherwise)."""
    kinds = ("diffusion",) if _stage(config) == "guidance" else (
        "diffusion", "diffusion_distill")
    if saved.family not in kinds or saved.lora.rank:
        raise UserError(f"teacher {config.init_from!r} is a {saved.family!r} run: "
                        f"{_stage(config)} distillation needs a {' or '.join(kinds)} "
                        "run (LoRA merged)")
    if _stage(config) == "guidance" and (base.conditioning(saved) == "none"
                                               or not saved.model.label_dropout):
        raise UserError(f"teacher {config.init_from!r} has no unconditional model to guide "
                        "with: guidance distillation needs a conditional run trained with "
                        "model.label_dropout > 0")
    if image_seam.image_shape(saved) != image_seam.image_shape(config):
        raise UserError(f"teacher {config.init_from!r} makes images of shape "
                        f"{image_seam.image_shape(saved)}, this run's data "
                        f"{image_seam.image_shape(config)}")


def _check_guidance_range(config, saved) -> None:
    """A round from a guided student draws g from that run's range: one error line if this
    run names another (its g would be extrapolation for the teacher)."""
    if not config.model.guidance_input or "distill" not in saved:
        return
    mine = (float(config.distill.guidance_min), float(config.distill.guidance_max))
    theirs = (float(saved.distill.guidance_min), float(saved.distill.guidance_max))
    if mine != theirs:
        raise ConfigError(f"distill.guidance_min/max={mine}, but the teacher "
                          f"{config.init_from!r} was trained on g in {theirs}: pass "
                          f"--config.distill.guidance_min={theirs[0]} "
                          f"--config.distill.guidance_max={theirs[1]}")


def resolve_config(config, data) -> None:
    """The teacher's model keys from its checkpoint; same image shape; N halvable; the
    guidance range and stage valid."""
    if _stage(config) not in STAGES:
        raise ConfigError(f"distill.stage={_stage(config)!r}: choose one of {STAGES}")
    guidance_distill.check_range(config.distill.guidance_min, config.distill.guidance_max)
    lora.refuse(config, "init_from is the teacher, which LoRA would take as its frozen base "
                        "(the teacher would stay random); distil into a full student")
    if config.init_from:
        saved = config_lib.from_saved(ckpt_lib.run_meta(config.init_from)["config"])
        base.resolve_config(config, data)
        _check_teacher(config, saved)
        config.distill.teacher_parameterization = saved.model.parameterization
        for k in config.model:
            if k in saved.model and k not in ("parameterization", "dropout"):
                config.model[k] = saved.model[k]
        config.model.guidance_input = bool(saved.model.get("guidance_input", False))
        _check_guidance_range(config, saved)
    elif not config.distill.random_teacher:
        raise ConfigError(f"{_stage(config)} distillation needs a teacher: "
                          "--config.init_from=TEACHER_WORKDIR (or distill.random_teacher)")
    else:
        base.resolve_config(config, data)
    if _stage(config) == "guidance":
        config.model.guidance_input = True
        progressive.levels(int(config.model.timesteps), int(config.distill.steps))
    else:
        progressive.halving_levels(int(config.model.timesteps), int(config.distill.steps))
