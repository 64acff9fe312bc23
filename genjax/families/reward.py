"""Reward model: the transformer with a scalar head on the last real token, trained with
the Bradley-Terry loss on preference pairs (genjax/data/preferences.py, the DPO batch).

Batch: {"tokens": int32[B, 2, T + 1], "mask": float32[B, 2, T]} (row 0 chosen, 1 rejected).
Each row is scored on its first T tokens at the position of its last completion token
(from the mask; a row that fills all T + 1 slots is read at T - 1, its final token
unseen: keep prompt + completion <= T for reward data). Loss per pair
-log sigma(r_w - r_l - margin) + center (r_w + r_l)^2 (config.reward; genjax/preference.py).
A fresh head scores 0, so the step-0 loss is ln 2 (margin 0). Eval: held-out pairwise
accuracy (chosen scored above rejected), loss, mean margin.

`config.init_from` an LM checkpoint: its params become the body (the head stays 0).
LoRA is refused: it would freeze the head (a vector, not a kernel).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from genjax import preference
from genjax.errors import ConfigError
from genjax.families import dpo, lm, lora
from genjax.models import reward_model

# Capabilities (genjax/families/__init__.py)
def resolve_config(config, data) -> None:
    """The LM's vocabulary; config.reward checked (check_settings)."""
    lm.resolve_config(config, data)
    check_settings(config)


def check_settings(config) -> None:
    """reward.center >= 0 and a finite reward.margin, else one ConfigError line: with a
    negative center the loss is unbounded below as both rewards grow together."""
    center, margin = float(config.reward.center), float(config.reward.margin)
    if not (center >= 0 and math.isfinite(center)):
        raise ConfigError(f"config.reward.center={center}: must be >= 0 and finite (it "
                          "pulls r_w + r_l to 0; TRL's center_rewards_coefficient is 0.01)")
    if not math.isfinite(margin):
        raise ConfigError(f"config.reward.margin={margin}: must be finite")


text_tokenizer = lm.text_tokenizer
runtime_keys = ("model.dropout", "model.attention_impl")
example_batch = dpo.example_batch


def make_data(config, *, process_index: int, process_count: int):
    """DPO's pairs, each row at most max_len tokens: the model reads the first max_len
    (a row's last token at max_len + 1 would go unscored: one error line naming it)."""
    return dpo.make_data(config, process_index=process_index, process_count=process_count,
                         max_tokens=int(config.model.max_len))


def flops_per_example(config) -> float:
    """Per pair: the forward and backward (6N per token) of both sequences, max_len tokens
    each (the head reads the LM's logits: the vocabulary projection is computed)."""
    return 2 * lm.flops_per_example(config)


def make_model(config) -> reward_model.RewardModel:
    return reward_model.RewardModel(lm.make_model(config))


def init_variables(model, rng, batch, config) -> dict:
    if lora.enabled(config):
        raise ConfigError("family=reward with lora.rank > 0: LoRA would freeze the scalar "
                          "head; train the reward model in full (lora.rank=0)")
    tokens = jnp.asarray(batch["tokens"][:, 0, :-1])
    return model.init({"params": rng}, tokens, jnp.zeros(tokens.shape[0], jnp.int32))


def last_positions(mask_NxT):
    """Index of each row's last completion token in its first T tokens, int32[N]."""
    T = mask_NxT.shape[-1]
    last_target = T - 1 - jnp.argmax(mask_NxT[:, ::-1] > 0, axis=-1)
    return jnp.minimum(last_target + 1, T - 1).astype(jnp.int32)


def pair_rewards(params, model, batch, *, train: bool, rng=None):
    """Rewards float32[B, 2] of (chosen, rejected)."""
    tokens, mask = batch["tokens"], batch["mask"]
    B, _, T1 = tokens.shape
    flat = tokens.reshape(B * 2, T1)[:, :-1]
    last = last_positions(mask.reshape(B * 2, T1 - 1))
    rngs = {"dropout": rng} if rng is not None else None
    r = model.apply({"params": params}, flat, last, train=train, rngs=rngs)
    return r.reshape(B, 2)


def pair_terms(params, batch, rng, *, model, config, train: bool):
    r = pair_rewards(params, model, batch, train=train, rng=rng)
    c = config.reward
    loss = preference.bradley_terry_loss(r[:, 0], r[:, 1], float(c.margin), float(c.center))
    return loss, {"accuracy": (r[:, 0] > r[:, 1]).astype(jnp.float32),
                  "reward_chosen": r[:, 0], "reward_rejected": r[:, 1],
                  "reward_margin": r[:, 0] - r[:, 1]}


def loss_fn(params, model_state, batch, rng, *, model, config):
    loss, per_pair = pair_terms(params, batch, rng, model=model, config=config, train=True)
    return jnp.mean(loss), ({k: jnp.mean(v) for k, v in per_pair.items()}, model_state)


def eval_fn(params, model_state, batch, *, model, config):
    """Sums over real pairs (padded rows have all-zero masks) plus "count"."""
    loss, per_pair = pair_terms(params, batch, None, model=model, config=config, train=False)
    real = (jnp.sum(batch["mask"], axis=(1, 2)) > 0).astype(jnp.float32)
    return {"loss": jnp.sum(loss * real), **{k: jnp.sum(v * real) for k, v in per_pair.items()},
            "count": jnp.sum(real)}


finalize_eval = dpo.finalize_eval


def param_labels(params, config):
    return None


def pretrained_target(abstract_state):
    """init_from restores an LM checkpoint's params into the body."""
    return abstract_state.params["body"]


def load_pretrained(state, src_params, config):
    params = {**state.params, "body": src_params}
    state = state.replace(params=params)
    if jax.tree_util.tree_leaves(state.ema_params):
        state = state.replace(ema_params=jax.tree_util.tree_map(lambda x: x.copy(), params))
    return state

