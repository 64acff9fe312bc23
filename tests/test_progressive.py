"""Progressive distillation targets (genjax/progressive.py) against their defining
properties: one student DDIM step with the target lands on the teacher's two-step result;
an oracle teacher (returns the true x0) gives target = x0; grids halve; bad step counts fail;
the family's loss with teacher and student apart equals the paper's, recomputed in numpy.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import diffusion, progressive
from genjax.errors import ConfigError
from tests.families import one_error_line

T = 64


@pytest.fixture(scope="module")
def setup():
    schedule = diffusion.make_schedule("cosine", T)
    rng = np.random.default_rng(0)
    x0 = jnp.asarray(rng.uniform(-1, 1, (8, 4, 4, 1)), jnp.float32)
    eps = jnp.asarray(rng.standard_normal(x0.shape), jnp.float32)
    idx = jnp.asarray(np.arange(8) % 4)  # every student step of the round 8 -> 4, incl. the last
    t, t_mid, t_end = progressive.student_steps(T, 8, idx)
    a_t, s_t = progressive.alpha_sigma(schedule, t)
    z_t = a_t[:, None, None, None] * x0 + s_t[:, None, None, None] * eps
    return schedule, x0, z_t, t, t_mid, t_end


def teacher(z, t):  # any nonlinear x0 estimate
    return jnp.tanh(0.8 * z + 0.01 * t[:, None, None, None].astype(jnp.float32))


def test_one_ddim_step_with_the_target_lands_on_the_teachers_two_step_result(setup):
    schedule, _, z_t, t, t_mid, t_end = setup
    x_tilde, z_end = progressive.teacher_target(teacher, schedule, z_t, t, t_mid, t_end)
    b = lambda v: v[:, None, None, None]  # noqa: E731
    a_t, s_t = progressive.alpha_sigma(schedule, t)
    a_e, s_e = progressive.alpha_sigma(schedule, t_end)
    # the student's step, written out here: eps from z_t and x~, then DDIM to t''
    eps = (z_t - b(a_t) * x_tilde) / b(s_t)
    np.testing.assert_allclose(b(a_e) * x_tilde + b(s_e) * eps, z_end, atol=1e-5)
    # and the teacher's two steps landed on the grid's t'' after passing its t'
    t, t_mid, t_end = (np.asarray(x) for x in (t, t_mid, t_end))
    assert np.all(t > t_mid) and np.all(t_mid > t_end)


def test_an_oracle_teacher_gives_the_true_x0_and_the_swapped_formula_does_not(setup):
    schedule, x0, z_t, t, t_mid, t_end = setup
    x_tilde, z_end = progressive.teacher_target(lambda z, tt: x0, schedule, z_t, t, t_mid, t_end)
    np.testing.assert_allclose(x_tilde, x0, atol=1e-5)
    # the t'/t'' swap (diffusers PR #1010): sigma/alpha of the midpoint with z of the end
    b = lambda v: v[:, None, None, None]  # noqa: E731
    a_t, s_t = progressive.alpha_sigma(schedule, t)
    a_m, s_m = progressive.alpha_sigma(schedule, t_mid)
    swapped = progressive.target_x0(z_t, z_end, b(a_t), b(s_t), b(a_m), b(s_m))
    assert float(jnp.max(jnp.abs(swapped - x0))) > 0.05


def test_grids_halve_exactly_and_end_at_clean_data():
    for T in (1000, 1024, 100):
        n = 64
        while n > 2:  # 64 -> 32 -> ... -> 2
            student, teacher_grid = progressive.halving_levels(T, n)
            np.testing.assert_array_equal(student, teacher_grid[::2])
            want = np.round(np.arange(n, -1, -1) * T / n + 1e-9) - 1  # round half up
            np.testing.assert_array_equal(teacher_grid, want)
            assert teacher_grid[0] == T - 1 and teacher_grid[-1] == -1
            assert np.all(np.diff(teacher_grid) < 0)
            n //= 2


@pytest.mark.parametrize("steps,timesteps", [(3, 64), (1, 64), (5, 1000), (128, 64)])
def test_a_step_count_the_schedule_cannot_halve_is_one_error_line(steps, timesteps):
    with one_error_line(ConfigError, match="cannot halve"):
        progressive.halving_levels(timesteps, steps)


def test_loss_weight_is_truncated_snr():
    x = jnp.zeros((2, 3)); y = jnp.ones((2, 3))  # noqa: E702
    a = jnp.asarray([0.6, 0.99]); s = jnp.sqrt(1 - a ** 2)  # noqa: E702
    want = np.maximum(1.0, np.asarray(a) ** 2 / np.asarray(s) ** 2)
    np.testing.assert_allclose(progressive.distill_loss(x, y, a, s), want, rtol=1e-5)


# ---------------------------------------------------------------- the family (one round)
def _distill_config(teacher_dir, **overrides):
    from tests.families import run_config
    config = run_config("diffusion_distill")
    config.unlock()
    config.update_from_flattened_dict({"init_from": str(teacher_dir), "total_steps": 2,
                                       "distill.random_teacher": False, **overrides})
    config.lock()
    return config


def test_a_round_starts_the_student_as_the_frozen_teacher_and_samples_on_its_grid(tiny_run,
                                                                                   tmp_path):
    from genjax import assemble, config_lib, sharding, train
    from genjax.checkpoint import Checkpointer
    from genjax.families import diffusion_distill
    teacher_dir = tiny_run("diffusion")  # an eps-prediction teacher
    config = _distill_config(teacher_dir, **{"optim.lr": 0.0})  # lr 0: the student stays put
    train.train(config, str(tmp_path))
    src = Checkpointer(str(teacher_dir), read_only=True)
    meta = src.read_meta(src.latest_step())
    saved = config_lib.from_saved(
        Checkpointer(str(tmp_path), read_only=True).read_meta(2)["config"])
    assert saved.distill.teacher_parameterization == meta["config"]["model"]["parameterization"]
    assert saved.model.parameterization == "v"
    t_parts, s_parts = (assemble.assemble(c, sharding.make_mesh(c.mesh)) for c in
                        (config_lib.from_saved(meta["config"]), saved))
    want, _, _ = src.restore(src.latest_step(), t_parts.abstract_state)
    got, _, _ = Checkpointer(str(tmp_path), read_only=True).restore(2, s_parts.abstract_state)
    # teacher and student start: the run's EMA params (the diffusion configs'
    # init_from_params), which its samples were scored with, not its raw ones
    assert not all(np.array_equal(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(want.params), jax.tree_util.tree_leaves(want.ema_params)))
    for a, b, c in zip(jax.tree_util.tree_leaves(want.ema_params), jax.tree_util.tree_leaves(
            got.model_state["teacher"]), jax.tree_util.tree_leaves(got.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    images = diffusion_distill.sample_images(s_parts.model, got.params, saved,
                                             jax.random.PRNGKey(0), 2)
    size = int(saved.data.image_size)
    assert images.shape == (2, size, size, int(saved.data.channels))
    assert np.all(np.abs(np.asarray(images)) <= 1)


@pytest.mark.parametrize("overrides,needle", [
    ({"distill.steps": 3}, "cannot halve 3 steps"),
    ({"data.image_size": 48}, "makes images of shape"),  # padded to 48, teacher 32
    # LoRA would take init_from (the teacher) as its frozen base: the teacher stays random
    ({"lora.rank": 4, "lora.alpha": 8.0, "optim.ema_decay": 0.0},
     "lora.rank=4 with diffusion_distill: init_from is the teacher")])
def test_bad_rounds_are_one_error_line_and_write_nothing(tiny_run, tmp_path, overrides, needle):
    from genjax import train
    from genjax.errors import UserError
    work = tmp_path / "w"
    with one_error_line((ConfigError, UserError), match=needle):
        train.train(_distill_config(tiny_run("diffusion"), **overrides), str(work))
    assert not (work / "checkpoints").exists()


def test_the_family_loss_of_a_moved_student_is_the_papers_formula_in_numpy():
    """Teacher and student apart (both moved off the init), no dropout: the family's loss
    equals Salimans & Ho's recomputed in float64 numpy at the step key's draws (student
    step i, noise): grids round(k T / N) - 1, z_t = alpha_t x0 + sigma_t eps, the
    teacher's two DDIM steps t -> t' -> t'' from its v-predictions (x0 = alpha z -
    sigma v), the x~ that one step t -> t'' needs, and the loss
    mean_b max(1, alpha_t^2 / sigma_t^2) mean_pixels (x0_student - x~)^2."""
    from flax import linen as nn
    from genjax.families import diffusion_distill as family
    from tests.families import tiny_config
    from tests.test_diffusion_dpo import cosine_alphas_cumprod
    from tests.test_dpo import moved
    config = tiny_config("diffusion_distill", **{"model.dropout": 0.0})
    assert (config.model.parameterization, config.model.schedule) == ("v", "cosine")
    assert config.distill.teacher_parameterization in ("", "v")  # "": the student's
    model, rng = family.make_model(config), np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.uniform(-1, 1, (6, 32, 32, 1)), jnp.float32),
             "label": jnp.arange(6, dtype=jnp.int32)}
    v = nn.meta.unbox(family.init_variables(model, jax.random.key(0), batch, config))
    student, teacher = moved(v["params"], seed=1, scale=0.02), moved(v["params"], seed=2,
                                                                     scale=0.02)
    loss, _ = family.loss_fn(student, {"teacher": teacher}, batch, jax.random.key(4),
                             model=model, config=config)
    # the step's draws, as the family takes them from its key
    i_key, n_key, _ = jax.random.split(jax.random.key(4), 3)
    T, N, B = int(config.model.timesteps), int(config.distill.steps), 6
    idx = np.asarray(jax.random.randint(i_key, (B,), 0, N // 2))
    noise = np.asarray(jax.random.normal(n_key, (B, 32, 32, 1)), np.float64)
    grid = lambda n: np.floor(np.arange(n, -1, -1) * T / n + 0.5).astype(int) - 1  # noqa
    t, t_mid, t_end = grid(N // 2)[idx], grid(N)[2 * idx + 1], grid(N // 2)[idx + 1]
    ab = np.append(cosine_alphas_cumprod(T), 1.0)  # ab[-1] = 1: the clean end
    a, s = (lambda tt: np.sqrt(ab[tt])[:, None, None, None],
            lambda tt: np.sqrt(1 - ab[tt])[:, None, None, None])

    def x0_of(params, z, tt):  # v-prediction -> x0
        out = model.apply({"params": params}, jnp.asarray(z, jnp.float32), jnp.asarray(tt),
                          batch["label"], train=False)
        return a(tt) * z - s(tt) * np.asarray(out, np.float64)

    def ddim(x0, z, tt, ss):
        return a(ss) * x0 + s(ss) * (z - a(tt) * x0) / s(tt)
    x0 = np.asarray(batch["image"], np.float64)
    z_t = a(t) * x0 + s(t) * noise
    z_mid = ddim(x0_of(teacher, z_t, t), z_t, t, t_mid)
    z_end = ddim(x0_of(teacher, z_mid, t_mid), z_mid, t_mid, t_end)
    r = s(t_end) / s(t)
    x_tilde = (z_end - r * z_t) / (a(t_end) - r * a(t))
    w = np.maximum(1.0, (a(t) / s(t)) ** 2).reshape(-1)
    want = np.mean(w * ((x0_of(student, z_t, t) - x_tilde) ** 2).mean(axis=(1, 2, 3)))
    assert set(idx) == {0, 1} and want > 1e-4  # both student steps, incl. the clean end
    np.testing.assert_allclose(float(loss), want, rtol=2e-4)
