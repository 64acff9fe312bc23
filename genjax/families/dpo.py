"""Direct preference optimisation of the LM transformer against a frozen reference.

Batch (genjax/data/preferences.py): {"tokens": int32[B, 2, T + 1], "mask": float32[B, 2, T]},
row 0 the chosen completion, row 1 the rejected one, both after the same prompt; a pair
stays on one device (the batch axis is B). A completion's log-probability is the sum of
its tokens' log-probs where mask = 1 (IPO: their mean), nats, normalised over the
tokenizer's ids (dpo.valid_vocab; the padded vocabulary's extra ids take no mass).

The reference is the policy at step 0, frozen in model_state["reference"] (checkpointed,
sharded like params, never differentiated). `config.init_from` places the pretrained
params in both. With LoRA (config.lora.rank > 0) the frozen base *is* the reference: no
second copy is kept, and the LoRA wrapper hands the base to this loss as
model_state["lora_base"] (genjax/families/lora.py). Losses (config.dpo.loss_type):
sigmoid (with label smoothing), ipo, hinge (genjax/preference.py); at step 0 the sigmoid
loss is ln 2 exactly.

Logged: the implicit rewards beta (log pi - log ref) of chosen and rejected, their
margin, the implicit reward accuracy (chosen reward > rejected), the policy log-probs.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from genjax import preference
from genjax.errors import ConfigError
from genjax.families import lm, lora
from genjax.sampling.filters import next_token_logps

REFERENCE = "reference"

# Capabilities (genjax/families/__init__.py): the policy is an LM
make_model = lm.make_model
model_kwargs = lm.model_kwargs  # the transformer's keys (export-gpt2)
text_tokenizer = lm.text_tokenizer
sample_text = lm.sample_text
runtime_keys = ("model.dropout", "model.attention_impl")


def resolve_config(config, data) -> None:
    """The LM's vocabulary (dpo.valid_vocab: the tokenizer's ids, over which log-probs
    are normalised, as the decoder and the alignment evaluator normalise them); config.dpo
    and model.dropout checked (check_settings)."""
    lm.resolve_config(config, data)
    config.dpo.valid_vocab = int(data.tokenizer.vocab_size)
    check_settings(config)


def check_settings(config) -> None:
    """One ConfigError line for a setting under which the step would optimise something
    other than the module docstring's loss: beta <= 0 (IPO divides by it, a negative one
    reverses the preference), label smoothing outside [0, 0.5) or with a loss that has
    none (ipo, hinge), or dropout (dropout_problem)."""
    d = config.dpo
    loss_type = preference.check_loss_type(str(d.loss_type))
    beta, eps = float(d.beta), float(d.label_smoothing)
    if not (beta > 0 and math.isfinite(beta)):
        problem = f"dpo.beta={beta}: must be > 0 and finite (the KL leash; TRL's is 0.1)"
    elif not 0 <= eps < 0.5:
        problem = f"dpo.label_smoothing={eps}: a label's flip probability, in [0, 0.5)"
    elif eps and loss_type != "sigmoid":
        problem = (f"dpo.label_smoothing={eps} with dpo.loss_type={loss_type!r}: only the "
                   "sigmoid loss smooths labels")
    else:
        problem = dropout_problem(config)
    if problem:
        raise ConfigError(f"config.{problem}")


def dropout_problem(config) -> str | None:
    """What is wrong with config.model.dropout under preference tuning, or None: the policy
    is scored in training mode and its frozen reference in eval mode, so dropout alone
    would make them differ (no ln 2 at step 0, noise in every margin). As TRL's
    disable_dropout, both run without it."""
    rate = float(config.model.get("dropout", 0.0))
    if rate > 0:
        return (f"model.dropout={rate}: preference tuning scores the policy and its frozen "
                "reference alike, without dropout; set it to 0")
    return None


def flops_per_example(config) -> float:
    """Per pair: the policy's forward and backward (6N per token) and the reference's
    forward (2N per token) of both completions, over max_len tokens each."""
    return 2 * lm.flops_per_example(config) * 4 / 3


def example_batch(config, batch_size: int) -> dict[str, np.ndarray]:
    T = int(config.model.max_len)
    return {"tokens": np.zeros((batch_size, 2, T + 1), np.int32),
            "mask": np.zeros((batch_size, 2, T), np.float32)}


def init_variables(model, rng, batch, config) -> dict:
    variables = dict(model.init({"params": rng}, jnp.asarray(batch["tokens"][:, 0, :-1])))
    if not lora.enabled(config):  # with LoRA the frozen base is the reference
        variables[REFERENCE] = jax.tree_util.tree_map(jnp.copy, variables["params"])
    return variables


def reference_params(model_state, like):
    """The frozen reference params, cast to the dtype of the policy's params `like`
    (a capability too: the alignment evaluator's reference policy)."""
    ref = model_state[REFERENCE] if REFERENCE in model_state else model_state[lora.BASE]
    return jax.tree_util.tree_map(lambda r, p: jax.lax.stop_gradient(r).astype(p.dtype),
                                  ref, like)


def lora_merged_state(model_state, base) -> dict:
    """A LoRA run's model_state as a run without LoRA holds it: its frozen base was the
    reference (lora.merge and quantize write this; inference applies it)."""
    return {**model_state, REFERENCE: base}


def completion_logps(model, params, batch, *, train: bool, rng=None, average: bool = False,
                     valid_vocab: int = 0):
    """Summed (average=True: mean) completion log-probs float32[B, 2] and token counts,
    over the ids below valid_vocab (0: all)."""
    tokens, mask = batch["tokens"], batch["mask"].astype(jnp.float32)
    B, _, T1 = tokens.shape
    flat = tokens.reshape(B * 2, T1)
    rngs = {"dropout": rng} if rng is not None else None
    logits = model.apply({"params": params}, flat[:, :-1], train=train, rngs=rngs)
    m = mask.reshape(B * 2, T1 - 1)
    # where, not a product: a padded position's target may be any id (-inf at ids >= V)
    logp_BxT = next_token_logps(logits, flat, valid_vocab or None)
    logp = jnp.sum(jnp.where(m > 0, logp_BxT, 0.0), -1)
    count = jnp.sum(m, -1)
    if average:
        logp = logp / jnp.maximum(count, 1.0)
    return logp.reshape(B, 2), count.reshape(B, 2)


def pair_terms(params, model_state, batch, rng, *, model, config, train: bool):
    """(per-pair loss [B], metrics of the pair [B] each) of the config's DPO loss."""
    d = config.dpo
    loss_type = preference.check_loss_type(str(d.loss_type))
    average, V = loss_type == "ipo", int(d.get("valid_vocab", 0))
    logp, _ = completion_logps(model, params, batch, train=train, rng=rng, average=average,
                               valid_vocab=V)
    ref, _ = completion_logps(model, reference_params(model_state, params), batch,
                              train=False, average=average, valid_vocab=V)
    delta = preference.log_ratio_margin(logp[:, 0], logp[:, 1], ref[:, 0], ref[:, 1])
    loss = preference.dpo_loss(delta, float(d.beta), loss_type, float(d.label_smoothing))
    rewards = preference.implicit_rewards(logp, ref, float(d.beta))
    return loss, {"reward_chosen": rewards[:, 0], "reward_rejected": rewards[:, 1],
                  "reward_margin": rewards[:, 0] - rewards[:, 1],
                  "reward_accuracy": (rewards[:, 0] > rewards[:, 1]).astype(jnp.float32),
                  "logp_chosen": logp[:, 0], "logp_rejected": logp[:, 1]}


def loss_fn(params, model_state, batch, rng, *, model, config):
    loss, per_pair = pair_terms(params, model_state, batch, rng, model=model, config=config,
                                train=True)
    metrics = {k: jnp.mean(v) for k, v in per_pair.items()}
    return jnp.mean(loss), (metrics, model_state)


def eval_fn(params, model_state, batch, *, model, config):
    """Sums over real pairs (a padded row has an all-zero mask) plus "count"."""
    loss, per_pair = pair_terms(params, model_state, batch, None, model=model, config=config,
                                train=False)
    real = (jnp.sum(batch["mask"], axis=(1, 2)) > 0).astype(jnp.float32)
    out = {k: jnp.sum(v * real) for k, v in per_pair.items()}
    return {"loss": jnp.sum(loss * real), **out, "count": jnp.sum(real)}


def finalize_eval(sums: dict) -> dict:
    count = max(float(sums["count"]), 1.0)
    return {**{k: float(v) / count for k, v in sums.items() if k != "count"}, "pairs": count}


def param_labels(params, config):
    return None


def load_pretrained(state, src_params, config):
    """init_from: the pretrained params are the policy's start and the reference."""
    copy = lambda t: jax.tree_util.tree_map(lambda x: x.copy(), t)  # noqa: E731
    state = state.replace(params=src_params,
                          model_state={**state.model_state, REFERENCE: copy(src_params)})
    if jax.tree_util.tree_leaves(state.ema_params):
        state = state.replace(ema_params=copy(src_params))
    return state


# ----------------------------------------------------------------------- data seam
def make_data(config, *, process_index: int, process_count: int, max_tokens: int = 0):
    """Preference pairs (genjax/data/preferences.py) encoded with the policy's tokenizer:
    init_from's (saved in its checkpoint meta) when set, else the text dataset's
    (lm.make_data picks it); rows of at most max_len + 1 tokens (or `max_tokens`)."""
    from genjax.data.preferences import PreferenceData
    text = lm.make_data(config, process_index=0, process_count=1)
    return PreferenceData(config.data, text.tokenizer, text.text,
                          seq_len=int(config.model.max_len),
                          global_batch_size=int(config.batch_size), seed=int(config.seed),
                          process_index=process_index, process_count=process_count,
                          max_tokens=max_tokens)

