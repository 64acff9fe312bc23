"""Guidance distillation (genjax/guidance_distill.py; the diffusion_distill family's
`distill.stage = "guidance"`) against independent answers: a fresh student equals its
teacher's conditional model exactly; the target is Meng et al.'s (1 + w) x_c - w x_u from
two separate teacher calls (w = g - 1 in genjax's guidance convention); an oracle student
has loss 0; the step-0 loss is (g - 1)^2 |x_c - x_u|^2 weighted; the sampler makes ONE
network pass a step; progressive rounds from it keep g; bad ranges are one error line.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import assemble, diffusion, guidance_distill, progressive, sharding
from genjax import step as step_lib
from genjax.errors import ConfigError
from genjax.families.image_seam import image_shape
from genjax.families import diffusion_distill as family
from tests.families import run_config, tiny_config, one_error_line
from tests.subproc import assert_one_line_error, run_module
from tests.test_families import GOLDEN_LOSS, random_batch

SPEC = "diffusion_distill+guidance"


@pytest.fixture(scope="module")
def fresh():
    """(parts, state, batch) of the tiny guidance stage at step 0 (random teacher)."""
    config = tiny_config(SPEC)
    parts = assemble.assemble(config, sharding.make_mesh(config.mesh))
    return parts, jax.device_get(parts.init_state()), random_batch(parts)


def _teacher_x0(parts, state):
    config = parts.config
    return family._x0(parts.model.clone(guidance_input=False), state.model_state["teacher"],
                      family._teacher_param(config), family.base.make_schedule(config))


def _z_t(parts, batch, t_B):
    schedule = family.base.make_schedule(parts.config)
    x0 = jnp.asarray(batch["image"])
    noise = jax.random.normal(jax.random.PRNGKey(3), x0.shape)
    return schedule, diffusion.q_sample(schedule, x0, t_B, noise)


def test_a_fresh_student_is_exactly_the_teachers_conditional_model(fresh):
    parts, state, batch = fresh
    t_B = jnp.arange(len(batch["label"])) * 11
    _, z = _z_t(parts, batch, t_B)
    labels = jnp.asarray(batch["label"])
    teacher = parts.model.clone(guidance_input=False).apply(
        {"params": state.model_state["teacher"]}, z, t_B, labels)
    assert float(jnp.std(teacher)) > 0.01  # the random teacher is not the zero function
    for g in (1.0, 3.0):  # w = 0 (the conditional model) and any other: zero-init embedding
        student = parts.model.apply({"params": state.params}, z, t_B, labels,
                                    guidance_B=jnp.full(t_B.shape, g))
        np.testing.assert_array_equal(np.asarray(student), np.asarray(teacher))


def test_target_is_one_plus_w_times_conditional_minus_w_times_unconditional(fresh):
    parts, state, batch = fresh
    t_B = jnp.arange(len(batch["label"])) * 11
    _, z = _z_t(parts, batch, t_B)
    labels = jnp.asarray(batch["label"])
    g_B = jnp.linspace(0.0, 6.0, len(labels))
    x0 = _teacher_x0(parts, state)
    got = guidance_distill.guided_x0(x0, z, t_B, labels, 10, g_B)
    # two separate teacher calls, the label and the null class (10 of 10 classes)
    x_c, x_u = x0(z, t_B, labels), x0(z, t_B, jnp.full_like(labels, 10))
    w = (g_B - 1.0)[:, None, None, None]  # Meng et al.'s w: genjax's g = 1 + w
    np.testing.assert_allclose(got, (1 + w) * x_c - w * x_u, atol=2e-5)
    assert float(jnp.max(jnp.abs(x_c - x_u))) > 0.01  # the two calls differ: a real check


def test_an_oracle_student_has_loss_zero_and_the_fresh_one_the_derived_loss(fresh):
    parts, state, batch = fresh
    t_B = jnp.arange(len(batch["label"])) * 11
    schedule, z = _z_t(parts, batch, t_B)
    labels = jnp.asarray(batch["label"])
    g_B = jnp.linspace(1.0, 5.0, len(labels))
    x0 = _teacher_x0(parts, state)
    oracle = lambda z, t, y, g: guidance_distill.guided_x0(x0, z, t, y, 10, g)  # noqa: E731
    loss_B, _ = guidance_distill.loss(oracle, x0, schedule, z, t_B, labels, 10, g_B)
    np.testing.assert_array_equal(np.asarray(loss_B), 0.0)
    # the fresh student is x_c: loss = max(1, SNR) (g - 1)^2 mean (x_c - x_u)^2, derived
    fresh_student = lambda z, t, y, g: x0(z, t, y)  # noqa: E731
    loss_B, _ = guidance_distill.loss(fresh_student, x0, schedule, z, t_B, labels, 10, g_B)
    a, s = progressive.alpha_sigma(schedule, t_B)
    mse = jnp.mean((x0(z, t_B, labels) - x0(z, t_B, jnp.full_like(labels, 10))) ** 2,
                   axis=(1, 2, 3))
    np.testing.assert_allclose(loss_B, jnp.maximum(1.0, (a / s) ** 2) * (g_B - 1) ** 2 * mse,
                               rtol=1e-4, atol=1e-7)


def test_the_family_loss_at_step_0_is_the_derived_golden_one(fresh):
    """The golden first-step loss of tests/test_families.py, derived: the step-0 student
    is x_c (zero-init embedding, no dropout in the tiny variant), so the loss is
    mean max(1, SNR_t) (g - 1)^2 |x_c - x_u|^2 at the t, g and noise the loss draws from
    the step's key (drawn here the same way) with x_c, x_u from two teacher calls."""
    parts, state, batch = fresh
    config = parts.config
    loss, _ = family.loss_fn(state.params, state.model_state, batch, step_lib.step_key(state),
                             model=parts.model, config=config)
    schedule = family.base.make_schedule(config)
    x0 = jnp.asarray(batch["image"])
    t_key, n_key, _, g_key = jax.random.split(step_lib.step_key(state), 4)
    t_B = jax.random.randint(t_key, (len(x0),), 0, schedule.num_steps)
    z = diffusion.q_sample(schedule, x0, t_B, jax.random.normal(n_key, x0.shape))
    g_B = jax.random.uniform(g_key, (len(x0),), minval=1.0, maxval=5.0)
    teacher, labels = _teacher_x0(parts, state), jnp.asarray(batch["label"])
    mse = jnp.mean((teacher(z, t_B, labels) - teacher(z, t_B, jnp.full_like(labels, 10))) ** 2,
                   axis=(1, 2, 3))
    a, s = progressive.alpha_sigma(schedule, t_B)
    want = float(jnp.mean(jnp.maximum(1.0, (a / s) ** 2) * (g_B - 1) ** 2 * mse))
    np.testing.assert_allclose(float(loss), want, rtol=1e-4)
    np.testing.assert_allclose(GOLDEN_LOSS[SPEC], want, rtol=1e-4)


def _conv_batches(jaxpr) -> list[int]:
    """Batch size of every convolution in a jaxpr and the jaxprs inside it (scan, jit)."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            out.append(int(eqn.invars[0].aval.shape[0]))
        for v in eqn.params.values():
            for sub in (v if isinstance(v, (tuple, list)) else (v,)):
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    out += _conv_batches(getattr(inner, "jaxpr", inner))
    return out


def test_the_students_guided_sampler_makes_one_network_pass_per_step(fresh):
    parts, state, _ = fresh
    c, n = parts.config, 3
    shape, labels = (n, *image_shape(c)), jnp.arange(n, dtype=jnp.int32)
    one_pass = _conv_batches(jax.make_jaxpr(lambda p: parts.model.apply(
        {"params": p}, jnp.zeros(shape), jnp.zeros((n,), jnp.int32), labels,
        guidance_B=jnp.ones((n,))))(state.params).jaxpr)
    fn = family.make_sampler(parts.model, shape, str(c.model.schedule),
                             int(c.model.timesteps), str(c.model.parameterization), 4)
    got = _conv_batches(jax.make_jaxpr(fn)(state.params, jax.random.PRNGKey(0), labels,
                                           jnp.float32(2.0)).jaxpr)
    assert got == one_pass and set(got) == {n}  # the scan's body: one U-Net on n images
    # the teacher's guided sampler, counted alike: one U-Net on 2n (label and null)
    teacher = family.base.make_sampler(
        parts.model.clone(guidance_input=False), "ddim", 4, 0.0, 2.0, shape,
        str(c.model.schedule), int(c.model.timesteps), "eps", "small", 10, None, ())
    assert set(_conv_batches(jax.make_jaxpr(teacher)(
        state.model_state["teacher"], jax.random.PRNGKey(0), labels).jaxpr)) == {2 * n}


@pytest.mark.parametrize("lo,hi", [(3.0, 1.0), (-1.0, 2.0)])
def test_a_bad_guidance_range_is_one_error_line_and_writes_nothing(tmp_path, lo, hi):
    from genjax import train
    config = run_config(SPEC)
    config.unlock()
    config.distill.guidance_min, config.distill.guidance_max = lo, hi
    config.lock()
    with one_error_line(ConfigError, match="need 0 <= min <= max"):
        train.train(config, str(tmp_path / "w"))
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_guidance_from_a_run_then_a_progressive_round_keeps_g_and_samples_in_one_pass(
        tiny_run, tmp_path):
    from genjax import inference, train
    # stage 1 from a real diffusion run (eps, label dropout 0.1), lr 0: the student stays
    config = run_config(SPEC)
    config.unlock()
    config.update_from_flattened_dict({"init_from": str(tiny_run("diffusion")),
                                       "total_steps": 1, "optim.lr": 0.0,
                                       "distill.random_teacher": False})
    config.lock()
    train.train(config, str(tmp_path / "w"))
    w = inference.load(str(tmp_path / "w"), which="raw")
    # the teacher is the run's EMA, what its samples and scores use (init_from_params)
    teacher = inference.load(str(tiny_run("diffusion")), which="ema")
    t_B, labels = jnp.asarray([5, 50]), jnp.asarray([1, 2])
    z = jax.random.normal(jax.random.PRNGKey(0), (2, *image_shape(w.config)))
    want = teacher.model.apply({"params": teacher.params}, z, t_B, labels)
    got = w.model.apply({"params": w.params}, z, t_B, labels, guidance_B=jnp.ones(2))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))  # w = 0: x_c exactly
    # ... read as the config's v, the teacher's eps kept for its own calls (README: an eps
    # student, which starts as the teacher's function, measured worse)
    assert (w.config.model.parameterization, w.config.distill.teacher_parameterization) == (
        "v", teacher.config.model.parameterization) == ("v", "eps")
    # a progressive round from it: the student and its teacher take g
    config = run_config("diffusion_distill")
    config.unlock()
    config.update_from_flattened_dict({"init_from": str(tmp_path / "w"), "total_steps": 1,
                                       "distill.random_teacher": False})
    config.lock()
    train.train(config, str(tmp_path / "r"))
    other = config.copy_and_resolve_references()  # another g range than the teacher's
    other.unlock()
    other.distill.guidance_max = 4.0
    with one_error_line(ConfigError, match=r"trained on g in \(1.0, 5.0\): pass"):
        train.train(other, str(tmp_path / "r2"))
    assert not (tmp_path / "r2" / "checkpoints").exists()
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["model"]["guidance_input"] is True
    r = inference.load(str(tmp_path / "r"))
    assert "guidance_embed" in r.params
    # its sampler takes g (the command line's --guidance on such a student:
    # test_the_guided_student_samples_by_the_command_line)
    images = family.sample_images(r.model, r.params, r.config, jax.random.PRNGKey(0), 2,
                                  guidance=2.0)
    assert images.shape == (2, *image_shape(r.config))
    assert np.all(np.isfinite(images)) and float(jnp.max(jnp.abs(images))) <= 1.0


def test_a_student_without_g_refuses_guidance_in_one_line(tiny_run):
    assert_one_line_error(run_module("genjax.sample", f"--workdir={tiny_run('diffusion_distill')}",
                                     "--guidance=2", "--num_samples=2"),
                          "no guidance input")


def test_the_guided_student_samples_by_the_command_line(tiny_run, tmp_path):
    from genjax import inference
    proc = run_module("genjax.sample", f"--workdir={tiny_run(SPEC)}", "--guidance=2",
                      "--num_samples=2", f"--out={tmp_path / 's.png'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = inference.load(str(tiny_run(SPEC)))
    images = family.sample_images(loaded.model, loaded.params, loaded.config,
                                  jax.random.PRNGKey(0), 2, guidance=2.0)
    assert images.shape == (2, *image_shape(loaded.config))
    assert float(jnp.max(jnp.abs(images))) <= 1.0
