"""The DPO family (genjax/families/dpo.py) and its pair data (genjax/data/preferences.py).

Known answers: the step-0 loss is ln 2 exactly (IPO 1/(2 beta)^2, hinge 1); the loss of a
moved policy equals -log sigma(beta delta) with each completion's log-prob computed
independently by the chain rule, log p(prompt + completion) - log p(prompt), from the
plain LM; padding tokens change nothing; the step-0 gradient is -(beta / 2) times the
gradient of log pi(chosen) - log pi(rejected).
"""
import dataclasses
import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import families
from genjax.data.preferences import PreferenceData, encode_pairs
from genjax.data.tokenizer import CharTokenizer
from genjax.errors import ConfigError, UserError
from genjax.families import dpo, lm, lora
from tests.families import LORA, tiny_config, one_error_line

TOK = CharTokenizer("\nabcdefghijklmnopqrstuvwxyz :ABCDEFGHIJKLMNOPQRSTUVWXYZ")
PAIR = ("chosen", "rejected")
RECORDS = [{"prompt": "ROMEO:\n", "chosen": "good morrow", "rejected": "morrow good"},
           {"prompt": "JULIET:\n", "chosen": "ay me", "rejected": "me ay me"},
           {"prompt": "NURSE:\n", "chosen": "anon", "rejected": "nona"},
           {"prompt": "A:\n", "chosen": "come hither now sir", "rejected": "sir hither come"}]


def setup(loss_type="sigmoid", **overrides):
    config = tiny_config("dpo", **{"dpo.loss_type": loss_type, **overrides})
    model = dpo.make_model(config)
    tokens, mask = encode_pairs(RECORDS, TOK, int(config.model.max_len))
    batch = {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)}
    variables = dpo.init_variables(model, jax.random.key(0), batch, config)
    return config, model, batch, variables


def loss_of(params, state, batch, config, model):
    loss, (metrics, _) = dpo.loss_fn(params, state, batch, jax.random.key(1), model=model,
                                     config=config)
    return loss, metrics


def moved(params, seed=3, scale=0.05):
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return tree.unflatten([x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("loss_type, want", [("sigmoid", math.log(2)), ("ipo", 25.0),
                                             ("hinge", 1.0)])
def test_step_zero_loss_is_known_exactly(loss_type, want):
    config, model, batch, v = setup(loss_type)
    loss, metrics = loss_of(v["params"], {"reference": v["reference"]}, batch, config, model)
    assert float(loss) == np.float32(want)
    assert float(metrics["reward_margin"]) == 0.0


def _chain_rule_logp(model, params, prompt: str, completion: str) -> float:
    """log p(completion | prompt) = log p(prompt + completion) - log p(prompt), nats; each
    a sum over the first n - 1 targets of the text written at the start of a window."""
    def seq_logp(text):
        ids = np.zeros((1, 33), np.int32)
        ids[0, :len(text)] = TOK.encode(text)
        nll = _nll(model, params, jnp.asarray(ids))
        return -float(jnp.sum(nll[0, :len(text) - 1]))
    return seq_logp(prompt + completion) - seq_logp(prompt)


@functools.partial(jax.jit, static_argnums=0)
def _nll(model, params, ids):
    return lm.token_nll(model.apply({"params": params}, ids[:, :-1]), ids[:, 1:])[0]


# Each loss of a pair's delta h (Rafailov et al. 2023; Azar et al. 2023: IPO's log-probs
# are per-token means; Zhao et al. 2023: hinge), written from the papers.
LOSS_OF_DELTA = {"sigmoid": lambda h, beta: math.log1p(math.exp(-beta * h)),
                 "ipo": lambda h, beta: (h - 1 / (2 * beta)) ** 2,
                 "hinge": lambda h, beta: max(0.0, 1 - beta * h)}


@pytest.mark.parametrize("loss_type", sorted(LOSS_OF_DELTA))
def test_loss_of_a_moved_policy_equals_the_chain_rule_answer(loss_type):
    config, model, batch, v = setup(loss_type)
    policy, ref = moved(v["params"]), v["reference"]
    beta = float(config.dpo.beta)
    deltas, chosen = [], []
    for r in RECORDS:
        n = {k: len(TOK.encode(r[k])) if loss_type == "ipo" else 1 for k in PAIR}
        lw, ll = (_chain_rule_logp(model, policy, r["prompt"], r[k]) / n[k] for k in PAIR)
        rw, rl = (_chain_rule_logp(model, ref, r["prompt"], r[k]) / n[k] for k in PAIR)
        deltas.append((lw - rw) - (ll - rl))
        chosen.append(lw)
    want = np.mean([LOSS_OF_DELTA[loss_type](d, beta) for d in deltas])
    step0 = LOSS_OF_DELTA[loss_type](0.0, beta)
    loss, metrics = loss_of(policy, {"reference": ref}, batch, config, model)
    assert abs(float(loss) - want) < 1e-5 * max(1.0, want) and abs(want - step0) > 1e-3
    # the shared prompt cancels in delta; the logged log-probs show it is not counted
    assert abs(float(metrics["logp_chosen"]) - np.mean(chosen)) < 1e-4
    acc = np.mean([d > 0 for d in deltas])
    assert float(metrics["reward_accuracy"]) == acc


def test_padding_tokens_change_nothing():
    config, model, batch, v = setup()
    policy, state = moved(v["params"]), {"reference": v["reference"]}
    tokens = np.asarray(batch["tokens"])
    lengths = [[len(r["prompt"]) + len(r[k]) for k in ("chosen", "rejected")] for r in RECORDS]
    noisy = tokens.copy()
    rng = np.random.default_rng(0)
    for i, row in enumerate(lengths):
        for j, n in enumerate(row):
            noisy[i, j, n:] = rng.integers(1, TOK.vocab_size, tokens.shape[-1] - n)
    assert (noisy != tokens).sum() > 50
    base, _ = loss_of(policy, state, batch, config, model)
    other, _ = loss_of(policy, state, {**batch, "tokens": jnp.asarray(noisy)}, config, model)
    np.testing.assert_allclose(float(other), float(base), rtol=1e-6)


def test_log_probs_are_normalised_over_the_tokenizers_ids_only():
    """The tokenizer has 55 ids, the model's padded vocabulary 64. resolve_config sets
    dpo.valid_vocab; the completion log-probs are then a float64 numpy log-softmax over the
    first 55 logits, and the padded ids' embedding rows (which only ever score) change
    nothing, however large."""
    config, model, batch, v = setup()
    config.unlock()
    dpo.resolve_config(config, dataclasses.make_dataclass("Data", ["tokenizer"])(TOK))
    V = int(config.dpo.valid_vocab)
    assert V == TOK.vocab_size == 55 < int(config.model.vocab_size)
    policy, state = moved(v["params"]), {"reference": v["reference"]}
    tokens = np.asarray(batch["tokens"]).reshape(-1, batch["tokens"].shape[-1])
    logits = np.asarray(model.apply({"params": policy}, jnp.asarray(tokens[:, :-1])), np.float64)
    z = logits[..., :V]
    logp = z - (np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1))[..., None]
    target = np.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
    want = (target * np.asarray(batch["mask"]).reshape(target.shape)).sum(-1).reshape(-1, 2)
    got, _ = dpo.completion_logps(model, policy, batch, train=False, valid_vocab=V)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)

    def loud(p):  # the padded ids' rows of the tied embedding, 30x larger
        emb = p["token_embed"].value
        return {**p, "token_embed": p["token_embed"].replace_boxed(emb.at[V:].multiply(30.0))}
    base, _ = loss_of(policy, state, batch, config, model)
    other, _ = loss_of(loud(policy), {"reference": loud(v["reference"])}, batch, config, model)
    np.testing.assert_allclose(float(other), float(base), rtol=1e-6)
    # a padded position may hold any id, one the tokenizer lacks too: still nothing changes
    tokens = np.asarray(batch["tokens"]).copy()
    tokens[:, :, -1] = V + 3  # every row is shorter than the window (setup's pairs)
    assert np.asarray(batch["mask"])[:, :, -1].max() == 0
    odd, _ = loss_of(policy, state, {**batch, "tokens": jnp.asarray(tokens)}, config, model)
    np.testing.assert_allclose(float(odd), float(base), rtol=1e-6)


def test_step_zero_gradient_is_minus_half_beta_times_the_log_ratio_gradient():
    config, model, batch, v = setup()
    state, beta = {"reference": v["reference"]}, float(config.dpo.beta)
    grad = jax.grad(lambda p: loss_of(p, state, batch, config, model)[0])(v["params"])

    def gap(p):  # mean over pairs of log pi(chosen) - log pi(rejected), chain-rule-free form
        logp, _ = dpo.completion_logps(model, p, batch, train=False)
        return jnp.mean(logp[:, 0] - logp[:, 1])
    want = jax.tree_util.tree_map(lambda g: -(beta / 2) * g, jax.grad(gap)(v["params"]))
    for a, b in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_unknown_loss_type_in_the_config_is_an_error():
    config, model, batch, v = setup("kto")
    with pytest.raises(ConfigError, match="loss_type='kto'.*sigmoid"):
        loss_of(v["params"], {"reference": v["reference"]}, batch, config, model)


@pytest.mark.parametrize("overrides, match", [
    ({"dpo.beta": 0.0}, r"dpo.beta=0.0: must be > 0"),  # IPO would divide by it
    ({"dpo.beta": -0.1}, r"dpo.beta=-0.1: must be > 0"),  # would reverse the preference
    ({"dpo.beta": math.inf}, r"dpo.beta=inf: must be > 0 and finite"),  # step 0: NaN, not ln 2
    ({"dpo.label_smoothing": 0.5}, r"label_smoothing=0.5: .* in \[0, 0.5\)"),
    ({"dpo.loss_type": "hinge", "dpo.label_smoothing": 0.1},
     "only the sigmoid loss smooths labels"),
    ({"model.dropout": 0.1}, "model.dropout=0.1: preference tuning scores the policy and")])
def test_settings_that_change_the_objective_are_one_error_line(overrides, match):
    with one_error_line(ConfigError, match=match):
        dpo.check_settings(tiny_config("dpo", **overrides))


def test_dropout_is_why_the_config_turns_it_off():
    """With dropout on the policy (training mode) and not on the reference, the step-0
    loss is not ln 2; the DPO config's tiny, cpu and gpu presets turn it off (the LM's gpu
    preset has 0.2)."""
    from configs import dpo_shakespeare
    config, model, batch, v = setup("sigmoid", **{"model.dropout": 0.3})
    loss, _ = loss_of(v["params"], {"reference": v["reference"]}, batch, config, model)
    assert abs(float(loss) - math.log(2)) > 1e-4
    for preset in ("tiny", "cpu", "gpu"):
        dpo.check_settings(dpo_shakespeare.get_config(preset))


def test_with_lora_the_frozen_base_is_the_reference_and_init_from_fills_both():
    config = tiny_config("dpo", **LORA)
    family = families.for_config(config)
    model = family.make_model(config)
    ex = family.example_batch(config, 2)
    variables = family.init_variables(model, jax.random.key(0), ex, config)
    assert "reference" not in variables and lora.BASE in variables

    @dataclasses.dataclass
    class State:
        params: dict
        model_state: dict
        ema_params: dict

        def replace(self, **kw):
            return dataclasses.replace(self, **kw)
    src = {"w": jnp.arange(3.0)}
    s = dpo.load_pretrained(State({"w": jnp.zeros(3)}, {"reference": {"w": jnp.zeros(3)}}, {}),
                            src, tiny_config("dpo"))
    assert np.array_equal(s.params["w"], src["w"])
    assert np.array_equal(s.model_state["reference"]["w"], src["w"])


# ------------------------------------------------------------------ data
def write_pairs(tmp_path, records, card=None):
    d = tmp_path / "prefs"
    d.mkdir(exist_ok=True)
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if card is not None:
        (d / "data_card.json").write_text(json.dumps(card))
    return str(d)


def load(path, seq_len=32):
    cfg = {"preferences": path, "max_pairs": 100}
    return PreferenceData(cfg, TOK, None, seq_len=seq_len, global_batch_size=2, seed=0)


def test_masks_cover_the_completion_targets_only():
    tokens, mask = encode_pairs(RECORDS[:1], TOK, 32)
    p, c = len("ROMEO:\n"), len("good morrow")
    assert mask[0, 0].tolist() == [0] * (p - 1) + [1] * c + [0] * (32 - p - c + 1)
    assert TOK.decode(tokens[0, 1][:p + c]) == "ROMEO:\nmorrow good"
    assert TOK.decode(tokens[0, 0][1:][mask[0, 0] > 0]) == "good morrow"


@pytest.mark.parametrize("record, card, match", [
    ({"prompt": "A:\n", "chosen": "same", "rejected": "same"}, None, "identical"),
    ({"prompt": "A:\n", "chosen": "", "rejected": "x"}, None, "empty chosen"),
    ({"prompt": "A:\n", "chosen": "x" * 40, "rejected": "y"}, None, "43 tokens, longer than"),
    ({"prompt": "A:\n", "chosen": "caf\u00e9", "rejected": "tea"}, None, "policy's tokenizer"),
    (RECORDS[0], {"tokenizer": {"kind": "char", "vocab": list("ab")}}, "another tokenizer")])
def test_bad_pairs_are_one_line_errors(tmp_path, record, card, match):
    path = write_pairs(tmp_path, [RECORDS[1], record], card)
    with one_error_line(UserError, match=match) as e:
        load(path)
    if card is None:
        assert "train.jsonl:2" in str(e.value)


def test_good_pairs_load_and_eval_batches_pad_with_zero_masks(tmp_path):
    path = write_pairs(tmp_path, RECORDS[:3])
    os.rename(os.path.join(path, "train.jsonl"), os.path.join(path, "validation.jsonl"))
    write_pairs(tmp_path, RECORDS)
    data = load(path)
    assert data.splits == ["train", "validation"]
    batches = list(data.eval_batches("validation", 2))
    assert len(batches) == 2 and batches[1]["mask"][1].sum() == 0
    assert batches[1]["mask"][0].sum() > 0
    # 3 processes cannot split a batch of 2 (or 10): rows were silently left out
    cfg = {"preferences": path, "max_pairs": 100}
    with pytest.raises(ValueError, match="batch_size=2 is not divisible by process_count=3"):
        PreferenceData(cfg, TOK, None, seq_len=32, global_batch_size=2, seed=0,
                       process_count=3)
    wide = PreferenceData(cfg, TOK, None, seq_len=32, global_batch_size=3, seed=0,
                          process_count=3)
    with pytest.raises(ValueError, match="eval batch_size=10 is not divisible"):
        next(wide.eval_batches("validation", 10))


def test_bad_pairs_stop_a_training_run_before_anything_is_trained(tmp_path, data_dir):
    from genjax import train
    bad = write_pairs(tmp_path, [RECORDS[0], {**RECORDS[1], "rejected": RECORDS[1]["chosen"]}])
    config = tiny_config("dpo", **{"model.vocab_size": 0, "data.preferences": bad})
    with pytest.raises(UserError, match="train.jsonl:2: chosen and rejected are identical"):
        train.train(config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()
