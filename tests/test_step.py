"""Specification of the shared train step (genjax/step.py) on toy objectives."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from genjax import config_lib, optim
from genjax.step import init_state, step_rng, train_step


def toy_config(**optim_overrides):
    c = config_lib.base_config()
    c.total_steps = 100
    c.optim.update(dict(name="sgd", lr=0.1, momentum=0.0, warmup_steps=0, schedule="constant",
                        weight_decay=0.0, clip_norm=0.0))
    c.optim.update(optim_overrides)
    return c


def quadratic_loss(params, model_state, batch, rng):
    loss = jnp.mean((params["w"] * batch["x"] - batch["y"]) ** 2)
    return loss, ({}, model_state)


def make_state(params, tx, ema=False):
    return init_state(params, {}, tx, jax.random.PRNGKey(0), ema=ema)


# Two players, each minimising its own objective; stop_gradient routes gradients:
#   player a (x) minimises (x - y)^2          -> wants x = y
#   player b (y) minimises (y - 2)^2 + x*y    -> d/dy = 2(y - 2) + x
def two_player_loss(params, model_state, batch, rng):
    x, y = params["a"]["x"], params["b"]["y"]
    loss_a = (x - jax.lax.stop_gradient(y)) ** 2
    loss_b = (y - 2.0) ** 2 + jax.lax.stop_gradient(x) * y
    return loss_a + loss_b, ({"loss_a": loss_a, "loss_b": loss_b}, model_state)


LABELS = {"a": {"x": "a"}, "b": {"y": "b"}}
PARAMS = {"a": {"x": jnp.array(1.0)}, "b": {"y": jnp.array(0.0)}}


def test_each_group_gets_only_its_own_gradient():
    config = toy_config()
    tx = optim.make_optimizer(config, LABELS)
    state = make_state(PARAMS, tx)
    new, _ = train_step(state, {}, loss_fn=two_player_loss, tx=tx, labels=LABELS)
    # SGD with lr 0.1: x -= 0.1 * 2(x - y) = 1 - 0.2; y -= 0.1 * (2(y - 2) + x) = 0 + 0.3
    np.testing.assert_allclose(new.params["a"]["x"], 0.8, rtol=1e-6)
    np.testing.assert_allclose(new.params["b"]["y"], 0.3, rtol=1e-6)


def test_two_players_reach_their_equilibrium():
    config = toy_config()
    tx = optim.make_optimizer(config, LABELS)
    state = make_state(PARAMS, tx)
    step = jax.jit(lambda s: train_step(s, {}, loss_fn=two_player_loss, tx=tx, labels=LABELS))
    for _ in range(300):
        state, _ = step(state)
    # equilibrium: x = y and 2(y - 2) + x = 0  ->  x = y = 4/3
    np.testing.assert_allclose(state.params["a"]["x"], 4 / 3, atol=1e-3)
    np.testing.assert_allclose(state.params["b"]["y"], 4 / 3, atol=1e-3)


def test_alternating_groups_keep_the_inactive_group_and_its_adam_state():
    config = toy_config(name="adam")
    config.optim.groups = ConfigDict({"a": {"every": 2, "offset": 0},
                                      "b": {"every": 2, "offset": 1}})
    tx = optim.make_optimizer(config, LABELS)
    active = optim.group_schedule(config, LABELS)
    state = make_state(PARAMS, tx)
    s1, m1 = train_step(state, {}, loss_fn=two_player_loss, tx=tx, labels=LABELS,
                        group_active=active)
    assert float(m1["active/a"]) == 1 and float(m1["active/b"]) == 0
    assert s1.params["b"]["y"] == state.params["b"]["y"]          # b did not move
    assert s1.params["a"]["x"] != state.params["a"]["x"]          # a did
    b_old = state.opt_state.inner_states["b"]
    b_new = s1.opt_state.inner_states["b"]
    for old, new in zip(jax.tree_util.tree_leaves(b_old), jax.tree_util.tree_leaves(b_new)):
        np.testing.assert_array_equal(old, new)                   # b's momentum untouched
    s2, _ = train_step(s1, {}, loss_fn=two_player_loss, tx=tx, labels=LABELS, group_active=active)
    assert s2.params["a"]["x"] == s1.params["a"]["x"]
    assert s2.params["b"]["y"] != s1.params["b"]["y"]


def counting_loss(params, model_state, batch, rng):
    """quadratic_loss that also moves a model_state counter (a skipped step must not)."""
    loss, (metrics, _) = quadratic_loss(params, model_state, batch, rng)
    return loss, (metrics, {"seen": model_state["seen"] + 1})


@pytest.mark.parametrize("skip_by", ["cond", "select"])
def test_nonfinite_gradients_skip_the_update_and_are_counted(skip_by):
    tx = optim.make_optimizer(toy_config(name="adam"))
    state = init_state({"w": jnp.ones(3)}, {"seen": jnp.zeros((), jnp.int32)}, tx,
                       jax.random.PRNGKey(0), ema=True)
    step = jax.jit(lambda s, b: train_step(s, b, loss_fn=counting_loss, tx=tx, ema_decay=0.9,
                                           skip_by=skip_by))
    bad = {"x": jnp.array([1.0, jnp.nan, 1.0]), "y": jnp.zeros(3)}
    new, metrics = step(state, bad)
    for part in ("params", "opt_state", "ema_params", "model_state"):  # all kept, bit for bit
        for old, kept in zip(jax.tree_util.tree_leaves(getattr(state, part)),
                             jax.tree_util.tree_leaves(getattr(new, part)), strict=True):
            np.testing.assert_array_equal(kept, old, err_msg=part)
    assert int(new.step) == 1 and int(new.skips) == 1 and int(new.total_skips) == 1
    assert int(metrics["skipped"]) == 1
    good = {"x": jnp.ones(3), "y": jnp.zeros(3)}
    new2, _ = step(new, good)
    assert int(new2.skips) == 0 and int(new2.total_skips) == 1
    assert int(new2.model_state["seen"]) == 1
    # grad 2w/3 > 0 per element; Adam's first step moves each by lr (m / sqrt(v) = 1)
    np.testing.assert_allclose(new2.params["w"], 1 - 0.1, rtol=1e-5)
    np.testing.assert_allclose(new2.ema_params["w"], 0.9 + 0.1 * (1 - 0.1), rtol=1e-5)


def _one_step(loss_of_w, w):
    def loss_fn(params, model_state, batch, rng):
        return loss_of_w(params["w"]), ({}, model_state)
    tx = optim.make_optimizer(toy_config(name="adam", clip_norm=1.0))
    state = make_state({"w": w}, tx)
    return state, jax.jit(lambda s: train_step(s, {}, loss_fn=loss_fn, tx=tx))(state)


def test_a_nonfinite_gradient_under_a_finite_loss_is_skipped():
    # d/dw sqrt(w) at w = 0 is +inf while the loss, sqrt(0) + 1 + 1 = 2, is finite
    state, (new, metrics) = _one_step(lambda w: jnp.sum(jnp.sqrt(w)), jnp.array([0.0, 1, 1]))
    assert float(metrics["loss"]) == 2.0 and int(metrics["skipped"]) == 1
    np.testing.assert_array_equal(new.params["w"], state.params["w"])


def test_a_finite_gradient_whose_squared_norm_overflows_float32_is_skipped_too():
    # grad 1e20 per element: finite, but its squared norm (3e40) is not a float32
    state, (new, metrics) = _one_step(lambda w: 1e20 * jnp.sum(w), jnp.ones(3))
    assert np.isfinite(float(metrics["loss"])) and int(metrics["skipped"]) == 1
    np.testing.assert_array_equal(new.params["w"], state.params["w"])
    # an ordinary gradient: the logged norm is its 2-norm, and the step is taken
    _, (new, metrics) = _one_step(lambda w: jnp.sum(w * jnp.array([3.0, 4.0])), jnp.ones(2))
    np.testing.assert_allclose(float(metrics["grad_norm"]), 5.0, rtol=1e-6)
    assert int(metrics["skipped"]) == 0 and not np.array_equal(new.params["w"], jnp.ones(2))


def test_skip_by_cond_and_select_agree_on_ordinary_steps():
    tx = optim.make_optimizer(toy_config(name="adamw", weight_decay=0.1))
    state = init_state({"w": jnp.ones(3)}, {"seen": jnp.zeros((), jnp.int32)}, tx,
                       jax.random.PRNGKey(0), ema=True)
    batch = {"x": jnp.arange(3.0), "y": jnp.ones(3)}
    states = {}
    for skip_by in ("cond", "select"):
        s = state
        step = jax.jit(lambda s, b, k=skip_by: train_step(
            s, b, loss_fn=counting_loss, tx=tx, ema_decay=0.9, skip_by=k))
        for _ in range(3):
            s, _ = step(s, batch)
        states[skip_by] = s
    for a, b in zip(jax.tree_util.tree_leaves(states["cond"]),
                    jax.tree_util.tree_leaves(states["select"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(ValueError, match="skip_by='where': use cond | select"):
        train_step(state, batch, loss_fn=counting_loss, tx=tx, skip_by="where")


def test_gpus_keep_a_skipped_state_by_select_other_devices_by_cond():
    from types import SimpleNamespace
    from genjax import assemble
    on = lambda platform: SimpleNamespace(  # noqa: E731
        devices=np.array([SimpleNamespace(platform=platform)]))
    assert assemble.skip_by(on("gpu")) == "select"
    assert assemble.skip_by(on("cpu")) == assemble.skip_by(on("tpu")) == "cond"


def test_ema_tracks_params():
    tx = optim.make_optimizer(toy_config())
    state = make_state({"w": jnp.ones(3)}, tx, ema=True)
    batch = {"x": jnp.ones(3), "y": jnp.zeros(3)}
    new, _ = train_step(state, batch, loss_fn=quadratic_loss, tx=tx, ema_decay=0.9)
    np.testing.assert_allclose(new.ema_params["w"], 0.9 * 1.0 + 0.1 * new.params["w"], rtol=1e-6)


def test_bf16_compute_keeps_fp32_master_params():
    tx = optim.make_optimizer(toy_config())
    state = make_state({"w": jnp.ones(3, jnp.float32)}, tx)
    seen = {}

    def loss(params, ms, batch, rng):
        seen["dtype"] = params["w"].dtype
        return quadratic_loss(params, ms, batch, rng)
    batch = {"x": jnp.ones(3), "y": jnp.zeros(3)}
    new, _ = train_step(state, batch, loss_fn=loss, tx=tx, compute_dtype=jnp.bfloat16)
    assert seen["dtype"] == jnp.bfloat16
    assert new.params["w"].dtype == jnp.float32


def test_gradient_accumulation_equals_one_big_batch():
    x = jnp.arange(8.0)
    batch = {"x": x, "y": 2 * x + 1}
    big_tx = optim.make_optimizer(toy_config())
    big, _ = train_step(make_state({"w": jnp.zeros(())}, big_tx), batch,
                        loss_fn=quadratic_loss, tx=big_tx)
    acc_tx = optim.make_optimizer(toy_config(accum_steps=2))
    s = make_state({"w": jnp.zeros(())}, acc_tx)
    for half in (slice(0, 4), slice(4, 8)):
        s, _ = train_step(s, {k: v[half] for k, v in batch.items()},
                          loss_fn=quadratic_loss, tx=acc_tx)
    np.testing.assert_allclose(s.params["w"], big.params["w"], rtol=1e-6)


def test_accumulation_schedules_and_logs_the_learning_rate_per_update():
    """k = 2 over 20 train steps: 10 updates on warmup 4 then linear decay to 0, by hand
    s = [0, .25, .5, .75, 1, 5/6, 4/6, 3/6, 2/6, 1/6] (the schedule ran over 20 calls and
    ended half-way, at lr 0.69). SGD on loss w: each update moves w by -s(i)."""
    config = toy_config(lr=1.0, warmup_steps=4, schedule="linear", min_lr_ratio=0.0,
                        accum_steps=2)
    config.total_steps = 20
    tx = optim.make_optimizer(config)
    s = make_state({"w": jnp.zeros(())}, tx)
    want = [0, 0.25, 0.5, 0.75, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6]
    lr_of_step = optim.learning_rate_fn(config)
    moves = []
    for call in range(20):
        before = float(s.params["w"])
        s, _ = train_step(s, {}, loss_fn=lambda p, ms, b, r: (p["w"], ({}, ms)), tx=tx)
        moves.append(before - float(s.params["w"]))
        assert float(lr_of_step(call)) == pytest.approx(want[call // 2], abs=1e-6)
    np.testing.assert_allclose(moves[0::2], 0.0, atol=1e-7)  # accumulating calls
    np.testing.assert_allclose(moves[1::2], want, atol=1e-6)


def test_the_ema_moves_once_per_update_under_accumulation():
    """decay 0.5, SGD lr 1 on loss w from w = 0: after the updates w = -1, -2 the EMA is
    0.5 (0.5 * 0 + 0.5 * -1) + 0.5 * -2 = -1.25, with or without k = 2 (it was -1.375:
    the EMA also moved on the calls that only accumulate)."""
    for k in (1, 2):
        tx = optim.make_optimizer(toy_config(lr=1.0, accum_steps=k))
        s = make_state({"w": jnp.zeros(())}, tx, ema=True)
        for _ in range(2 * k):
            s, _ = train_step(s, {}, loss_fn=lambda p, ms, b, r: (p["w"], ({}, ms)), tx=tx,
                              ema_decay=0.5)
        assert float(s.params["w"]) == -2.0 and float(s.ema_params["w"]) == -1.25, k


def test_group_settings_that_apply_to_the_whole_run_are_refused_per_group():
    for key, value in (("accum_steps", 4), ("ema_decay", 0.9), ("freeze", ("x",))):
        config = toy_config()
        config.optim.groups = ConfigDict({"a": {key: value}})
        with pytest.raises(config_lib.ConfigError, match=f"groups.a.{key}: set per run"):
            optim.make_optimizer(config, LABELS)
    config = toy_config(accum_steps=2)  # b's turn (odd calls) would never be an update's
    config.optim.groups = ConfigDict({"a": {"every": 2}, "b": {"every": 2, "offset": 1}})
    with pytest.raises(config_lib.ConfigError, match="accum_steps=2 with alternating"):
        optim.make_optimizer(config, LABELS)


def test_step_key_depends_only_on_base_key_and_step():
    tx = optim.make_optimizer(toy_config())
    a = make_state({"w": jnp.ones(2)}, tx).replace(step=jnp.array(7, jnp.int32))
    b = make_state({"w": jnp.zeros(2)}, tx).replace(step=jnp.array(7, jnp.int32))
    np.testing.assert_array_equal(step_rng(a), step_rng(b))
    c = a.replace(step=jnp.array(8, jnp.int32))
    assert not np.array_equal(step_rng(a), step_rng(c))


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_schedule_warms_up_then_decays(schedule):
    c = toy_config(lr=1.0, warmup_steps=10, schedule=schedule, min_lr_ratio=0.1)
    lr = optim.make_schedule(c.optim, 100)
    assert float(lr(0)) == 0.0 and abs(float(lr(10)) - 1.0) < 1e-6
    end = {"cosine": 0.1, "linear": 0.1, "constant": 1.0}[schedule]
    assert abs(float(lr(100)) - end) < 1e-6


def test_weight_decay_skips_vectors_and_excluded_names():
    params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
              "pos_embed": jnp.ones((4, 2))}
    mask = optim.decay_mask(params, ("pos_embed",))
    assert mask == {"dense": {"kernel": True, "bias": False}, "pos_embed": False}


def test_unknown_optimizer_and_group_names_fail():
    with pytest.raises(ValueError, match="optim.name"):
        optim.make_optimizer(toy_config(name="adagradx"))
    c = toy_config()
    c.optim.groups = ConfigDict({"generatr": {"lr": 1.0}})
    with pytest.raises(ValueError, match="generatr"):
        optim.make_optimizer(c, LABELS)
