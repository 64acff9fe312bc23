"""LM distillation (genjax/families/distill.py) against answers computed independently:
closed-form KL divergences in float64 numpy, autodiff of the plain formulas, the GKD
limits of the generalized JSD, and a real teacher checkpoint placed by init_from.

The generalized JSD, JSD_b = b KL(T || M) + (1 - b) KL(S || M), M = b p_T + (1 - b) p_S,
vanishes at both ends; its first-order terms are JSD_b ~ b KL(T || S) (b -> 0) and
JSD_b ~ (1 - b) KL(S || T) (b -> 1). The family's `jsd` is JSD_b / (b (1 - b)), which is
therefore exactly forward KL at b = 0 and reverse KL at b = 1.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import assemble, config_lib, sharding, train
from genjax.checkpoint import Checkpointer
from genjax.errors import ConfigError, UserError
from genjax.families import distill, lm
from tests.families import run_config, tiny_config, one_error_line
from tests.test_families import random_batch


def np_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_kl(p, q):
    return np.sum(p * (np.log(p) - np.log(q)), -1)


def np_jsd(pt, ps, b):
    """Generalized JSD with the mixture of the probabilities (GKD)."""
    m = b * pt + (1 - b) * ps
    return b * np_kl(pt, m) + (1 - b) * np_kl(ps, m)


def logits(seed, shape=(3, 5, 11), scale=2.0):
    return scale * np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def div(zs, zt, beta):
    return np.asarray(distill.divergence(jnp.asarray(zs), jnp.asarray(zt), float(beta)))


# ---------------------------------------------------------------- closed forms and limits
def test_forward_and_reverse_are_the_closed_form_kls():
    zs, zt = logits(0), logits(1)
    ps, pt = np_softmax(zs), np_softmax(zt)
    np.testing.assert_allclose(div(zs, zt, distill.beta_of("forward", 0.5)), np_kl(pt, ps),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(div(zs, zt, distill.beta_of("reverse", 0.5)), np_kl(ps, pt),
                               rtol=1e-5, atol=1e-6)


def test_generalized_jsd_limits_are_forward_kl_at_beta_0_and_reverse_kl_at_beta_1():
    zs, zt = logits(2), logits(3)
    ps, pt = np_softmax(zs), np_softmax(zt)
    # the math (float64): JSD_b / b -> KL(T||S) as b -> 0, JSD_b / (1 - b) -> KL(S||T) as b -> 1
    # (the error is O(b), so it shrinks tenfold per decade of b)
    for b in (1e-6, 1e-7):
        np.testing.assert_allclose(np_jsd(pt, ps, b) / b, np_kl(pt, ps), rtol=200 * b)
        np.testing.assert_allclose(np_jsd(pt, ps, 1 - b) / b, np_kl(ps, pt), rtol=200 * b)
    # the family's normalised JSD: exact endpoints, continuous near them, GKD value inside
    np.testing.assert_allclose(div(zs, zt, 0.0), np_kl(pt, ps), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(div(zs, zt, 1.0), np_kl(ps, pt), rtol=1e-5, atol=1e-6)
    for b in (1e-3, 0.1, 0.5, 0.9, 1 - 1e-3):  # float32 cancellation ~ eps |log p| / b
        np.testing.assert_allclose(div(zs, zt, b), np_jsd(pt, ps, b) / (b * (1 - b)),
                                   rtol=1e-4, atol=2e-4)


def test_the_jsd_mixture_is_of_probabilities_not_of_log_probabilities():
    # Nearly disjoint distributions: log(b p + (1-b) q) != b log p + (1-b) log q by a lot.
    zt = np.log(np.array([[0.97, 0.01, 0.01, 0.01]], np.float32))
    zs = np.log(np.array([[0.01, 0.01, 0.01, 0.97]], np.float32))
    pt, ps, b = np_softmax(zt), np_softmax(zs), 0.5
    log_m = b * np.log(pt) + (1 - b) * np.log(ps)   # the trap (trl #2202)
    m_geo = np.exp(log_m)  # unnormalised, as a log-space implementation would use it
    log_space = (b * np.sum(pt * (np.log(pt) - log_m), -1)
                 + (1 - b) * np.sum(ps * (np.log(ps) - log_m), -1)) / (b * (1 - b))
    right = np_jsd(pt, ps, b) / (b * (1 - b))
    assert abs(log_space - right).max() > 0.5 and m_geo.sum() < 0.5  # the test can tell
    np.testing.assert_allclose(div(zs, zt, b), right, rtol=1e-5)


def test_distill_loss_is_alpha_tau_squared_kl_plus_one_minus_alpha_ce():
    zs, zt = logits(4), logits(5)
    targets = np.random.default_rng(6).integers(0, 11, zs.shape[:-1]).astype(np.int32)
    tau, alpha = 2.0, 0.3
    kl = np.mean(np_kl(np_softmax(zt / tau), np_softmax(zs / tau)))
    ce = np.mean(-np.log(np.take_along_axis(np_softmax(zs), targets[..., None], -1)[..., 0]))
    loss, metrics = distill.distill_loss(jnp.asarray(zs), jnp.asarray(zt), jnp.asarray(targets),
                                         alpha=alpha, tau=tau, divergence_name="forward")
    np.testing.assert_allclose(float(metrics["kd"]), kl, rtol=1e-5)
    np.testing.assert_allclose(float(loss), alpha * tau ** 2 * kl + (1 - alpha) * ce, rtol=1e-5)


@pytest.mark.parametrize("beta", [-1.0, 0.0, 0.3, 0.5, 1.0, 2.0])
def test_closed_form_gradient_equals_autodiff_of_the_plain_formula(beta):
    zs, zt = logits(7), logits(8)
    w = jnp.asarray(np.random.default_rng(9).uniform(0.5, 1.5, zs.shape[:-1]), jnp.float32)

    def plain(z):
        ls, lt = jax.nn.log_softmax(z), jax.nn.log_softmax(jnp.asarray(zt))
        ps, pt = jnp.exp(ls), jnp.exp(lt)
        if beta <= 0:
            d = jnp.sum(pt * (lt - ls), -1)
        elif beta >= 1:
            d = jnp.sum(ps * (ls - lt), -1)
        else:
            log_m = jnp.log(beta * pt + (1 - beta) * ps)
            d = (beta * jnp.sum(pt * (lt - log_m), -1)
                 + (1 - beta) * jnp.sum(ps * (ls - log_m), -1)) / (beta * (1 - beta))
        return jnp.sum(w * d)

    mine = jax.grad(lambda z: jnp.sum(w * distill.divergence(z, jnp.asarray(zt), beta)))
    np.testing.assert_allclose(mine(jnp.asarray(zs)), jax.grad(plain)(jnp.asarray(zs)),
                               rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- the family on a model
@pytest.mark.parametrize("name", distill.DIVERGENCES)
def test_student_equal_to_teacher_gives_zero_kl_loss_and_exactly_zero_gradient(name):
    config = tiny_config("distill", **{"model.num_layers": 2, "distill.alpha": 1.0,
                                       "distill.divergence": name, "distill.beta": 0.3})
    parts = assemble.assemble(config, sharding.make_mesh(config.mesh))
    state = jax.device_get(parts.init_state())
    teacher = state.model_state[distill.TEACHER]
    assert jax.tree_util.tree_structure(teacher) == jax.tree_util.tree_structure(state.params)
    batch = jax.tree_util.tree_map(jnp.asarray, random_batch(parts))
    kw = dict(model=parts.model, config=config)
    loss_of = lambda p: parts.family.loss_fn(  # noqa: E731
        p, state.model_state, batch, jax.random.key(0), **kw)
    (loss, (metrics, _)), grads = jax.value_and_grad(loss_of, has_aux=True)(teacher)
    assert float(loss) == 0.0 and float(metrics["kd"]) == 0.0
    assert all(np.all(np.asarray(g) == 0.0) for g in jax.tree_util.tree_leaves(grads))
    # alpha = 0.5: the gradient is exactly half the cross-entropy gradient
    half = tiny_config("distill", **{"model.num_layers": 2, "distill.alpha": 0.5,
                                     "distill.divergence": name})
    g_half = jax.grad(lambda p: parts.family.loss_fn(p, state.model_state, batch,
                                                     jax.random.key(0), model=parts.model,
                                                     config=half)[0])(teacher)
    g_ce = jax.grad(lambda p: lm.loss_fn(p, {}, batch, jax.random.key(0), model=parts.model,
                                         config=half)[0])(teacher)
    for a, b in zip(jax.tree_util.tree_leaves(g_half), jax.tree_util.tree_leaves(g_ce)):
        np.testing.assert_allclose(a, 0.5 * np.asarray(b), rtol=1e-5, atol=1e-9)


def test_unknown_divergence_or_beta_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="divergence='kl'"):
        distill.beta_of("kl", 0.5)
    with pytest.raises(ConfigError, match="beta=1.5"):
        distill.beta_of("jsd", 1.5)


def test_teacher_from_init_from_is_placed_frozen_with_its_own_architecture(tiny_run, tmp_path):
    teacher_dir = tiny_run("lm")  # 2 layers; the distill student has 1
    config = run_config("distill")
    config.unlock()
    config.update_from_flattened_dict({"init_from": str(teacher_dir), "total_steps": 2,
                                       "distill.random_teacher": False})
    config.lock()
    train.train(config, str(tmp_path))
    src = Checkpointer(str(teacher_dir), read_only=True)
    meta = src.read_meta(src.latest_step())
    saved = Checkpointer(str(tmp_path), read_only=True).read_meta(2)["config"]
    for k, v in saved["distill"]["teacher_model"].items():
        assert v == meta["config"]["model"][k], k
    assert saved["model"]["num_layers"] == 1 and meta["config"]["model"]["size"] == "tiny"
    parts, lm_parts = (assemble.assemble(c, sharding.make_mesh(c.mesh)) for c in
                       (config_lib.from_saved(saved), config_lib.from_saved(meta["config"])))
    want, _, _ = src.restore(src.latest_step(), lm_parts.abstract_state)
    got, _, _ = Checkpointer(str(tmp_path), read_only=True).restore(2, parts.abstract_state)
    for a, b in zip(jax.tree_util.tree_leaves(want.params),
                    jax.tree_util.tree_leaves(got.model_state[distill.TEACHER])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_teacher_with_another_tokenizer_is_one_error_and_nothing_is_written(tiny_run, tmp_path):
    text = tmp_path / "other.txt"
    rng = np.random.default_rng(0)
    text.write_text("\n".join("".join(rng.choice(list("xyz "), 40)) for _ in range(400)))
    # The student's text is tokenized with the teacher's tokenizer by default
    # (data.tokenizer_from = init_from); another run's (a byte-level BPE) must be refused.
    from genjax.interop.gpt2_workdir import import_gpt2
    other = tmp_path / "bpe_run"
    import_gpt2(os.path.join(os.path.dirname(__file__), "fixtures", "gpt2_tiny"), str(other))
    config = run_config("distill")
    config.unlock()
    config.update_from_flattened_dict({"init_from": str(tiny_run("lm")), "data.name": "text",
                                       "data.text_file": str(text), "data.cleaning": "none",
                                       "data.tokenizer_from": str(other),
                                       "distill.random_teacher": False})
    config.lock()
    work = tmp_path / "w"
    with one_error_line(UserError, match="another tokenizer"):
        train.train(config, str(work))
    assert not (work / "checkpoints").exists()


@pytest.mark.parametrize("key, value, match", [
    ("distill.temperature", 0.0, "temperature=0.0: must be > 0"),  # the loss would be NaN
    ("distill.temperature", -1.0, "temperature=-1.0: must be > 0"),
    ("distill.alpha", 1.5, r"alpha=1.5: the KL term's weight is in \[0, 1\]")])
def test_a_temperature_or_weight_out_of_range_is_one_error_line(key, value, match):
    config = tiny_config("distill", **{key: value})
    config.unlock()
    with one_error_line(ConfigError, match=match):
        distill.resolve_config(config, None)


def test_lora_is_one_error_line_and_nothing_is_written(data_dir, tmp_path):
    """The LoRA wrapper takes init_from as its frozen base: the teacher would stay random."""
    config = run_config("distill", **{"lora.rank": 4, "lora.alpha": 8.0,
                                      "optim.ema_decay": 0.0})
    with pytest.raises(ConfigError, match="lora.rank=4 with distill: init_from is the teacher"
                       ) as e:
        train.train(config, str(tmp_path / "w"))
    assert "\n" not in str(e.value) and not (tmp_path / "w" / "checkpoints").exists()


def test_no_teacher_and_no_random_teacher_is_a_config_error(data_dir, tmp_path):
    config = run_config("distill")
    config.unlock()
    config.distill.random_teacher = False
    config.lock()
    with pytest.raises(ConfigError, match="needs a teacher"):
        train.train(config, str(tmp_path))


def test_a_teacher_with_a_shorter_context_than_the_student_is_one_error_line(tiny_run, tmp_path):
    # Its learned positions end at its max_len: past them every teacher logit was NaN.
    config = run_config("distill")
    teacher = tiny_run("lm")
    longer = 2 * int(Checkpointer(str(teacher), read_only=True).read_meta()["config"]["model"]
                     ["max_len"])
    config.unlock()
    config.update_from_flattened_dict({"init_from": str(teacher), "model.max_len": longer,
                                       "distill.random_teacher": False})
    config.lock()
    with pytest.raises(ConfigError, match=f"model.max_len={longer} but the teacher reads at "
                                          "most") as e:
        train.train(config, str(tmp_path / "w"))
    assert "\n" not in str(e.value) and not (tmp_path / "w" / "checkpoints").exists()
