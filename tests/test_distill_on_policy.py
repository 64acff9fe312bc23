"""On-policy rows of LM distillation (genjax/families/distill.py, config.distill.on_policy)
against answers computed independently: the off-policy formula restated, a student equal to
its teacher, the decoder called on its own with the step's sampling key, and the loss
recomputed in float64 numpy from those samples. Bit-exact resume with on-policy rows:
the shared spec's "distill+on_policy" variant (tests/families.py, tests/test_families_resume.py).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import assemble, sharding, train
from genjax.errors import ConfigError
from genjax.families import distill
from genjax.sampling import lm as decoder
from tests.families import run_config, tiny_config, one_error_line
from tests.test_distill import np_kl, np_softmax
from tests.test_families import random_batch

N = 8  # the tiny preset's distill.on_policy_tokens; max_len 32, batch 8


@functools.cache
def setup(**overrides):
    """(config, parts, host state, batch) of the tiny distill config with `overrides`."""
    config = tiny_config("distill", **overrides)
    parts = assemble.assemble(config, sharding.make_mesh(config.mesh))
    state = jax.device_get(parts.init_state())
    return config, parts, state, jax.tree_util.tree_map(jnp.asarray, random_batch(parts))


def loss_and_grad(config, parts, params, model_state, batch, seed=0):
    def f(p):
        return parts.family.loss_fn(p, model_state, batch, jax.random.key(seed),
                                    model=parts.model, config=config)
    return jax.value_and_grad(f, has_aux=True)(params)


def test_on_policy_0_is_exactly_the_off_policy_loss_and_gradient():
    config, parts, state, batch = setup(**{"distill.divergence": "jsd", "distill.beta": 0.3})
    assert config.distill.on_policy == 0.0 and config.model.dropout == 0.0
    tokens, d = batch["tokens"], config.distill

    def off_policy(p):  # the formula before on-policy rows existed, restated
        zs = parts.model.apply({"params": p}, tokens[:, :-1], train=True,
                               rngs={"dropout": jax.random.key(0)})
        zt = distill.teacher_model(config).apply(
            {"params": state.model_state[distill.TEACHER]}, tokens[:, :-1], train=False)
        return distill.distill_loss(zs, zt, tokens[:, 1:], alpha=d.alpha, tau=d.temperature,
                                    divergence_name=d.divergence, beta=d.beta)

    (want, want_metrics), want_g = jax.value_and_grad(off_policy, has_aux=True)(state.params)
    (got, (metrics, _)), got_g = loss_and_grad(config, parts, state.params, state.model_state,
                                               batch)
    assert float(got) == float(want) and sorted(metrics) == ["accuracy", "kd", "nll"]
    for a, b in zip(jax.tree_util.tree_leaves(got_g), jax.tree_util.tree_leaves(want_g)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("fraction,alpha", [(1.0, 0.5), (0.5, 1.0)])
def test_student_equal_to_teacher_gives_zero_loss_and_gradient_with_on_policy_rows(fraction,
                                                                                     alpha):
    # lambda = 1: no off-policy row, so no CE even at alpha 0.5; lambda 0.5: the KL part
    config, parts, state, batch = setup(**{"model.num_layers": 2, "distill.on_policy": fraction,
                                           "distill.alpha": alpha})
    teacher = state.model_state[distill.TEACHER]
    assert jax.tree_util.tree_structure(teacher) == jax.tree_util.tree_structure(state.params)
    (loss, (metrics, _)), grads = loss_and_grad(config, parts, teacher, state.model_state, batch)
    assert float(loss) == 0.0 and float(metrics["kd"]) == 0.0
    assert float(metrics["kd_sampled"]) == 0.0
    assert all(np.all(np.asarray(g) == 0.0) for g in jax.tree_util.tree_leaves(grads))


def test_divergence_positions_hold_exactly_the_students_samples_and_prompts_are_masked():
    config, parts, state, batch = setup(**{"distill.on_policy": 0.5})
    B, L = batch["tokens"].shape
    K, T, P = 4, L - 1, L - 1 - N
    tokens = np.asarray(batch["tokens"])
    # the decoder on its own, with the sampling half of the step key (module docstring)
    sample_key = jax.random.split(jax.random.key(3))[1]
    samples = np.asarray(decoder.decode(
        parts.model, state.params, tokens[:K, :P], np.full(K, P, np.int32),
        rng=jax.random.key_data(sample_key), max_new_tokens=N, temperature=1.0).tokens_BxN)
    want = tokens.copy()
    want[:K, P:T], want[:K, T] = samples, 0
    assert (want[:K, P:T] != tokens[:K, P:T]).any()  # the test can tell replaced from kept

    got, masks = distill.on_policy_batch(parts.model, state.params, batch["tokens"],
                                         jax.random.split(jax.random.key(3))[1], rows=K,
                                         new_tokens=N, temperature=1.0)
    np.testing.assert_array_equal(np.asarray(got), want)
    sampled = np.zeros((B, T), np.float32)
    sampled[:K, P - 1:T - 1] = 1.0  # targets want[:, 1:] at these positions are the samples
    np.testing.assert_array_equal(np.asarray(masks.sampled_BxT), sampled)
    np.testing.assert_array_equal(np.asarray(masks.data_B), (np.arange(B) >= K) * 1.0)
    np.testing.assert_array_equal(want[:K, 1:][sampled[:K] > 0].reshape(K, N), samples)

    # the loss, in float64 from those tokens: D on the samples and every off-policy
    # position, CE on the off-policy rows only
    d = config.distill
    zs = np.asarray(parts.model.apply({"params": state.params}, want[:, :-1]), np.float64)
    zt = np.asarray(distill.teacher_model(config).apply(
        {"params": state.model_state[distill.TEACHER]}, want[:, :-1]), np.float64)
    kl = np_kl(np_softmax(zt / d.temperature), np_softmax(zs / d.temperature))
    ce = -np.log(np.take_along_axis(np_softmax(zs), want[:, 1:, None], -1)[..., 0])
    data = np.broadcast_to((np.arange(B) >= K)[:, None], sampled.shape) * 1.0
    mean = lambda x, m: (x * m).sum() / m.sum()  # noqa: E731
    kd, nll = mean(kl, np.maximum(sampled, data)), mean(ce, data)
    (loss, (metrics, _)), _ = loss_and_grad(config, parts, state.params, state.model_state,
                                            batch, seed=3)
    # (a KL of ~3e-3 between near-equal float32 softmaxes cancels: ~5e-8 absolute on
    # AVX-512 hosts, 1.4e-5 relative; the wrong masks below move kd by > 1e-4 of it)
    for name, value in [("kd", kd), ("nll", nll), ("kd_sampled", mean(kl, sampled))]:
        np.testing.assert_allclose(float(metrics[name]), value, rtol=1e-5, atol=2e-7,
                                   err_msg=name)
    np.testing.assert_allclose(float(loss), d.alpha * d.temperature ** 2 * kd
                               + (1 - d.alpha) * nll, rtol=1e-5)
    # the test can tell: prompts or the final pad position in D, samples or prompts in CE
    with_pad, rows_on = np.maximum(sampled, data), np.arange(B)[:, None] < K
    with_pad[:K, T - 1] = 1
    for wrong, right in [(mean(kl, np.ones_like(data)), kd), (mean(kl, with_pad), kd),
                         (ce.mean(), nll), (mean(ce, data + rows_on * (1 - sampled)), nll)]:
        assert abs(wrong - right) > 1e-4 * right


def test_on_policy_fraction_and_tokens_are_checked():
    config = tiny_config("distill")
    for overrides, needle in [({"distill.on_policy": 0.05}, "rounds to no row"),
                              ({"distill.on_policy": 0.5, "distill.on_policy_tokens": 32},
                               r"on_policy_tokens=32: must be in \[1, 31\]"),
                              ({"distill.on_policy": 0.5, "distill.on_policy_temperature": -1.0},
                               "on_policy_temperature=-1.0")]:
        with pytest.raises(ConfigError, match=needle):
            distill.check_on_policy(tiny_config("distill", **overrides))
    distill.check_on_policy(config)
    assert distill.on_policy_rows(0.3, 8) == 2 and distill.on_policy_rows(1.0, 8) == 8


@pytest.mark.parametrize("fraction", [1.5, -0.25])
def test_a_fraction_outside_0_1_is_one_error_line_and_nothing_is_written(fraction, data_dir,
                                                                        tmp_path):
    config = run_config("distill")
    config.unlock()
    config.distill.on_policy = fraction
    config.lock()
    with one_error_line(ConfigError, match=rf"on_policy={fraction}: .* in \[0, 1\]"):
        train.train(config, str(tmp_path))
    assert not (tmp_path / "config.json").exists() and not (tmp_path / "checkpoints").exists()


def test_on_policy_samples_are_ids_the_tokenizer_has():
    # The model's vocabulary is padded past the tokenizer's; a fresh student put about
    # half its samples on those ids, which are not text.
    config, parts, state, batch = setup(**{"distill.on_policy": 0.5})
    V = parts.model.vocab_size // 2
    K, T = 4, batch["tokens"].shape[1] - 1
    for valid, below in ((V, True), (0, False)):
        got, masks = distill.on_policy_batch(parts.model, state.params, batch["tokens"],
                                             jax.random.key(5), rows=K, new_tokens=N,
                                             temperature=1.0, valid_vocab=valid)
        drawn = np.asarray(got)[:K, 1:T + 1][np.asarray(masks.sampled_BxT)[:K] > 0]
        assert drawn.size == K * N and (drawn.max() < V) == below
