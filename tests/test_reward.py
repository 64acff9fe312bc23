"""The reward-model family (genjax/families/reward.py): Bradley-Terry on pairs, a scalar
head read at the last real token.

Known answers: a fresh head scores 0, so the loss is ln 2 (margin m: log(1 + e^m)) and
the head's first gradient is -(1/2) mean(features_w - features_l), with the features
the plain LM's logits at each completion's last token (computed here on the unpadded
text); padding changes no score; with a scoring head, the margin and the centring term
the loss has its closed form; a held-out accuracy is the share of pairs scored right.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from genjax import families, preference
from genjax.data.preferences import encode_pairs
from genjax.errors import ConfigError
from genjax.families import reward
from tests.families import LORA, tiny_config, one_error_line
from tests.test_dpo import RECORDS, TOK


def setup(**overrides):
    config = tiny_config("reward", **overrides)
    model = reward.make_model(config)
    tokens, mask = encode_pairs(RECORDS, TOK, int(config.model.max_len))
    batch = {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)}
    params = nn.meta.unbox(reward.init_variables(model, jax.random.key(0), batch, config)["params"])
    return config, model, batch, params


def loss_of(params, batch, config, model):
    loss, (metrics, _) = reward.loss_fn(params, {}, batch, jax.random.key(1), model=model,
                                        config=config)
    return loss, metrics


def last_logits(model, params, text: str) -> np.ndarray:
    """The plain LM's logits after the last token of `text`, written at the start of a
    window of T tokens (T = 32)."""
    ids = np.zeros((1, 32), np.int32)
    ids[0, :len(text)] = TOK.encode(text)
    return np.asarray(_logits(model.body, params["body"], jnp.asarray(ids)))[0, len(text) - 1]


@functools.partial(jax.jit, static_argnums=0)
def _logits(body, params, ids):
    return body.apply({"params": params}, ids)


@pytest.mark.parametrize("margin", [0.0, 1.5])
def test_fresh_head_scores_zero_so_the_loss_is_known(margin):
    config, model, batch, params = setup(**{"reward.margin": margin})
    loss, metrics = loss_of(params, batch, config, model)
    assert float(loss) == pytest.approx(math.log1p(math.exp(margin)), abs=1e-6)
    assert float(metrics["reward_chosen"]) == 0.0


def test_first_head_gradient_is_half_the_feature_gap():
    config, model, batch, params = setup()
    grad = jax.grad(lambda p: loss_of(p, batch, config, model)[0])(params)
    gap = np.mean([last_logits(model, params, r["prompt"] + r["chosen"])
                   - last_logits(model, params, r["prompt"] + r["rejected"]) for r in RECORDS], 0)
    np.testing.assert_allclose(np.asarray(grad["head_w"]), -0.5 * gap, rtol=1e-4, atol=1e-6)
    assert float(grad["head_b"]) == 0.0


def test_scores_are_read_at_the_last_real_token_and_padding_changes_nothing():
    config, model, batch, params = setup()
    w = jax.random.normal(jax.random.key(2), params["head_w"].shape)
    params = {**params, "head_w": w, "head_b": jnp.float32(0.3)}
    r = np.asarray(reward.pair_rewards(params, model, batch, train=False))
    want = [[last_logits(model, params, rec["prompt"] + rec[k]) @ np.asarray(w) + 0.3
             for k in ("chosen", "rejected")] for rec in RECORDS]
    np.testing.assert_allclose(r, want, rtol=1e-4, atol=1e-5)
    noisy = np.asarray(batch["tokens"]).copy()
    for i, rec in enumerate(RECORDS):
        for j, k in enumerate(("chosen", "rejected")):
            noisy[i, j, len(rec["prompt"]) + len(rec[k]):] = 7
    r2 = reward.pair_rewards(params, model, {**batch, "tokens": jnp.asarray(noisy)}, train=False)
    np.testing.assert_allclose(np.asarray(r2), r, rtol=1e-6)


def test_a_scoring_head_with_margin_and_centring_has_the_closed_form_loss():
    """Rewards off zero: the loss is mean(-log sigma(r_w - r_l - m) + c (r_w + r_l)^2) with
    the rewards from the plain LM's last-token logits (computed here), m = 0.5, c = 0.1."""
    config, model, batch, params = setup(**{"reward.margin": 0.5, "reward.center": 0.1})
    w = jax.random.normal(jax.random.key(3), params["head_w"].shape)
    params = {**params, "head_w": w, "head_b": jnp.float32(-0.4)}
    r = np.array([[last_logits(model, params, rec["prompt"] + rec[k]) @ np.asarray(w, np.float64)
                   - 0.4 for k in ("chosen", "rejected")] for rec in RECORDS])
    d = r[:, 0] - r[:, 1] - 0.5
    want = np.mean(np.log1p(np.exp(-d)) + 0.1 * (r[:, 0] + r[:, 1]) ** 2)
    assert np.abs(r).min() > 0.05 and abs(want - math.log1p(math.exp(0.5))) > 0.05
    np.testing.assert_allclose(float(loss_of(params, batch, config, model)[0]), want, rtol=1e-4)


def test_eval_reports_held_out_pairwise_accuracy():
    config, model, batch, params = setup()
    params = {**params, "head_w": jax.random.normal(jax.random.key(5), params["head_w"].shape)}
    r = np.asarray(reward.pair_rewards(params, model, batch, train=False))
    pad = {k: jnp.concatenate([v, jnp.zeros_like(v[:1])]) for k, v in batch.items()}
    sums = reward.eval_fn(params, {}, pad, model=model, config=config)
    out = reward.finalize_eval(jax.device_get(sums))
    assert out["pairs"] == len(RECORDS)
    assert out["accuracy"] == pytest.approx(np.mean(r[:, 0] > r[:, 1]))


def test_lora_is_refused_because_it_would_freeze_the_head():
    config = tiny_config("reward", **LORA)
    family = families.for_config(config)
    model = family.make_model(config)
    with pytest.raises(ConfigError, match="freeze the scalar head"):
        family.init_variables(model, jax.random.key(0), family.example_batch(config, 2), config)


def test_a_row_the_model_cannot_read_to_its_end_is_one_error_line(tmp_path, data_dir):
    """The reward model reads a row's first max_len tokens: a row of max_len + 1 (which a
    DPO policy takes: inputs and targets) would leave its last token unscored."""
    from genjax.errors import UserError
    from tests.test_dpo import load, write_pairs
    T = int(tiny_config("reward").model.max_len)
    prompt = "A:\n"
    record = {"prompt": prompt, "chosen": "x" * (T + 1 - len(prompt)), "rejected": "y"}
    path = write_pairs(tmp_path, [RECORDS[1], record])
    assert len(load(path, seq_len=T).arrays("train")[0]) == 2  # a policy's row
    config = tiny_config("reward", **{"data.preferences": path})
    with pytest.raises(UserError, match=f"train.jsonl:2: prompt \\+ chosen is {T + 1} tokens, "
                                        f"longer than the {T} the model reads") as e:
        reward.make_data(config, process_index=0, process_count=1).arrays("train")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("key, value", [("reward.center", -0.1), ("reward.center", math.nan),
                                        ("reward.center", math.inf),
                                        ("reward.margin", math.nan)])
def test_a_center_or_margin_that_leaves_the_loss_unbounded_or_undefined_is_one_line(key, value):
    # With center c < 0 the loss of a pair scored (r, r) is ln 2 + 4 c r^2: -> -inf as r grows.
    assert float(preference.bradley_terry_loss(jnp.array(1e3), jnp.array(1e3), 0.0, -0.1)) < -1e5
    with one_error_line(ConfigError, match=f"config.{key}="):
        reward.check_settings(tiny_config("reward", **{key: value}))
    reward.check_settings(tiny_config("reward", **{"reward.center": 0.01}))  # TRL's
