r"""PPO for the online-RL family (genjax/families/rl.py with config.rl.algo="ppo"): each
rollout batch serves rl.ppo_epochs = E consecutive optimizer steps.

The rollout buffer is model_state["rollout"] (checkpointed, so a resumed run reuses the
same tokens bit for bit): the rollout dict of rl.sample_rollouts (tokens [R, T], mask,
the reference's per-token log-probs, rewards [R]; R = B K rows), the policy's per-token
log-probs when it was drawn (logp_old) and, with a value head, its values (value_old),
and `age` (int32: steps taken on it, modulo E). A step whose age is 0 samples a fresh
rollout with its own key (lax.cond: the other steps do not decode); logp_old and
value_old are then the step's own (stop_gradient), so its ratio is exactly 1.

Advantages (genjax/ppo.py), recomputed each step from the stored rollout (the same
numbers for its E steps):
  value head  per-token rewards (k1 KL per token + the reward at the last completion
              token), GAE(rl.gamma, rl.lam) on value_old, whitened over the batch; the
              clipped value loss (rl.clip_value) weighted by rl.vf_coef.
  none        RLOO advantages of the KL-shaped sequence reward over the K samples of a
              prompt (as algo=rloo), on every completion token.
Policy loss: the clipped surrogate (rl.clip), a mean over the batch's completion tokens
(RLOO's is a mean over samples of sequence sums: a learning-rate scale of 1/N).

The value head: V_t = logits_t . w + b (w float32[V], b scalar, zero at the start: V = 0),
a linear head on the policy's final features read through its logits (as the reward
model's head, genjax/models/reward_model.py), under stop_gradient: the value loss trains
w and b only, never the policy. It lives in params["value_head"], parameter group "value"
(rl.param_labels: its own optimizer settings in config.optim.groups.value, lr 1e-3 in
configs/rl_shakespeare.py; EMA as the policy's); the LM never reads it: rl.merge_params
drops it for sampling and evaluation, and the checkpoint meta lists it in "aux_params",
so another run's init_from of this one restores the LM alone.

The loss's value is -(mean shaped reward of the stored rollout), as RLOO's (so step 0 of
both is the same number); its gradient is the PPO objective's. Logged: pg_loss, clipfrac,
approx_kl, ratio_mean / ratio_min / ratio_max, refresh (1 on a step that sampled), and
with a value head vf_loss, vf_clipfrac, value (mean V on the completion tokens).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import linen as nn

from genjax import ppo, preference
from genjax.errors import ConfigError
from genjax.families import lora
from genjax.sampling.filters import next_token_logps

ALGOS = ("rloo", "ppo")
ROLLOUT = "rollout"           # model_state key of the rollout buffer
VALUE_HEAD = "value_head"     # params key of the value head
OWN = ("logp_old", "value_old", "age")  # buffer keys besides the rollout dict's


@dataclasses.dataclass(frozen=True)
class Settings:
    """config.rl's algorithm keys (configs/rl_shakespeare.py); defaults = runs saved
    before they existed (RLOO)."""
    algo: str = "rloo"
    ppo_epochs: int = 4
    clip: float = 0.2
    value_head: bool = False
    vf_coef: float = 0.1
    clip_value: float = 0.2
    gamma: float = 1.0
    lam: float = 0.95


def settings(config) -> Settings:
    """The checked Settings of `config` (one ConfigError line naming the key)."""
    s = Settings(**{f.name: type(f.default)(config.rl.get(f.name, f.default))
                    for f in dataclasses.fields(Settings)})
    problem = None
    if s.algo not in ALGOS:
        problem = f"rl.algo={s.algo!r}: choose one of {ALGOS}"
    elif s.algo == "rloo":
        if s.value_head:
            problem = ("rl.value_head=True needs rl.algo='ppo' (RLOO's baseline is the "
                       "other samples)")
    elif s.ppo_epochs < 1:
        problem = f"rl.ppo_epochs={s.ppo_epochs}: at least 1 (optimizer steps per rollout batch)"
    elif not s.clip > 0:
        problem = f"rl.clip={s.clip}: must be > 0 (the ratio is clipped to 1 +- clip)"
    elif not (0 < s.gamma <= 1 and 0 <= s.lam <= 1):
        problem = f"rl.gamma={s.gamma}, rl.lam={s.lam}: need 0 < gamma <= 1 and 0 <= lam <= 1"
    elif int(config.optim.accum_steps) > 1:
        problem = ("rl.algo='ppo' with optim.accum_steps > 1: the E steps on a rollout "
                   "would all share one update; use accum_steps=1")
    elif s.value_head and not (s.vf_coef > 0 and s.clip_value > 0):
        problem = (f"rl.vf_coef={s.vf_coef}, rl.clip_value={s.clip_value}: the value head "
                   "needs both > 0")
    elif s.value_head and lora.enabled(config):
        problem = "rl.value_head with LoRA: the value head would be frozen in the LoRA base"
    if problem:
        raise ConfigError(f"config.{problem}")
    return s


def split(params):
    """(the LM's params, the value head's or None)."""
    if isinstance(params, dict) and VALUE_HEAD in params:
        return {k: v for k, v in params.items() if k != VALUE_HEAD}, params[VALUE_HEAD]
    return params, None


def init_variables(variables: dict, rollout_shapes: dict, config) -> dict:
    """`variables` plus model_state["rollout"] (zeros shaped like `rollout_shapes`, the
    rollout function's eval_shape, rows sharded on the batch axes; age 0: the first step
    samples) and, with a value head, params["value_head"] (zeros)."""
    s = settings(config)
    box = lambda x: nn.Partitioned(jnp.zeros(x.shape, x.dtype),  # noqa: E731
                                   names=("batch",) + (None,) * (len(x.shape) - 1))
    buf = {k: box(v) for k, v in rollout_shapes.items()}
    buf["logp_old"] = box(rollout_shapes["mask"])
    if s.value_head:
        buf["value_old"] = box(rollout_shapes["mask"])
        V = int(config.model.vocab_size)
        head = {"w": nn.Partitioned(jnp.zeros((V,), jnp.float32), names=("vocab",)),
                "b": jnp.zeros((), jnp.float32)}
        variables = {**variables, "params": {**variables["params"], VALUE_HEAD: head}}
    buf["age"] = jnp.zeros((), jnp.int32)
    return {**variables, ROLLOUT: buf}


def values(head, logits_RxLxV):
    """V float32[R, L] = logits . w + b on stop_gradient(logits) (module doc)."""
    feats = jax.lax.stop_gradient(logits_RxLxV).astype(jnp.float32)
    return jnp.einsum("rlv,v->rl", feats, head["w"].astype(jnp.float32)) + \
        head["b"].astype(jnp.float32)


def loss_fn(params, model_state, batch, rng, *, model, config, rollouts):
    """One PPO step (module doc). rollouts(policy_params, model_state, batch, rng) -> the
    rollout dict (rl.sample_rollouts), called on a refresh step only."""
    s, c = settings(config), config.rl
    sg = jax.lax.stop_gradient
    policy, head = split(params)
    buf = model_state[ROLLOUT]
    refresh = buf["age"] == 0
    fresh = lambda: rollouts(sg(policy), model_state, batch, rng)  # noqa: E731
    ro = jax.lax.cond(refresh, fresh, lambda: {k: v for k, v in buf.items() if k not in OWN})
    mask, beta = ro["mask"], float(c.beta)
    logits = model.apply({"params": policy}, ro["seq"][:, :-1], train=False)
    logp = next_token_logps(logits, ro["seq"], int(c.get("valid_vocab", 0)) or None)
    logp_old = jnp.where(refresh, sg(logp), buf["logp_old"])
    logp_seq, ref_seq = jnp.sum(logp_old * mask, -1), jnp.sum(ro["ref"] * mask, -1)
    shaped = preference.kl_shaped_reward(ro["reward"], logp_seq, ref_seq, beta)
    new_buf = {**ro, "logp_old": logp_old, "age": (buf["age"] + 1) % s.ppo_epochs}
    metrics = {k: jnp.mean(ro[k]) for k in ("reward", "reward_chars", "reward_model")
               if k in ro}
    if head is not None:
        v = values(head, logits)
        v_old = jnp.where(refresh, sg(v), buf["value_old"])
        adv = ppo.gae(ppo.token_rewards(ro["reward"], logp_old, ro["ref"], mask, beta),
                      v_old, mask, s.gamma, s.lam)
        vf, vf_clipfrac = ppo.value_loss(v, v_old, adv + v_old, mask, s.clip_value)
        adv = ppo.masked_whiten(adv, mask)
        new_buf["value_old"] = v_old
        extra = s.vf_coef * vf
        metrics.update(vf_loss=vf, vf_clipfrac=vf_clipfrac, value=ppo.masked_mean(sg(v), mask))
    else:
        adv = preference.rloo_advantages(shaped.reshape(-1, int(c.samples))).reshape(-1, 1)
        adv, extra = adv * mask, 0.0
    pg, stats = ppo.policy_loss(logp, logp_old, adv, mask, s.clip)
    objective = pg + extra
    loss = objective - sg(objective) - jnp.mean(shaped)
    metrics.update(stats, pg_loss=pg, kl=jnp.mean(logp_seq - ref_seq), shaped=jnp.mean(shaped),
                   refresh=refresh.astype(jnp.float32))
    return loss, (metrics, {**model_state, ROLLOUT: new_buf})
