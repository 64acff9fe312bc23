r"""Online RL of the LM transformer with a KL leash: REINFORCE with a leave-one-out baseline
(RLOO, Ahmadian et al. 2024) or PPO (Schulman et al. 2017), rollouts sampled inside the
train step.

  python -m genjax.train --config=configs/rl_shakespeare.py:cpu --workdir=runs/rl_cpu \
      --config.init_from=runs/lm_cpu --config.rl.reward_from=runs/rm_cpu
  ... --config.rl.algo=ppo [--config.rl.value_head=True]       # PPO

Batch: the preference batch (genjax/data/preferences.py); only the prompts are used:
row 0's tokens before its first completion target (the last P = T - N of a longer
prompt, N = config.rl.max_new_tokens). Per step, with the step's key (so a resumed run samples the
same rollouts, bit for bit):
  1. K = config.rl.samples completions of N tokens per prompt from the jitted KV-cache
     decoder (genjax/sampling/lm.py) on stop_gradient(params), temperature 1, no filters
     but the tokenizer's ids (rl.valid_vocab: a padded vocabulary's extra ids are not
     text), no stop tokens; it returns each drawn token's log-prob.
  2. Teacher-forced log-probs of the same tokens, over the same ids, under the policy
     (differentiated) and the frozen reference (model_state["reference"]; the LoRA base under LoRA). At step 0
     the decoder's and the teacher-forced log-probs agree (1e-5): the first importance
     ratio is 1 (logged as ratio_error, max |log ratio| per token).
  3. Reward r (config.rl.reward):
       model  the learned reward model (genjax/families/reward.py) of the run
              config.rl.reward_from: its score of prompt + completion [P + N tokens],
              read at the last completion token, as the reward family scores a pair.
       chars  the character reward (ablation): the share of completion tokens in
              config.rl.reward_ids (resolve_config fills it from config.rl.reward_chars
              with the tokenizer: lower-case letters and spaces = readable prose).
     KL folded in: r - beta (log pi - log ref) summed over the completion (k1 estimate).
  4. Advantages: RLOO over the K samples of each prompt. The loss's value is the negated
     objective -mean(shaped reward); its gradient is -mean(A grad log pi(y)).

config.rl.algo: "rloo" (the above, one step per rollout batch) | "ppo": each rollout batch
(kept in model_state["rollout"], checkpointed) serves rl.ppo_epochs optimizer steps, with
per-token ratios clipped to 1 +- rl.clip; advantages RLOO's (per token), or with
rl.value_head GAE(rl.gamma, rl.lam) on a linear value head (params["value_head"], left
out of sampling, evaluation and other runs' init_from) with a clipped value loss
(rl.vf_coef, rl.clip_value). genjax/families/rl_ppo.py; the math in genjax/ppo.py.

The reward model: frozen params in model_state["reward"] (checkpointed, sharded by their
logical names, never differentiated, no optimizer state: distill's teacher pattern). Its
architecture is read from reward_from's checkpoint into config.rl.reward_model
(resolve_config), its tokenizer must be the tokenizer of this run's data, its max_len
must hold the rollouts (the policy's model.max_len), and it must be a `reward` run; each
is one error line before anything is written. Its raw params (not EMA) are placed at a
fresh start (the `frozen_from` capability; a resume reads them from the checkpoint).
"model" is the default: RLHF optimises the learned reward; "chars" is the ablation (with
reward_from set the model is still loaded and its score logged). Without reward_from,
rl.random_reward_model (tests) uses a fresh reward model with a random head.

Logged: reward (the r optimised), reward_chars (always), reward_model (the model's score,
when one is loaded), kl (k1), shaped reward, ratio_error; PPO adds its own (rl_ppo).
Not offered yet: a reward model with another tokenizer than the policy's.
"""
from __future__ import annotations

import functools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from genjax import checkpoint as ckpt_lib
from genjax import config_lib, optim, preference, same_model
from genjax.errors import ConfigError, UserError
from genjax.families import dpo, lm, reward, rl_ppo
from genjax.sampling import lm as decoder
from genjax.sampling.filters import next_token_logps

REWARD = "reward"             # model_state key of the frozen reward model's params
REWARDS = ("model", "chars")  # config.rl.reward choices

# Capabilities (genjax/families/__init__.py): the policy is an LM
make_model = lm.make_model
model_kwargs = lm.model_kwargs  # the transformer's keys (export-gpt2)
text_tokenizer = lm.text_tokenizer
sample_text = lm.sample_text
runtime_keys = ("model.attention_impl",)
example_batch = dpo.example_batch
make_data = dpo.make_data
finalize_eval = dpo.finalize_eval
reference_params = dpo.reference_params
lora_merged_state = dpo.lora_merged_state


def resolve_config(config, data) -> None:
    """The LM's vocabulary; config.rl.reward_ids from reward_chars when empty; the reward
    model's architecture from rl.reward_from's checkpoint, checked (module docstring)."""
    lm.resolve_config(config, data)
    c = config.rl
    c.valid_vocab = V = int(data.tokenizer.vocab_size)
    check_counts(config)
    if not c.reward_ids:
        vocab = getattr(data.tokenizer, "vocab", [])
        c.reward_ids = tuple(i for i, ch in enumerate(vocab) if ch in c.reward_chars)
    kind = reward_kind(config)
    if kind == "chars" and not c.reward_ids:
        raise ConfigError(f"config.rl.reward_chars={c.reward_chars!r}: no token of this "
                          f"{type(data.tokenizer).__name__} is one of them, so every rollout "
                          "would score 0; set config.rl.reward_ids or use rl.reward=model")
    if any(not 0 <= int(i) < V for i in c.reward_ids):
        raise ConfigError(f"config.rl.reward_ids={tuple(c.reward_ids)}: ids of this "
                          f"tokenizer are in [0, {V})")
    if c.reward_from:
        meta = reward_meta(c.reward_from)
        same_model.check_same_tokenizer(meta, data.meta(), c.reward_from,
                                        role="reward model", needs="scoring its samples")
        saved = meta["config"]["model"]
        how = {k.split(".", 1)[1] for k in lm.runtime_keys}  # kernels, remat: this run's
        for k in c.reward_model:
            if k in saved and k not in how:
                c.reward_model[k] = saved[k]
    elif kind == "model" and not c.random_reward_model:
        raise ConfigError("config.rl.reward='model' needs config.rl.reward_from=WORKDIR of a "
                          "`reward` run (configs/reward_shakespeare.py), or "
                          "config.rl.reward=chars for the character-reward ablation")
    if uses_reward_model(config):
        if not c.reward_model.vocab_size:
            c.reward_model.vocab_size = config.model.vocab_size
        if int(c.reward_model.vocab_size) < V:
            raise ConfigError(f"config.rl: the reward model reads ids < "
                              f"{c.reward_model.vocab_size} but the tokenizer's go up to "
                              f"{V - 1}: it needs this tokenizer's vocabulary")
        T, R = int(config.model.max_len), int(c.reward_model.max_len)
        if R < T:
            raise ConfigError(f"config.rl: rollouts are model.max_len={T} tokens (prompt + "
                              f"rl.max_new_tokens) but the reward model reads at most {R} "
                              f"(its max_len): use a policy with model.max_len <= {R}")


def check_counts(config) -> None:
    """rl.max_new_tokens, rl.beta and rl.samples (the algorithm's keys with them), each a
    ConfigError line before anything is written."""
    c, T = config.rl, int(config.model.max_len)
    N, K, beta = int(c.max_new_tokens), int(c.samples), float(c.beta)
    s = rl_ppo.settings(config)  # the algorithm's keys, checked
    need = 1 if s.value_head else 2  # RLOO's baseline is the other samples of the prompt
    if not 1 <= N < T:
        raise ConfigError(f"config.rl.max_new_tokens={N}: must be in [1, {T - 1}] (a rollout "
                          f"is its prompt and completion within model.max_len={T})")
    if not (beta >= 0 and math.isfinite(beta)):
        raise ConfigError(f"config.rl.beta={beta}: must be >= 0 and finite (the KL penalty; "
                          "a negative one pays the policy to leave the reference)")
    if K < need:
        raise ConfigError(f"config.rl.samples={K}: must be >= {need}" + (
            " (RLOO's baseline for a sample is the other samples of its prompt)"
            if need == 2 else ""))


def reward_kind(config) -> str:
    """config.rl.reward, checked: "model" | "chars" (runs saved before the key existed
    used the character reward)."""
    kind = str(config.rl.get("reward", "chars"))
    if kind not in REWARDS:
        raise ConfigError(f"config.rl.reward={kind!r}: choose one of {REWARDS}")
    return kind


def uses_reward_model(config) -> bool:
    """Whether model_state holds a reward model: it is the reward, or reward_from names one
    (the chars ablation then logs its score too)."""
    return reward_kind(config) == "model" or bool(config.rl.get("reward_from", ""))


def reward_meta(path: str) -> dict:
    """The checkpoint meta of the reward run at `path` (UserError if it is none)."""
    meta = ckpt_lib.run_meta(path, "config.rl.reward_from")
    family = meta.get("family", meta.get("config", {}).get("family"))
    if family != "reward":
        raise UserError(f"config.rl.reward_from={path!r} is a {family!r} run: it must be a "
                        "reward-model run (family reward, configs/reward_shakespeare.py)")
    return meta


def reward_view(config):
    """An object with `.model` = the reward model's keys (config.rl.reward_model; vocab_size
    0 = the policy's) and the run's compute dtype."""
    model = config_lib.ConfigDict(config_lib.to_dict(config.rl.reward_model))
    if not model.vocab_size:
        model.vocab_size = config.model.vocab_size
    return types.SimpleNamespace(model=model, compute_dtype=config.compute_dtype)


def reward_model_of(config):
    return reward.make_model(reward_view(config))


def init_variables(model, rng, batch, config) -> dict:
    """The policy and reference (dpo's), plus model_state["reward"] when a reward model is
    used: placeholder values (random head) that reward_from's replace at a fresh start;
    kept as they are with rl.random_reward_model (tests: scores that vary). PPO: the
    rollout buffer and the value head (genjax/families/rl_ppo.py)."""
    variables = dpo.init_variables(model, rng, batch, config)
    if uses_reward_model(config):
        rm = reward_model_of(config)
        tokens = jnp.asarray(batch["tokens"][:, 0, :-1])
        key_body, key_head = jax.random.split(jax.random.fold_in(rng, 2))
        params = dict(rm.init({"params": key_body}, tokens,
                              jnp.zeros(tokens.shape[0], jnp.int32))["params"])
        w = params["head_w"]
        V = int(rm.body.vocab_size)
        params["head_w"] = w.replace_boxed(jax.random.normal(key_head, (V,)) / math.sqrt(V))
        variables[REWARD] = params
    if rl_ppo.settings(config).algo == "ppo":  # the buffer: one step's rollouts of B prompts
        plain = nn.meta.unbox(variables)
        shapes = jax.eval_shape(lambda: sample_rollouts(
            plain["params"], plain, example_batch(config, int(config.batch_size)),
            jax.random.key(0), model=model, config=config))
        variables = rl_ppo.init_variables(variables, shapes, config)
    return variables


def merge_params(params, model_state):
    """Inference applies the LM alone (a PPO value head is left out)."""
    return rl_ppo.split(params)[0], model_state


def pretrained_target(abstract_state):
    """init_from restores the LM's params (not a value head)."""
    return rl_ppo.split(abstract_state.params)[0]


def load_pretrained(state, src_params, config):
    """init_from: dpo's (the policy's start and the reference); a value head stays fresh."""
    _, head = rl_ppo.split(state.params)
    _, ema_head = rl_ppo.split(state.ema_params)
    state = dpo.load_pretrained(state, src_params, config)
    if head is None:
        return state
    state = state.replace(params={**state.params, rl_ppo.VALUE_HEAD: head})
    if ema_head is not None:
        state = state.replace(ema_params={**state.ema_params, rl_ppo.VALUE_HEAD: ema_head})
    return state


def aux_params(config) -> tuple[str, ...]:
    """params keys that are no part of the LM: the PPO value head (rl_ppo)."""
    return (rl_ppo.VALUE_HEAD,) if rl_ppo.settings(config).value_head else ()


def frozen_from(config) -> dict[str, str]:
    """rl.reward_from's params become model_state["reward"] at a fresh start."""
    return {REWARD: str(config.rl.reward_from)} if config.rl.reward_from else {}


def flops_per_example(config) -> float:
    """Per prompt, its rl.samples rollouts (max_len tokens each), each: the policy's forward
    and backward (6N per token), the reference's forward (2N per token) and the reward
    model's forward (2N per token of its own N) when one is loaded. Not counted: decoding
    and PPO's forward of the old policy at a refresh step."""
    rm = lm.flops_per_example(reward_view(config)) / 3 if uses_reward_model(config) else 0.0
    return int(config.rl.samples) * (lm.flops_per_example(config) * 4 / 3 + rm)


def model_reward(model_state, seq_BxL, last_B, config) -> jax.Array:
    """The frozen reward model's score of each sequence read at position last_B (its last
    completion token), float32[B]; the reward family's model.apply (reward.pair_rewards)."""
    rm = reward_model_of(config)
    params = optim.cast_floating(jax.lax.stop_gradient(model_state[REWARD]), rm.body.dtype)
    return rm.apply({"params": params}, seq_BxL, last_B, train=False)


def prompts_of(batch, width: int):
    """(prompts int32[B, width], lengths int32[B]): row 0's tokens before its completion,
    the last `width` of a longer prompt (those the completion follows)."""
    mask, tokens = batch["mask"][:, 0], batch["tokens"][:, 0]
    lengths = jnp.argmax(mask > 0, axis=-1) + 1
    start = jnp.maximum(lengths - width, 0)
    idx = jnp.minimum(start[:, None] + jnp.arange(width)[None], tokens.shape[1] - 1)
    return (jnp.take_along_axis(tokens, idx, axis=1),
            jnp.clip(lengths, 1, width).astype(jnp.int32))


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


def token_logps(model, params, seq_BxL, valid_vocab: int = 0):
    """Teacher-forced log-prob of every next token, float32[B, L - 1], over the ids below
    valid_vocab (0: all; as the decoder draws them)."""
    return next_token_logps(model.apply({"params": params}, seq_BxL[:, :-1], train=False),
                            seq_BxL, valid_vocab or None)


def char_reward(completions_BxN, reward_ids) -> jax.Array:
    """Share of completion tokens in `reward_ids`, float32[B]."""
    ids = jnp.asarray(np.asarray(reward_ids, np.int32).reshape(-1))
    return jnp.mean(jnp.isin(completions_BxN, ids).astype(jnp.float32), axis=-1)


def sample_rollouts(params, model_state, batch, rng, *, model, config) -> dict:
    """One step's rollouts of `params` (not differentiated), R = B K rows (sample k of
    prompt b at row b K + k): seq int32[R, T], mask and ref (the reference's per-token
    log-probs) float32[R, T - 1], drawn (the decoder's log-probs) float32[R, N], lengths
    int32[R], and the rewards float32[R]: reward (the one optimised), reward_chars,
    reward_model (when a reward model is loaded)."""
    c = config.rl
    K, N = int(c.samples), int(c.max_new_tokens)
    prompts, lengths = prompts_of(batch, int(config.model.max_len) - N)
    prompts, lengths = jnp.repeat(prompts, K, 0), jnp.repeat(lengths, K, 0)
    V = int(c.get("valid_vocab", 0))
    out, drawn_BxN = decoder.decode_with_logprobs(
        model, params, prompts, lengths, rng=jax.random.key_data(rng),
        max_new_tokens=N, temperature=1.0, valid_vocab=V or None)
    seq, mask = join(prompts, lengths, out.tokens_BxN)
    ref = token_logps(model, dpo.reference_params(model_state, params), seq, V)
    scores = {"reward_chars": char_reward(out.tokens_BxN, c.reward_ids)}
    if uses_reward_model(config):
        scores["reward_model"] = model_reward(model_state, seq, lengths + N - 1, config)
    reward = scores["reward_model" if reward_kind(config) == "model" else "reward_chars"]
    return {"seq": seq, "mask": mask, "ref": ref, "drawn": drawn_BxN, "lengths": lengths,
            "reward": reward, **scores}


def rollout_terms(params, model_state, batch, rng, *, model, config):
    """(per-sample RLOO surrogate [B*K], metrics [B*K] each) of one step's rollouts."""
    c = config.rl
    ro = sample_rollouts(jax.lax.stop_gradient(params), model_state, batch, rng, model=model,
                         config=config)
    seq, mask, lengths, drawn_BxN = ro["seq"], ro["mask"], ro["lengths"], ro["drawn"]
    logp = token_logps(model, params, seq, int(c.get("valid_vocab", 0)))
    logp_seq, ref_seq = jnp.sum(logp * mask, -1), jnp.sum(ro["ref"] * mask, -1)
    scores = {k: ro[k] for k in ("reward_chars", "reward_model") if k in ro}
    shaped = preference.kl_shaped_reward(ro["reward"], jax.lax.stop_gradient(logp_seq),
                                         ref_seq, float(c.beta))
    K = int(c.samples)  # K = 1 (a value head's evaluation) needs no advantage
    adv = (preference.rloo_advantages(shaped.reshape(-1, K)).reshape(-1) if K > 1
           else jnp.zeros_like(shaped))
    drawn = jnp.sum(drawn_BxN, -1)
    per_token_gap = jnp.abs(jax.lax.stop_gradient(logp) - _scatter(drawn_BxN, lengths,
                                                                   logp.shape)) * mask
    # value: -(shaped reward), the negated objective; gradient: REINFORCE with RLOO
    sg = jax.lax.stop_gradient
    surrogate = -sg(adv) * (logp_seq - sg(logp_seq)) - sg(shaped)
    return surrogate, {
        "reward": ro["reward"], **scores, "kl": jax.lax.stop_gradient(logp_seq) - ref_seq,
        "shaped": shaped, "ratio_error": jnp.max(per_token_gap, -1), "logp_drawn": drawn}


def _scatter(logp_BxN, lengths_B, shape):
    """Decoder log-probs placed at their targets' positions in a [B, P + N - 1] grid."""
    t = jnp.arange(shape[1])[None]
    idx = jnp.clip(t - (lengths_B[:, None] - 1), 0, logp_BxN.shape[1] - 1)
    return jnp.take_along_axis(logp_BxN, idx, 1)


def loss_fn(params, model_state, batch, rng, *, model, config):
    if rl_ppo.settings(config).algo == "ppo":
        return rl_ppo.loss_fn(params, model_state, batch, rng, model=model, config=config,
                              rollouts=functools.partial(sample_rollouts, model=model,
                                                         config=config))
    surrogate, per = rollout_terms(params, model_state, batch, rng, model=model, config=config)
    metrics = {k: jnp.mean(v) for k, v in per.items()}
    metrics["ratio_error"] = jnp.max(per["ratio_error"])
    return jnp.mean(surrogate), (metrics, model_state)


def eval_fn(params, model_state, batch, *, model, config):
    """Held-out prompts: the rewards and k1 KL of K samples each (fixed key 0), summed."""
    _, per = rollout_terms(rl_ppo.split(params)[0], model_state, batch, jax.random.key(0),
                           model=model, config=config)
    K = int(config.rl.samples)
    real = jnp.repeat((jnp.sum(batch["mask"], axis=(1, 2)) > 0).astype(jnp.float32), K)
    keys = ("reward", "reward_chars", "reward_model", "kl")
    return {**{k: jnp.sum(per[k] * real) for k in keys if k in per}, "count": jnp.sum(real)}


def param_labels(params, config):
    """None (one group); with a value head: "policy" / "value" by top-level key, so that
    config.optim.groups.value can give the head its own settings (a larger lr)."""
    if rl_ppo.VALUE_HEAD not in params:
        return None
    group = lambda k: "value" if k == rl_ppo.VALUE_HEAD else "policy"  # noqa: E731
    return {k: jax.tree_util.tree_map(lambda _: group(k), v) for k, v in params.items()}
