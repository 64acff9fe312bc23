"""Alignment: a policy against its reference under the gold preference, with the KL paid.

On `num_prompts` held-out prompts (speaker lines "ROMEO:\\n" of `prompt_split`, evenly
spaced over it; genjax/data/preferences.py speaker_prompts) one completion of
`max_new_tokens` tokens from the policy (this run's params) and one from the reference,
temperature 1, no filters, with one seed (genjax/sampling/completions.py: the two share
their noise, so identical models give identical samples). The reference is the run's
frozen reference policy (the family's `reference_params` capability: DPO, RL), or the
run at `reference=<workdir>` (same tokenizer), e.g. the LM a fine-tune started from.

  gold_reward, reference_gold_reward   mean gold reward of the samples
                   (genjax/evaluators/gold_reward.py: 0.5 word_share + 0.5 complete_lines
                   - repeated_3grams, in [-1, 1])
  win_rate         share of prompts where the policy's sample has the higher gold reward
                   than the reference's; ties count half (a policy against itself: 0.5)
  kl               KL(policy || reference) estimate, nats/sequence: the mean over the
                   policy's samples of sum_t log pi(y_t | .) - log pi_ref(y_t | .), both
                   teacher-forced (k1; unbiased, may come out negative on few prompts)
  distinct_2, memorised_share (and reference_...)   text.py's metrics of the samples
Floors: the same metrics of the true continuations of the same prompts (held-out text cut
to the samples' token count): what real unseen text scores.
"""
from __future__ import annotations

import numpy as np
from ml_collections import ConfigDict

from genjax import families, inference
from genjax.data import preferences
from genjax.errors import UserError
from genjax.evaluators import gold_reward, text, text_match, words
from genjax.sampling import completions

NEEDS = ("sample_text", "text_tokenizer")


def settings(**overrides) -> ConfigDict:
    """config.evals.alignment: the keys and their defaults (unknown overrides fail)."""
    s = ConfigDict()
    s.during_training = False      # True: also at each periodic eval (sampling is slow)
    s.num_prompts = 64             # held-out speaker-line prompts, one sample each per model
    s.max_new_tokens = 48          # completion length (prompt + this must fit the context)
    s.seed = 0                     # sampling seed (plus EvalContext.seed: --seed)
    s.reference = ""               # "" = the run's frozen reference; else a run's workdir
    s.prompt_split = "validation"  # prompts (and floors) from this held-out split
    s.span_chars = 30              # memorisation window (characters), as text.py's
    s.show_samples = 3             # prompts whose two samples the report quotes
    from genjax.evaluators import with_overrides
    return with_overrides("alignment", s, overrides)


def check_settings(s) -> None:
    """One UserError line for counts it cannot run with (0 prompts would report a win rate
    of 0, as if the policy always lost)."""
    for key in ("num_prompts", "max_new_tokens", "span_chars"):
        if int(s[key]) < 1:
            raise UserError(f"alignment.{key}={s[key]}: must be >= 1")


def skip_reason(family, config) -> str | None:
    if families.has(family, "reference_params"):
        return None
    if "alignment" in config.get("evals", {}) and config.evals.alignment.reference:
        return None
    return "the family keeps no reference policy: set evals.alignment.reference=<workdir>"


# ----------------------------------------------------------------------- metrics
def win_rate(policy: list[float], reference: list[float]) -> float:
    """Mean over pairs of 1 (policy higher), 1/2 (tie), 0 (reference higher); NaN: none."""
    p, r = np.asarray(policy, np.float64), np.asarray(reference, np.float64)
    if not len(p):
        return float("nan")
    return float(np.mean((p > r) + 0.5 * (p == r)))


def kl_estimate(logp_policy, logp_reference) -> float:
    """Mean of log pi(y) - log pi_ref(y) over samples y of the policy (nats/sequence)."""
    d = np.asarray(logp_policy, np.float64) - np.asarray(logp_reference, np.float64)
    return float(d.mean()) if d.size else float("nan")


def side_metrics(texts: list[str], vocab, index, span_chars: int) -> dict[str, float]:
    """Gold reward mean, distinct-2 and memorised share of one model's samples."""
    g = gold_reward.gold_rewards(texts, vocab)
    return {"gold_reward": float(np.mean(g)) if g else 0.0,
            "distinct_2": text.distinct_n(texts, 2),
            "memorised_share": text.memorised_share(index, texts, int(span_chars))}


# ----------------------------------------------------------------------- models
def reference_policy(ctx, s):
    """(model, params, source) of the reference: the run at s.reference, else the run's
    frozen one (families.reference_params)."""
    if s.reference:
        ref = inference.load(str(s.reference))
        mine = ctx.family.text_tokenizer(ctx.meta).to_json()
        if not families.has(ref.family, "text_tokenizer") or \
                ref.family.text_tokenizer(ref.meta).to_json() != mine:
            raise UserError(f"alignment.reference={s.reference!r}: that run's tokenizer is "
                            f"not this run's; a reference must read the same tokens")
        return ref.model, ref.params, f"{s.reference} (step {ref.step}, {ref.which})"
    state = ctx.model_state if ctx.step_model_state is None else ctx.step_model_state
    params = families.reference_params(ctx.family, state, ctx.params)
    if params is None:
        raise UserError("alignment: the family keeps no reference policy; set "
                        "evals.alignment.reference=<workdir>")
    return ctx.model, params, "the run's frozen reference (model_state)"


def held_out_prompts(ctx, s, tokenizer, max_len: int):
    """[(prompt, ids, true continuation)] of up to num_prompts speaker lines that fit."""
    N = int(s.max_new_tokens)
    if N >= max_len:
        raise UserError(f"alignment.max_new_tokens={N} leaves no room for a prompt in the "
                        f"context max_len={max_len}")
    found = []
    for prompt, cont in preferences.speaker_prompts(ctx.data.text(str(s.prompt_split))):
        try:
            ids = tokenizer.encode(prompt)
        except ValueError:  # a character the tokenizer lacks: not a prompt for this model
            continue
        if len(ids) + N <= max_len:
            found.append((prompt, np.asarray(ids, np.int32), cont))
    if not found:
        raise UserError(f"alignment: no speaker line of {s.prompt_split!r} fits "
                        f"max_new_tokens={N} in the context {max_len}")
    keep = np.unique(np.linspace(0, len(found) - 1, min(int(s.num_prompts), len(found)))
                     .round().astype(int))
    return [found[i] for i in keep]


def real_continuations(tokenizer, conts: list[str], n: int) -> list[str]:
    """The true continuations cut to n tokens ([] if the tokenizer cannot read them)."""
    try:
        return [tokenizer.decode(tokenizer.encode(c)[:n].tolist()) for c in conts]
    except ValueError:
        return []


# ----------------------------------------------------------------------- evaluate
def evaluate(ctx, settings) -> dict:
    s = settings
    tokenizer = ctx.family.text_tokenizer(ctx.meta)
    ref_model, ref_params, source = reference_policy(ctx, s)
    max_len = min(int(ctx.model.max_len), int(ref_model.max_len))
    prompts = held_out_prompts(ctx, s, tokenizer, max_len)
    ids = [p[1] for p in prompts]
    V, N, seed = int(tokenizer.vocab_size), int(s.max_new_tokens), int(s.seed) + int(ctx.seed)
    pol = completions.sample(ctx.model, ctx.params, ids, k=1, max_new_tokens=N, seed=seed,
                             valid_vocab=V)
    ref = completions.sample(ref_model, ref_params, ids, k=1, max_new_tokens=N, seed=seed,
                             valid_vocab=V)
    logp_pol = completions.completion_logps(ctx.model, ctx.params, ids, pol, valid_vocab=V)
    logp_ref = completions.completion_logps(ref_model, ref_params, ids, pol, valid_vocab=V)
    pol_texts = [tokenizer.decode(t.tolist()) for t in pol]
    ref_texts = [tokenizer.decode(t.tolist()) for t in ref]

    train_text = ctx.data.text("train")
    vocab, index = words.vocabulary(train_text), text_match.index_for(train_text)
    g_pol = gold_reward.gold_rewards(pol_texts, vocab)
    g_ref = gold_reward.gold_rewards(ref_texts, vocab)
    mine = side_metrics(pol_texts, vocab, index, s.span_chars)
    theirs = side_metrics(ref_texts, vocab, index, s.span_chars)
    metrics = {**mine, **{f"reference_{k}": v for k, v in theirs.items()},
               "win_rate": win_rate(g_pol, g_ref), "kl": kl_estimate(logp_pol, logp_ref)}
    real = real_continuations(tokenizer, [p[2] for p in prompts], N)
    floors = {}
    if real:
        floor = side_metrics(real, vocab, index, s.span_chars)
        floors = {**floor, **{f"reference_{k}": v for k, v in floor.items()}}
    details = {"reference": source, "prompts": [p[0] for p in prompts],
               "policy_samples": pol_texts, "reference_samples": ref_texts,
               "policy_gold": g_pol, "reference_gold": g_ref,
               "log_ratio": (logp_pol - logp_ref).tolist(),
               "gold_reward_definition": gold_reward.definition(), "settings": s.to_dict()}
    return {"metrics": metrics, "floors": floors, "figures": [],
            "markdown": _markdown(ctx, s, source, prompts, pol_texts, ref_texts, g_pol, g_ref),
            "details": details}


def _markdown(ctx, s, source, prompts, pol_texts, ref_texts, g_pol, g_ref) -> str:
    md = [f"{len(prompts)} held-out prompts (speaker lines of {s.prompt_split}), one sample "
          f"of {s.max_new_tokens} tokens each from the policy ({ctx.which} params, step "
          f"{ctx.step}) and from the reference ({source}), temperature 1, no filters, one "
          f"seed. Gold reward: {gold_reward.definition()['formula']}. KL: teacher-forced "
          f"log-ratio on the policy's samples, nats/sequence. Floors: the true continuations."]
    for i in range(min(int(s.show_samples), len(prompts))):
        md += ["", f"Prompt {i + 1} `{prompts[i][0].strip()}`: policy (gold {g_pol[i]:.3f}) "
               f"then reference (gold {g_ref[i]:.3f}):", ""]
        for t in (pol_texts[i], ref_texts[i]):
            md += ["```text", (prompts[i][0] + t).replace("```", "'''"), "```"]
    return "\n".join(md)
