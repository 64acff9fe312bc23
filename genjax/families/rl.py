"""Online RL of the LM transformer with a KL leash: REINFORCE with a leave-one-out baseline
(RLOO, Ahmadian et al. 2024), rollouts sampled inside the train step.

Batch: the preference batch (genjax/data/preferences.py); only the prompts are used:
row 0's tokens before its first completion target (at most P = T - N of them, N =
config.rl.max_new_tokens). Per step, with the step's key (so a resumed run samples the
same rollouts, bit for bit):
  1. K = config.rl.samples completions of N tokens per prompt from the jitted KV-cache
     decoder (genjax/sampling/lm.py) on stop_gradient(params), temperature 1, no filters,
     no stop tokens; it returns each drawn token's log-prob.
  2. Teacher-forced log-probs of the same tokens under the policy (differentiated) and
     the frozen reference (model_state["reference"]; the LoRA base under LoRA). At step 0
     the decoder's and the teacher-forced log-probs agree (1e-5): the first importance
     ratio is 1 (logged as ratio_error, max |log ratio| per token).
  3. Reward: the gold reward, the share of completion tokens in config.rl.reward_ids
     (resolve_config fills it from config.rl.reward_chars with the tokenizer: lower-case
     letters and spaces = readable prose); KL folded in: r - beta (log pi - log ref)
     summed over the completion (k1 estimate).
  4. Advantages: RLOO over the K samples of each prompt. The loss's value is the negated
     objective -mean(shaped reward); its gradient is -mean(A grad log pi(y)).
Logged: reward (gold), kl (k1), shaped reward, ratio_error. Not offered yet: a reward
model as the reward, PPO clipping, a value head.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genjax import preference
from genjax.families import dpo, lm
from genjax.sampling import lm as decoder

# Capabilities (genjax/families/__init__.py): the policy is an LM
make_model = lm.make_model
flops_per_example = lm.flops_per_example
text_tokenizer = lm.text_tokenizer
sample_text = lm.sample_text
runtime_keys = ("model.attention_impl",)
example_batch = dpo.example_batch
init_variables = dpo.init_variables
load_pretrained = dpo.load_pretrained
make_data = dpo.make_data
finalize_eval = dpo.finalize_eval
reference_params = dpo.reference_params


def resolve_config(config, data) -> None:
    """The LM's vocabulary, and config.rl.reward_ids from reward_chars when empty."""
    lm.resolve_config(config, data)
    if not config.rl.reward_ids:
        vocab = getattr(data.tokenizer, "vocab", [])
        config.rl.reward_ids = tuple(i for i, c in enumerate(vocab) if c in config.rl.reward_chars)


def prompts_of(batch, width: int):
    """(prompts int32[B, width], lengths int32[B]): row 0's tokens before its completion."""
    mask = batch["mask"][:, 0]
    lengths = jnp.argmax(mask > 0, axis=-1) + 1
    return batch["tokens"][:, 0, :width], jnp.clip(lengths, 1, width).astype(jnp.int32)


def join(prompts_BxP, lengths_B, completions_BxN):
    """(sequences int32[B, P + N], mask float32[B, P + N - 1]): prompt then completion,
    the mask on the completion's targets (as the preference batches)."""
    B, P = prompts_BxP.shape
    N = completions_BxN.shape[1]
    idx = jnp.arange(P + N)[None]
    from_prompt = idx < lengths_B[:, None]
    gen_idx = jnp.clip(idx - lengths_B[:, None], 0, N - 1)
    seq = jnp.where(from_prompt, jnp.take_along_axis(prompts_BxP, jnp.minimum(idx, P - 1)
                                                     .repeat(B, 0), 1),
                    jnp.take_along_axis(completions_BxN, gen_idx, 1))
    seq = jnp.where(idx < (lengths_B + N)[:, None], seq, 0)
    t = jnp.arange(P + N - 1)[None]
    mask = ((t >= lengths_B[:, None] - 1) & (t < (lengths_B + N - 1)[:, None]))
    return seq.astype(jnp.int32), mask.astype(jnp.float32)


def token_logps(model, params, seq_BxL):
    """Teacher-forced log-prob of every next token, float32[B, L - 1]."""
    nll, _ = lm.token_nll(model.apply({"params": params}, seq_BxL[:, :-1], train=False),
                          seq_BxL[:, 1:])
    return -nll


def gold_reward(completions_BxN, reward_ids) -> jax.Array:
    """Share of completion tokens in `reward_ids`, float32[B]."""
    ids = jnp.asarray(np.asarray(reward_ids, np.int32).reshape(-1))
    return jnp.mean(jnp.isin(completions_BxN, ids).astype(jnp.float32), axis=-1)


def rollout_terms(params, model_state, batch, rng, *, model, config):
    """(per-sample surrogate [B*K], metrics [B*K] each) of one step's rollouts."""
    c = config.rl
    K, N = int(c.samples), int(c.max_new_tokens)
    prompts, lengths = prompts_of(batch, int(config.model.max_len) - N)
    prompts, lengths = jnp.repeat(prompts, K, 0), jnp.repeat(lengths, K, 0)
    out, drawn_BxN = decoder.decode_with_logprobs(
        model, jax.lax.stop_gradient(params), prompts, lengths, rng=jax.random.key_data(rng),
        max_new_tokens=N, temperature=1.0)
    seq, mask = join(prompts, lengths, out.tokens_BxN)
    logp = token_logps(model, params, seq)
    ref = token_logps(model, dpo.reference_params(model_state, params), seq)
    logp_seq, ref_seq = jnp.sum(logp * mask, -1), jnp.sum(ref * mask, -1)
    reward = gold_reward(out.tokens_BxN, c.reward_ids)
    shaped = preference.kl_shaped_reward(reward, jax.lax.stop_gradient(logp_seq), ref_seq,
                                         float(c.beta))
    adv = preference.rloo_advantages(shaped.reshape(-1, K)).reshape(-1)
    drawn = jnp.sum(drawn_BxN, -1)
    per_token_gap = jnp.abs(jax.lax.stop_gradient(logp) - _scatter(drawn_BxN, lengths,
                                                                   logp.shape)) * mask
    # value: -(shaped reward), the negated objective; gradient: REINFORCE with RLOO
    sg = jax.lax.stop_gradient
    surrogate = -sg(adv) * (logp_seq - sg(logp_seq)) - sg(shaped)
    return surrogate, {
        "reward": reward, "kl": jax.lax.stop_gradient(logp_seq) - ref_seq, "shaped": shaped,
        "ratio_error": jnp.max(per_token_gap, -1), "logp_drawn": drawn}


def _scatter(logp_BxN, lengths_B, shape):
    """Decoder log-probs placed at their targets' positions in a [B, P + N - 1] grid."""
    t = jnp.arange(shape[1])[None]
    idx = jnp.clip(t - (lengths_B[:, None] - 1), 0, logp_BxN.shape[1] - 1)
    return jnp.take_along_axis(logp_BxN, idx, 1)


def loss_fn(params, model_state, batch, rng, *, model, config):
    surrogate, per = rollout_terms(params, model_state, batch, rng, model=model, config=config)
    metrics = {k: jnp.mean(v) for k, v in per.items()}
    metrics["ratio_error"] = jnp.max(per["ratio_error"])
    return jnp.mean(surrogate), (metrics, model_state)


def eval_fn(params, model_state, batch, *, model, config):
    """Held-out prompts: gold reward and k1 KL of greedy-free samples (fixed key 0)."""
    _, per = rollout_terms(params, model_state, batch, jax.random.key(0), model=model,
                           config=config)
    K = int(config.rl.samples)
    real = jnp.repeat((jnp.sum(batch["mask"], axis=(1, 2)) > 0).astype(jnp.float32), K)
    return {"reward": jnp.sum(per["reward"] * real), "kl": jnp.sum(per["kl"] * real),
            "count": jnp.sum(real)}


def param_labels(params, config):
    return None
