r"""LM knowledge distillation: a student Transformer learns from a frozen teacher's logits.

  python -m genjax.train --config=configs/lm_shakespeare.py:cpu --workdir=runs/teacher
  python -m genjax.train --config=configs/distill_shakespeare.py:cpu --workdir=runs/student \
      --config.init_from=runs/teacher

Loss per token (logits z, temperature tau, p^tau = softmax(z / tau)):

  alpha * tau^2 * D(p_T^tau, p_S^tau) + (1 - alpha) * CE(student, next token)

with `config.distill.divergence` D:
  forward   KL(p_T || p_S)            (Hinton et al.; Tunix `logit` strategy)
  reverse   KL(p_S || p_T)            (mode seeking; MiniLLM)
  jsd       JSD_beta / (beta (1 - beta)), where JSD_beta = beta KL(p_T || M) +
            (1 - beta) KL(p_S || M) and M = beta p_T + (1 - beta) p_S is the mixture of the
            PROBABILITIES (GKD, Agarwal et al. 2024; trl #2202: not of the log-probs).
            JSD_beta -> beta KL(T || S) as beta -> 0 and -> (1 - beta) KL(S || T) as
            beta -> 1, so the normalised form is continuous on [0, 1] with endpoints
            exactly forward (beta = 0) and reverse (beta = 1) KL. At beta = 0.5 it is
            4 x the plain JSD (trl's GKD value): scale alpha to compare with trl.
tau^2 keeps the gradient scale of the soft term independent of tau (Hinton et al.). The
divergences have closed-form gradients w.r.t. the student logits (custom VJP) that vanish
identically when student and teacher logits are equal; the teacher gets no gradient.

The teacher: frozen params in `model_state["teacher"]` (checkpointed, sharded by their
logical names, never differentiated, no optimizer state: the LoRA base pattern).
`config.init_from` names the teacher's workdir (or dir/step): `resolve_config` reads its
checkpoint meta, takes the teacher's architecture from its saved config (so the student
may be any size) and checks that its tokenizer is the tokenizer of this run's data (else
one error line); `load_pretrained` then places its params (raw, not EMA) as the teacher.
Without init_from a run is an error unless `config.distill.random_teacher` (the `tiny`
preset, for tests): the teacher is then initialised from the run's seed with
`config.distill.teacher_model` (a full model config; vocab_size 0 = the student's).
Sampling and evaluation use the student alone (`merge_params` drops the teacher).

On-policy rows (GKD, Agarwal et al. 2024; trl's GKDTrainer `lmbda`): with
`config.distill.on_policy` = lambda > 0, the first K = round(lambda B) rows of every batch
[B, T + 1] keep their first P = T - N tokens (N = `config.distill.on_policy_tokens`) as a
prompt and get N tokens sampled by the STUDENT (stop_gradient(params), the jitted KV-cache
decoder genjax/sampling/lm.py, `config.distill.on_policy_temperature`, no filters) with
the second half of split(step key) (the first is dropout's), so a resumed run samples the
same tokens. Such a row (T + 1 tokens) = prompt, N samples, one pad token (the decoder
fits P + N <= max_len = T; the pad is the N-th sample's target). Both models are then
teacher-forced on the whole new batch (one forward each); on an on-policy row D counts only
at the N positions whose targets are the samples (the prompt and the final pad position
are masked) and it takes no CE (not even on its prompt: a row is of one kind); the
off-policy rows as before:
  alpha tau^2 mean_{D positions}(D) + (1 - alpha) mean_{off-policy positions}(CE)
(lambda = 1: no CE at all). A fixed row count rather than trl's per-step coin (the whole
batch on-policy with probability lambda) keeps shapes static, costs the same decode every
step and mixes both kinds in each gradient; the batches are shuffled, so the first K rows
are a random subset. lambda = 0 runs exactly the off-policy step. Logged: kd_sampled (D on
the sampled positions). Not built: sequence-level KD.
"""
from __future__ import annotations

import functools
import types
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genjax import checkpoint as ckpt_lib
from genjax import config_lib, same_model
from genjax.errors import ConfigError, UserError
from genjax.families import lm, lora, rl
from genjax.models import transformer
from genjax.ppo import masked_mean
from genjax.sampling import lm as decoder

TEACHER = "teacher"  # model_state key of the frozen teacher params
DIVERGENCES = ("forward", "reverse", "jsd")

# The student is an LM: everything that does not take the teacher is the LM family's.
make_model = lm.make_model
model_kwargs = lm.model_kwargs  # the transformer's keys (export-gpt2)
example_batch = lm.example_batch
make_data = lm.make_data
finalize_eval = lm.finalize_eval
throughput_unit = lm.throughput_unit
text_tokenizer = lm.text_tokenizer
sample_text = lm.sample_text
likelihood_metrics = lm.likelihood_metrics
runtime_keys = lm.runtime_keys


# ----------------------------------------------------------------------- divergences
@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def divergence(zs, zt, beta: float):
    """D(p_T || p_S) per position for logits zs, zt [..., V] (already divided by tau);
    `beta` (a Python float, see `beta_of`) < 0: forward KL, > 1: reverse KL, in [0, 1]:
    the normalised generalized JSD (module docstring). Only the chosen one is computed."""
    return _divergence_fwd(zs, zt, beta)[0]


def _mixture_logp(ls, lt, beta):
    """log(beta p_T + (1 - beta) p_S), mixed in probability space, relative to the larger
    of the two log-probs (stable; exactly log p_S where log p_T == log p_S)."""
    d = lt - ls
    below = ls + jnp.log1p(beta * jnp.expm1(jnp.minimum(d, 0.0)))         # p_T <= p_S
    above = lt + jnp.log1p((1 - beta) * jnp.expm1(jnp.minimum(-d, 0.0)))  # p_T > p_S
    return jnp.where(d <= 0, below, above)


def _divergence_fwd(zs, zt, beta: float):
    ls, lt = jax.nn.log_softmax(zs, -1), jax.nn.log_softmax(zt, -1)
    ps, pt = jnp.exp(ls), jnp.exp(lt)
    if beta <= 0:  # forward KL(T || S)
        return jnp.sum(pt * (lt - ls), -1), (ps, pt)
    if beta >= 1:  # reverse KL(S || T)
        r = ls - lt
        kl = jnp.sum(ps * r, -1)
        return kl, (ps, r - kl[..., None])
    r_m = ls - _mixture_logp(ls, lt, beta)
    kl_sm = jnp.sum(ps * r_m, -1)
    jsd = beta * jnp.sum(pt * (r_m - (ls - lt)), -1) + (1 - beta) * kl_sm
    return jsd / (beta * (1 - beta)), (ps, r_m - kl_sm[..., None])


def _divergence_bwd(beta: float, res, g):
    """Closed forms w.r.t. the student logits: d KL(T||S) = p_S - p_T; d KL(S||T) =
    p_S (r - E_S r), r = log p_S - log p_T; d JSD_beta = (1 - beta) p_S (r_M - E_S r_M),
    r_M = log p_S - log M (the terms through M cancel). The teacher gets none."""
    ps, other = res
    if beta <= 0:
        d = ps - other
    elif beta >= 1:
        d = ps * other
    else:
        d = ps * other / beta
    return g[..., None] * d, jnp.zeros_like(ps)


divergence.defvjp(_divergence_fwd, _divergence_bwd)


def beta_of(divergence_name: str, beta: float) -> float:
    """The `beta` argument of `divergence` that selects `divergence_name`."""
    if divergence_name not in DIVERGENCES:
        raise ConfigError(f"config.distill.divergence={divergence_name!r}: choose one of "
                          f"{DIVERGENCES}")
    if divergence_name == "jsd" and not 0.0 <= beta <= 1.0:
        raise ConfigError(f"config.distill.beta={beta}: the JSD mixture weight is in [0, 1]")
    return {"forward": -1.0, "reverse": 2.0, "jsd": float(beta)}[divergence_name]


class OnPolicyMasks(NamedTuple):
    """Where a batch with on-policy rows is scored (`on_policy_batch`)."""
    sampled_BxT: jax.Array  # f32: 1 where the target is a student sample (on-policy rows)
    data_B: jax.Array       # f32: 1 on the off-policy rows (data targets everywhere)


def distill_loss(student_logits, teacher_logits, targets, *, alpha: float, tau: float,
                 divergence_name: str, beta: float = 0.5, masks: OnPolicyMasks | None = None):
    """(loss, metrics) for logits [B, T, V] and next tokens targets int[B, T]: the
    module docstring's alpha tau^2 D + (1 - alpha) CE, means over tokens, nats/token.
    `masks` (on-policy rows): D over the sampled positions and the off-policy rows, CE and
    accuracy over the off-policy rows; None: every position (exactly the plain means)."""
    b = beta_of(divergence_name, beta)
    zs = student_logits.astype(jnp.float32)
    zt = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
    kd_BxT = divergence(zs / tau, zt / tau, b)
    nll_BxT, _ = lm.token_nll(zs, targets)
    correct_BxT = jnp.argmax(zs, -1) == targets
    if masks is None:
        metrics = {"nll": jnp.mean(nll_BxT), "kd": jnp.mean(kd_BxT),
                   "accuracy": jnp.mean(correct_BxT)}
    else:
        data_BxT = jnp.broadcast_to(masks.data_B[:, None], nll_BxT.shape)
        metrics = {"nll": masked_mean(nll_BxT, data_BxT),
                   "kd": masked_mean(kd_BxT, jnp.maximum(masks.sampled_BxT, data_BxT)),
                   "accuracy": masked_mean(correct_BxT, data_BxT),
                   "kd_sampled": masked_mean(kd_BxT, masks.sampled_BxT)}
    loss = alpha * tau ** 2 * metrics["kd"] + (1.0 - alpha) * metrics["nll"]
    return loss, metrics


# ----------------------------------------------------------------------- on-policy rows
def on_policy_rows(fraction: float, batch_rows: int) -> int:
    """K = round(fraction * batch_rows) (half to even) rows sampled by the student;
    ConfigError outside [0, 1]."""
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"config.distill.on_policy={fraction}: the on-policy fraction of "
                          "each batch is in [0, 1]")
    return int(round(fraction * batch_rows))


def on_policy_settings(config) -> tuple[float, int, float]:
    """(lambda, N, sampling temperature); runs saved before on-policy existed: lambda 0."""
    d = config.distill
    return (float(d.get("on_policy", 0.0)), int(d.get("on_policy_tokens", 1)),
            float(d.get("on_policy_temperature", 1.0)))


def check_on_policy(config) -> None:
    """One ConfigError line for a fraction outside [0, 1], one that rounds to no row, or
    N / temperature that the context cannot hold."""
    fraction, n, temperature = on_policy_settings(config)
    B, T = int(config.batch_size), int(config.model.max_len)
    rows = on_policy_rows(fraction, B)  # first: the range
    if fraction == 0.0:
        return
    if rows == 0:
        raise ConfigError(f"config.distill.on_policy={fraction} of batch_size {B} rounds to "
                          "no row: raise it (or 0 to turn on-policy rows off)")
    if not 1 <= n <= T - 1:
        raise ConfigError(f"config.distill.on_policy_tokens={n}: must be in [1, {T - 1}] "
                          f"(model.max_len {T} holds a prompt of >= 1 token and N samples)")
    if temperature < 0:
        raise ConfigError(f"config.distill.on_policy_temperature={temperature}: must be >= 0 "
                          "(0 = greedy)")


def on_policy_batch(model, params, tokens_BxL, rng, *, rows: int, new_tokens: int,
                    temperature: float, valid_vocab: int = 0):
    """(tokens int32[B, L], OnPolicyMasks) with L = T + 1: the first `rows` rows become
    their first P = T - N tokens, N = `new_tokens` student samples of ids below
    `valid_vocab` (0: any; decoder key key_data(rng)) and one pad token (0); the other rows
    are unchanged."""
    B, L = tokens_BxL.shape
    P, T = L - 1 - new_tokens, L - 1
    prompts_KxP = tokens_BxL[:rows, :P]
    lengths_K = np.full((rows,), P, np.int32)
    out = decoder.decode(model, jax.lax.stop_gradient(params), prompts_KxP, lengths_K,
                         rng=jax.random.key_data(rng), max_new_tokens=new_tokens,
                         temperature=temperature, valid_vocab=valid_vocab or None)
    seq_KxT, sampled_KxTm1 = rl.join(prompts_KxP, lengths_K, out.tokens_BxN)
    tokens = jnp.concatenate([jnp.pad(seq_KxT, ((0, 0), (0, 1))), tokens_BxL[rows:]], 0)
    sampled = jnp.concatenate([jnp.pad(sampled_KxTm1, ((0, 0), (0, 1))),
                               jnp.zeros((B - rows, T), jnp.float32)], 0)
    data = (jnp.arange(B) >= rows).astype(jnp.float32)
    return tokens.astype(tokens_BxL.dtype), OnPolicyMasks(sampled, data)


# ----------------------------------------------------------------------- the teacher
def teacher_view(config):
    """An object with `.model` = the teacher's model keys (`config.distill.teacher_model`,
    a full model config; vocab_size 0 = the student's) and the run's compute dtype."""
    model = config_lib.ConfigDict(config_lib.to_dict(config.distill.teacher_model))
    if not model.vocab_size:
        model.vocab_size = config.model.vocab_size
    return types.SimpleNamespace(model=model, compute_dtype=config.compute_dtype)


def teacher_model(config) -> transformer.Transformer:
    return lm.make_model(teacher_view(config))


def init_variables(model, rng, batch, config) -> dict:
    student = lm.init_variables(model, rng, batch, config)
    teacher = lm.init_variables(teacher_model(config), jax.random.fold_in(rng, 1), batch, config)
    return {**student, TEACHER: teacher["params"]}


def _teacher_logits(model_state, tokens, config):
    tm = teacher_model(config)
    params = jax.tree_util.tree_map(lambda x: x.astype(tm.dtype), model_state[TEACHER])
    return jax.lax.stop_gradient(tm.apply({"params": params}, tokens, train=False))


def loss_fn(params, model_state, batch, rng, *, model, config):
    tokens = batch["tokens"]
    d = config.distill
    fraction, n, temperature = on_policy_settings(config)
    rows, masks = on_policy_rows(fraction, tokens.shape[0]), None
    if rows:  # the module docstring's on-policy rows
        rng, sample_rng = jax.random.split(rng)
        tokens, masks = on_policy_batch(model, params, tokens, sample_rng, rows=rows,
                                        new_tokens=n, temperature=temperature,
                                        valid_vocab=int(d.get("valid_vocab", 0)))
    logits = model.apply({"params": params}, tokens[:, :-1], train=True, rngs={"dropout": rng})
    teacher = _teacher_logits(model_state, tokens[:, :-1], config)
    loss, metrics = distill_loss(logits, teacher, tokens[:, 1:], alpha=float(d.alpha),
                                 tau=float(d.temperature), divergence_name=d.divergence,
                                 beta=float(d.beta), masks=masks)
    return loss, (metrics, model_state)


def eval_fn(params, model_state, batch, *, model, config):
    """The student's held-out likelihood (as the LM family)."""
    return lm.eval_fn(params, {}, batch, model=model, config=config)


def param_labels(params, config):
    return None


def flops_per_example(config) -> float:
    """Student training (6N per token) + teacher forward (2N per token) + on-policy
    decoding (lambda x about one student forward: prefill P + N cached steps)."""
    student = lm.flops_per_example(config)
    fraction = on_policy_settings(config)[0]
    return student * (1 + fraction / 3) + lm.flops_per_example(teacher_view(config)) / 3


def merge_params(params, model_state):
    """Inference applies the student alone."""
    return params, {k: v for k, v in model_state.items() if k != TEACHER}


def pretrained_target(abstract_state):
    return abstract_state.model_state[TEACHER]


def load_pretrained(state, src_params, config):
    """init_from: the source params become the frozen teacher (the student starts fresh)."""
    return state.replace(model_state={**state.model_state, TEACHER: src_params})


# ----------------------------------------------------------------------- config from data
def resolve_config(config, data) -> None:
    """The on-policy keys checked; the teacher's architecture from its checkpoint
    (config.init_from), its tokenizer checked against the data's; the student's vocab =
    the teacher's; then the LM's keys."""
    beta_of(config.distill.divergence, float(config.distill.beta))
    tau, alpha = float(config.distill.temperature), float(config.distill.alpha)
    if not tau > 0:
        raise ConfigError(f"config.distill.temperature={tau}: must be > 0 (both distributions "
                          "are softmax(z / tau))")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"config.distill.alpha={alpha}: the KL term's weight is in [0, 1] "
                          "(1 - alpha on the next-token CE)")
    check_on_policy(config)
    lora.refuse(config, "init_from is the teacher, which LoRA would take as its frozen base "
                        "(the teacher would stay random); distil into a full student")
    if config.init_from:
        meta = teacher_meta(config.init_from)
        same_model.check_same_tokenizer(meta, data.meta(), config.init_from, role="teacher",
                                        needs="distillation")
        saved = meta["config"]["model"]
        for k in config.distill.teacher_model:
            if k in saved:
                config.distill.teacher_model[k] = saved[k]
        if config.model.vocab_size and config.model.vocab_size != saved["vocab_size"]:
            raise ConfigError(f"config.model.vocab_size={config.model.vocab_size} but the "
                              f"teacher's is {saved['vocab_size']}: leave it 0")
        config.model.vocab_size = saved["vocab_size"]
        if int(saved["max_len"]) < int(config.model.max_len):
            raise ConfigError(f"config.model.max_len={config.model.max_len} but the teacher "
                              f"reads at most {saved['max_len']} tokens: use <= that")
    elif not config.distill.random_teacher:
        raise ConfigError("distillation needs a teacher: --config.init_from=TEACHER_WORKDIR "
                          "(or config.distill.random_teacher=True for tests)")
    lm.resolve_config(config, data)
    config.distill.valid_vocab = int(data.tokenizer.vocab_size)


def teacher_meta(init_from: str) -> dict:
    """The checkpoint meta of the teacher run (UserError if none or not an LM run)."""
    meta = ckpt_lib.run_meta(init_from)
    family = meta.get("family", meta["config"].get("family"))
    if family != "lm" or int(meta["config"].get("lora", {}).get("rank", 0)):
        raise UserError(f"teacher {init_from!r} is a {family!r} run: distillation needs a "
                        "plain LM checkpoint (merge LoRA first: python -m genjax.lora merge)")
    return meta
