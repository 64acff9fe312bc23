"""Gold preference, sampled preference pairs and the alignment evaluator, with known answers.

The gold reward of hand-written strings equals the hand-computed value; win rate and KL
of a policy against itself are 1/2 and 0 exactly; teacher-forced completion log-probs of
a vocab-3 model enumerate a distribution over all 9 completions of length 2 (they sum
to 1 and equal a plain forward pass), and the evaluator's KL estimate on sampled
completions converges to the exact KL of that enumeration; sampled pairs below the
margin are dropped, and what sample_preferences writes is what the DPO reader reads.
"""
import json
import math

import flax.linen as nn
import jax
import numpy as np
import pytest

from genjax import evaluators as ev
from genjax import families, inference
from genjax.data import sample_preferences as sp
from genjax.errors import UserError
from genjax.evaluators import alignment, gold_reward, words
from genjax.families import lm
from genjax.sampling import completions
from tests.families import tiny_config


# ----------------------------------------------------------------------- gold reward
@pytest.mark.parametrize("t, vocab, want", [
    # 6/6 words known, both lines end in . or ,, 4 trigrams none repeated: 0.5 + 0.5 - 0
    ("Thou art a villain.\nGood morrow,", {"thou", "art", "a", "villain", "good", "morrow"},
     1.0),
    # 2/4 words known, no line complete, 2 distinct trigrams: 0.25
    ("zzz qqq\nthou art", {"thou", "art"}, 0.25),
    # a b a b a b: 3/6 words known ("a"), no complete line, trigrams aba bab aba bab: 2/4
    ("a b a b a b", {"a"}, 0.25 - 0.5),
    # speaker line and an exclamation complete, "JULIET" not: 2/3; 10 of 11 words known
    ("ROMEO:\nO, she doth teach the torches to burn bright!\n\nJULIET\n",
     {"romeo", "o", "she", "doth", "teach", "the", "torches", "to", "burn", "bright"},
     0.5 * 10 / 11 + 0.5 * 2 / 3),
    ("x x x x x x x x", set(), -5 / 6),  # nothing known, nothing complete, 5 of 6 repeats
    ("", set(), 0.0),
])
def test_gold_reward_of_hand_written_strings(t, vocab, want):
    assert gold_reward.gold_reward(t, frozenset(vocab)) == pytest.approx(want, abs=1e-12)
    assert -1.0 <= gold_reward.gold_reward(t, frozenset(vocab)) <= 1.0


def test_gold_reward_terms_and_definition():
    c = gold_reward.components("I know 'tis\nnot so", frozenset({"i", "know", "tis"}))
    assert c == {"word_share": 3 / 5, "complete_lines": 0.0, "repeated_3grams": 0.0}
    assert gold_reward.complete_lines("'tis so'\nay") == 0.5  # an apostrophe ends a line
    d = gold_reward.definition()
    assert d["weights"] == {"word_share": 0.5, "complete_lines": 0.5, "repeated_3grams": -1.0}
    assert d["range"] == [-1.0, 1.0]
    json.dumps(d)


def test_win_rate_counts_ties_half_and_kl_of_equal_log_probs_is_zero():
    assert alignment.win_rate([1.0, 0.0, 0.5], [0.0, 0.0, 1.0]) == 0.5  # (1 + 1/2 + 0) / 3
    assert alignment.win_rate([0.2, 0.9], [0.1, 0.3]) == 1.0
    g = list(np.random.default_rng(0).normal(size=50))
    assert alignment.win_rate(g, g) == 0.5
    assert alignment.kl_estimate([-3.0, -1.0], [-4.0, -1.5]) == 0.75


def test_make_pairs_keeps_best_vs_worst_and_drops_pairs_below_the_margin():
    prompts = ["A:\n", "B:\n", "C:\n", "D:\n"]
    texts = [["a0", "a1", "a2"], ["b0", "b1", "b2"], ["c0", "c1", "c2"], ["d0", "d1", "d2"]]
    scores = [[0.3, 0.1, 0.2], [0.5, 0.45, 0.5], [0.0, 0.0, 0.0], [0.5, 0.25, 0.5]]
    records, counts = sp.make_pairs(prompts, texts, scores, margin=0.25)
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in records] == [("D:\n", "d0", "d1")]
    assert counts == {"prompts": 4, "pairs": 1, "dropped_below_margin": 3,
                      "dropped_empty_or_identical": 0}
    records, counts = sp.make_pairs(prompts, texts, scores, margin=0.1)
    assert [(r["chosen"], r["rejected"], r["margin"]) for r in records] == \
        [("a0", "a1", pytest.approx(0.2)), ("d0", "d1", 0.25)]
    assert counts["dropped_below_margin"] == 2
    _, counts = sp.make_pairs(["E:\n"], [["same", "same"]], [[0.1, 0.1]], margin=0.0)
    assert counts["dropped_empty_or_identical"] == 1  # the reader refuses identical pairs


# ----------------------------------------------------------------------- KL, exactly
def _perturbed(params, seed: int):
    """3 x params + N(0, 0.3^2) noise: far from uniform, and a second policy per seed."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return tree.unflatten([3.0 * x + 0.3 * jax.random.normal(k, x.shape)
                           for x, k in zip(leaves, keys)])


def _vocab3_model():
    """A tiny transformer with 4 logit rows of which 3 are valid ids (the padding row is
    renormalised away), and two policies P, Q of it."""
    config = tiny_config("lm", **{"model.vocab_size": 4, "model.max_len": 8})
    model = lm.make_model(config)
    params = nn.meta.unbox(lm.init_variables(model, jax.random.key(0),
                                             lm.example_batch(config, 1), config)["params"])
    return model, _perturbed(params, 1), _perturbed(params, 2)


def _plain_logp(model, params, prompt, a, b):
    """log p(a | prompt) + log p(b | prompt, a) from one forward pass, over ids < 3."""
    logits = np.asarray(model.apply({"params": params}, np.array([[prompt, a, b]])),
                        np.float64)[0, :, :3]
    ls = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return ls[0, a] + ls[1, b]


def test_teacher_forced_logps_enumerate_a_distribution_and_kl_estimate_converges():
    model, P, Q = _vocab3_model()
    prompt = np.array([1], np.int32)
    all_9 = np.array([[a, b] for a in range(3) for b in range(3)], np.int32)
    lp = completions.completion_logps(model, P, [prompt] * 9, all_9, valid_vocab=3)
    lq = completions.completion_logps(model, Q, [prompt] * 9, all_9, valid_vocab=3)
    # float32 logits of two programs (a padded batch, one row): 1.3e-5 apart under jax 0.11.2
    np.testing.assert_allclose(lp, [_plain_logp(model, P, 1, a, b) for a, b in all_9],
                               atol=3e-5)
    assert abs(math.log(np.exp(lp).sum())) < 1e-5 and abs(math.log(np.exp(lq).sum())) < 1e-5
    p = np.exp(lp) / np.exp(lp).sum()
    exact_kl = float(np.sum(p * (lp - lq)))
    sd = float(np.sqrt(np.sum(p * (lp - lq - exact_kl) ** 2)))
    assert exact_kl > 0.05  # the two policies differ: the test can see an error

    n = 3000
    drawn = completions.sample(model, P, [prompt], k=n, max_new_tokens=2, seed=0,
                               valid_vocab=3)
    assert drawn.max() < 3  # the padding id is never drawn
    freq = np.bincount(drawn[:, 0] * 3 + drawn[:, 1], minlength=9) / n
    assert 0.5 * np.abs(freq - p).sum() < 0.04, (freq, p)  # temperature 1, no filters
    rows = [prompt] * n
    est = alignment.kl_estimate(
        completions.completion_logps(model, P, rows, drawn, valid_vocab=3),
        completions.completion_logps(model, Q, rows, drawn, valid_vocab=3))
    assert abs(est - exact_kl) < 4 * sd / math.sqrt(n), (est, exact_kl, sd)
    same = completions.completion_logps(model, P, rows, drawn, valid_vocab=3)
    assert abs(alignment.kl_estimate(same, same)) < 1e-6


# ----------------------------------------------------------------------- end to end
def test_sample_preferences_writes_what_the_reader_reads(tiny_run, tmp_path):
    source, out = tiny_run("lm"), tmp_path / "prefs"
    card = sp.sample_preferences(str(source), str(out), k=3, max_new_tokens=12, margin=0.05,
                                 seed=0, max_prompts=10)
    on_disk = json.loads((out / "data_card.json").read_text())
    assert on_disk == json.loads(json.dumps(card))
    assert card["source"]["step"] == 6 and len(card["source"]["state_sha256"]) == 64
    loaded = inference.load(str(source))
    vocab = words.vocabulary(
        loaded.family.make_data(loaded.config, process_index=0, process_count=1).text("train"))
    for split in ("train", "validation"):
        lines = [json.loads(x) for x in (out / f"{split}.jsonl").read_text().splitlines()]
        c = card["splits"][split]
        assert c["pairs"] == len(lines) and c["prompts"] == 10 and c["completions"] == 30
        assert c["prompts"] == (c["pairs"] + c["dropped_below_margin"]
                                + c["dropped_empty_or_identical"])
        for r in lines:  # the pair's margin is the gold reward's, and at least --margin
            m = gold_reward.gold_reward(r["chosen"], vocab) - gold_reward.gold_reward(
                r["rejected"], vocab)
            assert m == pytest.approx(r["margin"], abs=1e-6) and m >= 0.05
        if lines:
            assert c["mean_margin"] == pytest.approx(np.mean([r["margin"] for r in lines]))
    assert card["splits"]["train"]["pairs"] > 0, card["splits"]
    # the DPO family's reader takes the folder unchanged (tokenizer checked by the card)
    dpo = families.get(tiny_config("dpo").family)
    config = tiny_config("dpo", **{"data.preferences": str(out), "init_from": str(source),
                                   "batch_size": 1})
    data = dpo.make_data(config, process_index=0, process_count=1)
    assert len(data.arrays("train")[0]) == card["splits"]["train"]["pairs"]
    assert card["tokenizer"] == data.tokenizer.to_json()


def test_a_policy_against_itself_ties_everywhere_and_pays_no_kl(tiny_run):
    source = tiny_run("lm")
    loaded = inference.load(str(source))
    assert alignment.skip_reason(loaded.family, loaded.config) is not None  # no reference
    ctx = ev.from_loaded(loaded, str(source))
    s = alignment.settings(reference=str(source), num_prompts=4, max_new_tokens=16,
                           span_chars=10)
    r = ev.normalize("alignment", alignment.evaluate(ctx, s))
    m = r["metrics"]
    assert m["win_rate"] == 0.5 and abs(m["kl"]) < 1e-6
    for k in ("gold_reward", "distinct_2", "memorised_share"):
        assert m[k] == m[f"reference_{k}"] and k in r["floors"]
    assert r["details"]["policy_samples"] == r["details"]["reference_samples"]
    assert len(r["details"]["prompts"]) == 4


def test_alignment_on_a_tiny_dpo_run_against_its_frozen_reference(tiny_run):
    workdir = tiny_run("dpo")
    ctx = ev.from_loaded(inference.load(str(workdir)), str(workdir))
    r = ctx.run(["alignment"])["alignment"]  # configured by configs/dpo_shakespeare.py
    m = r["metrics"]
    assert set(m) == {"gold_reward", "reference_gold_reward", "win_rate", "kl", "distinct_2",
                      "reference_distinct_2", "memorised_share", "reference_memorised_share"}
    assert 0.0 <= m["win_rate"] <= 1.0 and math.isfinite(m["kl"])
    assert m["kl"] != 0.0  # six steps at lr 1e-3 moved the policy off its reference
    d = r["details"]
    g = gold_reward.gold_rewards(d["policy_samples"], words.vocabulary(ctx.data.text("train")))
    assert m["gold_reward"] == pytest.approx(np.mean(g))
    assert m["win_rate"] == alignment.win_rate(d["policy_gold"], d["reference_gold"])
    assert m["kl"] == pytest.approx(np.mean(d["log_ratio"]))
    assert "frozen reference" in d["reference"] and set(r["floors"]) >= {"gold_reward"}


@pytest.mark.parametrize("key, value", [("num_prompts", 0), ("num_prompts", -3),
                                        ("max_new_tokens", 0), ("span_chars", 0)])
def test_counts_it_cannot_run_with_are_one_line_and_no_prompts_is_no_win_rate(key, value):
    s = alignment.settings(**{key: value})
    with pytest.raises(UserError, match=f"alignment.{key}={value}: must be >= [01]"):
        ev.check_settings({"alignment": s}, ["alignment"])
    assert math.isnan(alignment.win_rate([], [])) and math.isnan(alignment.kl_estimate([], []))


def test_the_reward_vs_kl_script_stops_with_one_line_when_an_evaluation_fails(tmp_path):
    import os
    import subprocess
    import sys
    run = tmp_path / "sweep" / "0" / "dpo.beta=0.1" / "seed=0"
    run.mkdir(parents=True)
    (run / "final_metrics.json").write_text("{}")  # finished, but no checkpoint to evaluate
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, "experiments/2026-12-01_align/reward_vs_kl.py",
                        f"--root={tmp_path / 'sweep'}", f"--out={tmp_path / 'curve'}",
                        "--max_new_tokens=8"], cwd=root, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith(f"reward_vs_kl: evaluating {run}")
    assert not list(tmp_path.glob("curve*"))  # nothing half-written
