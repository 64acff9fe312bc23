"""Online RL (genjax/families/rl.py) and the decoder's log-probs it relies on.

Known answers: the decoder's drawn-token log-probs equal the teacher-forced ones (1e-5),
so the first importance ratio is 1; at temperature tau they are log softmax(logits / tau);
at step 0 the KL to the reference is 0 exactly; a constant reward with beta = 0 gives a
zero gradient; the character reward of a completion is its share of reward tokens; the loss's
value is -(mean shaped reward); with a policy moved off its reference, the reference's
log-probs, the k1 KL, the loss and the RLOO gradient equal a float64 recomputation.
"""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from genjax.data.preferences import encode_pairs
from genjax.errors import ConfigError
from genjax.families import rl
from genjax.sampling import lm as decoder
from tests.families import tiny_config, one_error_line
from tests.test_dpo import RECORDS, TOK, moved


def setup(**overrides):
    config = tiny_config("rl", **overrides)
    model = rl.make_model(config)
    tokens, mask = encode_pairs(RECORDS, TOK, int(config.model.max_len))
    batch = {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)}
    variables = nn.meta.unbox(rl.init_variables(model, jax.random.key(0), batch, config))
    return config, model, batch, variables


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_decoder_logprobs_are_the_teacher_forced_ones(temperature):
    config, model, batch, v = setup()
    prompts, lengths = rl.prompts_of(batch, 20)
    out, drawn = decoder.decode_with_logprobs(model, v["params"], prompts, lengths,
                                              rng=jax.random.PRNGKey(3), max_new_tokens=8,
                                              temperature=temperature)
    seq, mask = rl.join(prompts, lengths, out.tokens_BxN)
    logits = model.apply({"params": v["params"]}, seq[:, :-1]) / temperature
    want = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), seq[:, 1:, None], -1)[..., 0]
    got = rl._scatter(drawn, lengths, want.shape)
    np.testing.assert_allclose(np.asarray(got * mask), np.asarray(want * mask), atol=1e-5)
    assert float(mask.sum()) == 8 * len(RECORDS)
    for i, r in enumerate(RECORDS):  # the prompt is row 0's text before the completion
        assert TOK.decode(np.asarray(seq[i, :len(r["prompt"])])) == r["prompt"]


def test_step_zero_ratio_is_one_kl_is_zero_and_loss_is_minus_the_reward():
    config, model, batch, v = setup()
    state = {"reference": v["reference"]}
    loss, (m, _) = rl.loss_fn(v["params"], state, batch, jax.random.key(1), model=model,
                              config=config)
    assert float(m["ratio_error"]) < 1e-5
    assert float(m["kl"]) == 0.0
    assert float(loss) == pytest.approx(-float(m["reward"]), abs=1e-7)


def test_the_character_reward_is_the_share_of_reward_tokens():
    got = rl.char_reward(jnp.array([[1, 2, 40, 3], [40, 41, 42, 43]]), (1, 2, 3, 4))
    np.testing.assert_allclose(np.asarray(got), [0.75, 0.0])


def test_constant_reward_without_kl_gives_zero_gradient_and_a_real_reward_does_not():
    config, model, batch, v = setup(**{"rl.beta": 0.0, "rl.reward_ids": (1000,)})
    state = {"reference": v["reference"]}

    def grads(cfg):
        f = lambda p: rl.loss_fn(p, state, batch, jax.random.key(1), model=model,  # noqa
                                 config=cfg)[0]
        return jax.tree_util.tree_leaves(jax.grad(f)(v["params"]))
    assert all(np.all(np.asarray(g) == 0) for g in grads(config))
    config2 = tiny_config("rl", **{"rl.beta": 0.0})
    assert max(float(jnp.abs(g).max()) for g in grads(config2)) > 1e-4


def logps_here(model, params, seq):
    """Teacher-forced per-token log-probs [R, T - 1] (log_softmax of the LM's logits) and
    the logits."""
    logits = model.apply({"params": params}, seq[:, :-1])
    return jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32), -1),
                               seq[:, 1:, None], -1)[..., 0], logits


def logps64(model, params, seq):
    """Teacher-forced per-token log-probs float64[R, T - 1]: numpy log-softmax of the
    logits over the whole vocabulary."""
    logits = np.asarray(model.apply({"params": params}, seq[:, :-1]), np.float64)
    logits -= logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return np.take_along_axis(logp, np.asarray(seq)[:, 1:, None], -1)[..., 0]


def test_a_moved_policy_has_the_float64_kl_loss_and_rloo_gradient():
    """Policy != reference, so the KL leash is live: the reference's log-probs, the k1 KL,
    the loss -mean(r - beta KL) and the gradient -mean_r A_r grad sum_t log pi(y_rt), with
    A the leave-one-out advantages of the shaped reward, all recomputed here in float64
    from the rollout's tokens (the decoder is pinned by the tests above)."""
    config, model, batch, v = setup(**{"rl.beta": 0.5})
    policy, state = moved(v["params"]), {"reference": v["reference"]}
    f = lambda p: rl.loss_fn(p, state, batch, jax.random.key(1), model=model,  # noqa: E731
                             config=config)
    (loss, (m, _)), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(policy)
    ro = jax.device_get(rl.sample_rollouts(policy, state, batch, jax.random.key(1),
                                           model=model, config=config))
    seq, mask = jnp.asarray(ro["seq"]), np.asarray(ro["mask"], np.float64)
    lp, ref = logps64(model, policy, seq), logps64(model, v["reference"], seq)
    np.testing.assert_allclose(ro["ref"] * mask, ref * mask, atol=2e-5)
    kl = ((lp - ref) * mask).sum(1)
    N, ids = int(config.rl.max_new_tokens), np.asarray(config.rl.reward_ids)
    reward = np.array([np.isin(row[n:n + N], ids).mean()
                       for row, n in zip(np.asarray(seq), ro["lengths"])])
    beta, K = float(config.rl.beta), int(config.rl.samples)
    shaped = (reward - beta * kl).reshape(-1, K)
    adv = (shaped - (shaped.sum(1, keepdims=True) - shaped) / (K - 1)).reshape(-1)
    assert np.abs(beta * kl).min() > 0.05  # the leash moves every row's reward
    np.testing.assert_allclose(float(m["kl"]), kl.mean(), rtol=1e-4)
    assert float(loss) == pytest.approx(-shaped.mean(), abs=1e-5)
    assert not config.rl.get("valid_vocab", 0)  # log-softmax over the whole vocabulary

    def objective(p):
        return -jnp.mean(jnp.asarray(adv, jnp.float32) * jnp.sum(
            logps_here(model, p, seq)[0] * jnp.asarray(mask, jnp.float32), -1))
    want = jax.jit(jax.grad(objective))(policy)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6, rtol=2e-4)


def test_rollouts_depend_on_the_step_key_only():
    config, model, batch, v = setup()
    state = {"reference": v["reference"]}

    def drawn(key):
        _, (m, _) = rl.loss_fn(v["params"], state, batch, key, model=model, config=config)
        return float(m["logp_drawn"])
    assert drawn(jax.random.key(1)) == drawn(jax.random.key(1)) != drawn(jax.random.key(2))


@pytest.mark.parametrize("overrides, match", [
    ({"rl.max_new_tokens": 32}, r"rl.max_new_tokens=32: must be in \[1, 31\]"),
    ({"rl.max_new_tokens": 0}, r"rl.max_new_tokens=0: must be in \[1, 31\]"),
    ({"rl.beta": -1.0}, r"rl.beta=-1.0: must be >= 0 and finite"),  # pays for leaving
    ({"rl.beta": float("nan")}, r"rl.beta=nan: must be >= 0 and finite"),
    ({"rl.samples": 1}, r"rl.samples=1: must be >= 2 \(RLOO"),  # was: at the first trace
    ({"rl.samples": 0}, r"rl.samples=0: must be >= 2"),  # was: ZeroDivisionError
    ({"rl.algo": "ppo", "rl.value_head": True, "rl.samples": 0}, r"rl.samples=0: must be >= 1"),
    ({"rl.reward_ids": (3, 1000)}, r"rl.reward_ids=\(3, 1000\): ids of this tokenizer are"),
    ({"rl.reward_model.vocab_size": 8, "rl.random_reward_model": True, "rl.reward": "model"},
     r"the reward model reads ids < 8 but the tokenizer's go up to")])
def test_settings_the_run_cannot_train_with_are_one_error_line(overrides, match):
    config = tiny_config("rl", **{"model.max_len": 32, **overrides})
    config.unlock()
    with one_error_line(ConfigError, match=match):
        rl.resolve_config(config, types.SimpleNamespace(tokenizer=TOK))


def test_a_character_reward_no_token_can_earn_is_one_error_line():
    """A byte-level BPE vocabulary has no single-character list to find reward_chars in:
    the character reward would be 0 for every rollout."""
    from genjax.data.bpe import BPETokenizer
    bpe = BPETokenizer.train("to be or not to be " * 20, 260)
    config = tiny_config("rl", **{"rl.reward_ids": (), "model.vocab_size": 0})
    config.unlock()
    with pytest.raises(ConfigError, match="no token of this BPETokenizer is one of them"):
        rl.resolve_config(config, types.SimpleNamespace(tokenizer=bpe))
    config = tiny_config("rl", **{"rl.reward_ids": ()})  # characters: the chars are tokens
    config.unlock()
    rl.resolve_config(config, types.SimpleNamespace(tokenizer=TOK))
    assert config.rl.reward_ids and all(TOK.vocab[i] in config.rl.reward_chars
                                        for i in config.rl.reward_ids)


def test_a_prompt_longer_than_the_room_keeps_its_last_tokens():
    """Rollouts hold max_len - max_new_tokens prompt tokens: a longer prompt keeps the
    tokens the completion follows (its tail), a shorter one is left as it is."""
    tokens, mask = encode_pairs(RECORDS, TOK, 32)
    prompts, lengths = rl.prompts_of({"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)},
                                     width=4)
    for i, rec in enumerate(RECORDS):
        want = TOK.encode(rec["prompt"])[-4:]
        assert int(lengths[i]) == len(want)
        assert np.asarray(prompts[i, :len(want)]).tolist() == list(want)
    prompts, lengths = rl.prompts_of({"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)},
                                     width=20)
    for i, rec in enumerate(RECORDS):
        want = TOK.encode(rec["prompt"])
        assert np.asarray(prompts[i, :len(want)]).tolist() == list(want)


def test_a_value_head_run_with_one_sample_per_prompt_evaluates():
    config = tiny_config("rl", **{"rl.algo": "ppo", "rl.value_head": True, "rl.samples": 1})
    config.unlock()
    rl.resolve_config(config, types.SimpleNamespace(tokenizer=TOK))  # accepted
    config.lock()
    _, model, batch, v = setup(**{"rl.algo": "ppo", "rl.value_head": True, "rl.samples": 1})
    sums = rl.eval_fn(v["params"], {"reference": v["reference"]}, batch, model=model,
                      config=config)  # was: "RLOO needs K >= 2" at the final evaluation
    assert float(sums["count"]) == len(RECORDS) and float(sums["kl"]) == 0.0


def test_rollouts_draw_only_the_tokenizers_ids_and_are_scored_over_them():
    # The model's vocabulary is padded (64 here) past the tokenizer's: those ids are not
    # text. Drawn and teacher-forced log-probs are both over the valid ids, so the first
    # importance ratio is still 1.
    config, model, batch, v = setup(**{"model.vocab_size": 64, "rl.valid_vocab": 40,
                                       "rl.max_new_tokens": 12})
    ro = rl.sample_rollouts(v["params"], {"reference": v["reference"]}, batch,
                            jax.random.key(2), model=model, config=config)
    completions = np.asarray(ro["seq"])[:, 1:][np.asarray(ro["mask"]) > 0]
    assert completions.size == 12 * len(RECORDS) * config.rl.samples and completions.max() < 40
    _, per = rl.rollout_terms(v["params"], {"reference": v["reference"]}, batch,
                              jax.random.key(2), model=model, config=config)
    assert float(jnp.max(per["ratio_error"])) < 1e-5
    config0, *_ = setup(**{"model.vocab_size": 64, "rl.max_new_tokens": 12})  # no mask
    ro0 = rl.sample_rollouts(v["params"], {"reference": v["reference"]}, batch,
                             jax.random.key(2), model=model, config=config0)
    assert np.asarray(ro0["seq"])[:, 1:][np.asarray(ro0["mask"]) > 0].max() >= 40
