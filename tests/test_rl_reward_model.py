"""Online RL rewarded by a learned reward model (genjax/families/rl.py, config.rl.reward).

Known answers: the reward of every rollout is the reward family's own score of the same
tokens (reward.pair_rewards on a pair batch built here from the prompt text, 1e-6); a
reward model whose head is zero scores a constant, so the RLOO advantages vanish and the
policy gradient at beta = 0 is exactly zero (a random head's is not); reward_from's
params land in model_state["reward"] bit for bit, with its architecture. Bad input (not
a reward run, another tokenizer, no reward_from, an unknown reward, a reward model too
short for the rollouts) is one error line, and nothing is written.
"""
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from genjax import assemble, config_lib, sharding, step as step_lib, train
from genjax.checkpoint import Checkpointer
from genjax.data.preferences import encode_pairs
from genjax.errors import ConfigError, UserError
from genjax.families import lm, reward, rl
from genjax.metrics_writer import read_rows
from genjax.sampling import lm as decoder
from tests.families import run_config, tiny_config, one_error_line
from tests.test_dpo import RECORDS, TOK

SPEC = "rl+reward_model"  # tests/families.py: rl.reward=model, a random reward model


def setup(**overrides):
    config = tiny_config(SPEC, **overrides)
    model = rl.make_model(config)
    tokens, mask = encode_pairs(RECORDS, TOK, int(config.model.max_len))
    batch = {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)}
    variables = nn.meta.unbox(rl.init_variables(model, jax.random.key(0), batch, config))
    return config, model, batch, variables


def test_the_rl_reward_is_the_reward_familys_score_of_the_same_tokens():
    config, model, batch, v = setup()
    K, N, T = int(config.rl.samples), int(config.rl.max_new_tokens), int(config.model.max_len)
    state = {k: v[k] for k in (rl.REWARD, "reference")}

    @jax.jit
    def rollouts(params, model_state, key_step, key_again):
        _, per = rl.rollout_terms(params, model_state, batch, key_step, model=model,
                                  config=config)
        lengths = jnp.array([len(r["prompt"]) for r in RECORDS], jnp.int32).repeat(K)
        prompts = jnp.repeat(batch["tokens"][:, 0, :T - N], K, 0)
        out, _ = decoder.decode_with_logprobs(model, params, prompts, lengths,
                                              rng=jax.random.key_data(key_again),
                                              max_new_tokens=N, temperature=1.0)
        return per, out.tokens_BxN

    per, completions = jax.device_get(rollouts(v["params"], state, jax.random.key(1),
                                               jax.random.key(1)))
    # The pair batch of the reward family: row = prompt text + completion, the mask on
    # the completion's targets (both rows the same sequence)
    tokens = np.zeros((len(completions), 2, T + 1), np.int32)
    mask = np.zeros((len(completions), 2, T), np.float32)
    for i, comp in enumerate(completions):
        prompt = TOK.encode(RECORDS[i // K]["prompt"])
        seq = np.concatenate([prompt, comp])
        tokens[i, :, :len(seq)] = seq
        mask[i, :, len(prompt) - 1:len(seq) - 1] = 1.0
    want = reward.pair_rewards(v[rl.REWARD], rl.reward_model_of(config),
                               {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)},
                               train=False)[:, 0]
    np.testing.assert_allclose(per["reward_model"], np.asarray(want), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(per["reward"], per["reward_model"])  # rl.reward=model
    np.testing.assert_allclose(per["reward_chars"],
                               np.asarray(rl.char_reward(completions, config.rl.reward_ids)))
    assert np.std(per["reward_model"]) > 1e-4, "the random head should score rollouts apart"


def test_a_zero_head_is_a_constant_reward_so_the_policy_gradient_is_exactly_zero():
    config, model, batch, v = setup(**{"rl.beta": 0.0})
    state = {k: v[k] for k in (rl.REWARD, "reference")}
    constant = {**v[rl.REWARD], "head_w": jnp.zeros_like(v[rl.REWARD]["head_w"]),
                "head_b": jnp.float32(0.7)}

    @jax.jit
    def loss_and_grad(params, model_state, key):
        f = lambda p: rl.loss_fn(p, model_state, batch, key, model=model, config=config)  # noqa
        return jax.value_and_grad(f, has_aux=True)(params)

    (loss, (m, _)), grads = loss_and_grad(v["params"], {**state, rl.REWARD: constant},
                                          jax.random.key(1))
    assert float(m["reward"]) == pytest.approx(0.7, abs=1e-6)
    assert float(loss) == pytest.approx(-0.7, abs=1e-6)  # -(mean shaped reward), KL 0
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree_util.tree_leaves(grads))
    _, grads = loss_and_grad(v["params"], state, jax.random.key(1))  # the random head
    assert max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(grads)) > 0


# ----------------------------------------------------------------------- loading
def with_reward_from(path, **overrides):
    config = run_config(SPEC)
    config.unlock()
    config.update_from_flattened_dict({"rl.reward_from": str(path),
                                       "rl.random_reward_model": False, **overrides})
    config.lock()
    return config


def test_reward_from_is_placed_frozen_with_its_own_architecture(tiny_run, tmp_path):
    rm_dir = tiny_run("reward")
    config = with_reward_from(rm_dir, total_steps=1)
    train.train(config, str(tmp_path))
    src = Checkpointer(str(rm_dir), read_only=True)
    meta = src.read_meta(src.latest_step())
    saved = Checkpointer(str(tmp_path), read_only=True).read_meta(1)["config"]
    how = {k.split(".", 1)[1] for k in lm.runtime_keys}  # these stay the run's own
    for k, value in saved["rl"]["reward_model"].items():
        assert k in how or value == meta["config"]["model"].get(k, value), k
    assert saved["rl"]["reward_model"]["vocab_size"] == meta["config"]["model"]["vocab_size"]
    parts, rm_parts = (assemble.assemble(c, sharding.make_mesh(c.mesh)) for c in
                       (config_lib.from_saved(saved), config_lib.from_saved(meta["config"])))
    want, _, _ = src.restore(src.latest_step(), rm_parts.abstract_state)
    got, _, _ = Checkpointer(str(tmp_path), read_only=True).restore(1, parts.abstract_state)
    assert (jax.tree_util.tree_structure(want.params)
            == jax.tree_util.tree_structure(got.model_state[rl.REWARD]))
    for a, b in zip(jax.tree_util.tree_leaves(want.params),
                    jax.tree_util.tree_leaves(got.model_state[rl.REWARD])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    logged = next(r for r in read_rows(str(tmp_path / "metrics.jsonl")) if "loss" in r)
    final = json.loads((tmp_path / "final_metrics.json").read_text())
    for metrics in (logged, final):
        assert {"reward", "reward_model", "reward_chars"} <= set(metrics)
        assert metrics["reward"] == metrics["reward_model"]


def _fake_run(workdir, family: str, tokenizer: dict):
    """A one-step checkpoint whose meta says `family` and `tokenizer` (params irrelevant:
    the checks read the meta first)."""
    params = {"w": jnp.zeros(2)}
    state = step_lib.init_state(params, {}, optax.sgd(0.1), jax.random.PRNGKey(0), ema=False)
    ckpt = Checkpointer(str(workdir))
    ckpt.save(1, state, {}, {"family": family, "config": {"family": family, "model": {}},
                             "data": {"tokenizer": tokenizer}})
    ckpt.close()
    return workdir


def _refused(config, work, error, match):
    with one_error_line(error, match=match):
        train.train(config, str(work))
    assert not any((work / name).exists() for name in ("checkpoints", "config.json",
                                                       "metrics.jsonl"))


def test_a_reward_from_that_is_no_reward_run_is_one_error_and_nothing_is_written(
        tiny_run, tmp_path):
    _refused(with_reward_from(tiny_run("lm")), tmp_path / "w", UserError,
             "is a 'lm' run: it must be a reward-model run")


def test_a_reward_model_with_another_tokenizer_is_one_error_and_nothing_is_written(
        data_dir, tmp_path):
    other = _fake_run(tmp_path / "rm", "reward", {"kind": "char", "vocab": list("\nabc ")})
    _refused(with_reward_from(other), tmp_path / "w", UserError, "another tokenizer")


def _resolve(**overrides):
    config = tiny_config(SPEC, **overrides)
    config.unlock()
    rl.resolve_config(config, types.SimpleNamespace(tokenizer=TOK,
                                                    meta=lambda: {"tokenizer": TOK.to_json()}))
    return config


def test_reward_choices_and_the_reward_models_length_are_checked():
    with pytest.raises(ConfigError, match=r"rl.reward='gold': choose one of \('model', 'chars'\)"):
        _resolve(**{"rl.reward": "gold"})
    with pytest.raises(ConfigError, match="needs config.rl.reward_from"):
        _resolve(**{"rl.random_reward_model": False})
    with pytest.raises(ConfigError, match="the reward model reads at most 16"):
        _resolve(**{"rl.reward_model.max_len": 16})
    assert _resolve(**{"rl.reward": "chars", "rl.random_reward_model": False}).rl.reward == "chars"
    assert _resolve().rl.reward_model.vocab_size == 64  # 0 = the policy's
