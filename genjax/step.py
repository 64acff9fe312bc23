"""The one train step every family shares: forward, loss, backprop, optax update, EMA.

`train_step` is a pure function of (state, batch); the caller jits it with shardings
and donation (genjax/assemble.py). Families plug in through `loss_fn` only
(genjax/families/__init__.py). Parameter groups (a GAN's generator and discriminator)
train here too: one gradient (the loss uses stop_gradient so each group sees only its own
objective), one optimizer per group (optax.multi_transform), and alternating updates by
*selecting* old or new params/opt-state per group -- never by zeroing gradients, which
would still move Adam's momentum.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from genjax import optim

PyTree = Any
LossFn = Callable[..., tuple[jax.Array, tuple[dict, PyTree]]]


@struct.dataclass
class TrainState:
    """Everything that changes during training; arrays only (checkpointed as is)."""
    step: jax.Array            # int32 scalar: optimizer steps taken
    params: PyTree             # fp32 master parameters
    opt_state: PyTree
    ema_params: PyTree         # EMA of params, or {} when config.optim.ema_decay == 0
    model_state: PyTree        # non-trained collections (e.g. spectral-norm vectors), or {}
    rng: jax.Array             # uint32[2] base key; step keys are fold_in(rng, step)
    skips: jax.Array           # int32: consecutive skipped updates (non-finite or spike)
    total_skips: jax.Array     # int32: all skipped non-finite updates so far
    guard: "LossGuard"         # loss-spike guard statistics (kept even when the guard is off)


@struct.dataclass
class LossGuard:
    """Running statistics of accepted losses, for skipping loss spikes (see `is_spike`)."""
    mean: jax.Array            # float32: EMA of accepted losses
    sq: jax.Array              # float32: EMA of their squares (variance = sq - mean^2)
    count: jax.Array           # int32: accepted losses seen (warm-up clock)
    spikes: jax.Array          # int32: updates skipped as spikes so far


def init_guard() -> LossGuard:
    return LossGuard(mean=jnp.zeros((), jnp.float32), sq=jnp.zeros((), jnp.float32),
                     count=jnp.zeros((), jnp.int32), spikes=jnp.zeros((), jnp.int32))


@dataclasses.dataclass(frozen=True)
class SpikeGuard:
    """Settings: skip an update whose loss > mean + k * std of the EMA of accepted losses,
    once `warmup` losses were accepted. k == 0 turns the guard off."""
    k: float = 0.0
    warmup: int = 100
    decay: float = 0.99


def spike_guard(config) -> SpikeGuard:
    """config.spike_k / spike_warmup / spike_decay (genjax/config_lib.py) -> SpikeGuard."""
    return SpikeGuard(k=float(config.spike_k), warmup=int(config.spike_warmup),
                      decay=float(config.spike_decay))


def is_spike(guard: LossGuard, loss: jax.Array, cfg: SpikeGuard) -> jax.Array:
    """bool scalar: `loss` is a spike given the statistics so far."""
    if not cfg.k:
        return jnp.array(False)
    std = jnp.sqrt(jnp.maximum(guard.sq - guard.mean ** 2, 0.0))
    return (guard.count >= cfg.warmup) & (loss > guard.mean + cfg.k * std)


def update_guard(guard: LossGuard, loss: jax.Array, accepted: jax.Array,
                 spike: jax.Array, cfg: SpikeGuard) -> LossGuard:
    """Folds an accepted loss into the EMA (the first one initialises it); counts a spike."""
    loss = loss.astype(jnp.float32)
    d = jnp.where(guard.count == 0, 0.0, cfg.decay)
    mean = jnp.where(accepted, d * guard.mean + (1 - d) * loss, guard.mean)
    sq = jnp.where(accepted, d * guard.sq + (1 - d) * loss ** 2, guard.sq)
    return LossGuard(mean=mean, sq=sq, count=guard.count + accepted.astype(jnp.int32),
                     spikes=guard.spikes + spike.astype(jnp.int32))


def init_state(params, model_state, tx, rng, *, ema: bool) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
        ema_params=jax.tree_util.tree_map(jnp.copy, params) if ema else {},
        model_state=model_state, rng=rng,
        skips=jnp.zeros((), jnp.int32), total_skips=jnp.zeros((), jnp.int32),
        guard=init_guard())


def inference_params(state: TrainState, which: str = "ema") -> tuple[PyTree, str]:
    """(params, "ema" | "raw"): the EMA params when asked for and kept, else the raw ones."""
    if which not in ("ema", "raw"):
        raise ValueError(f"which={which!r}: use ema or raw")
    if which == "ema" and jax.tree_util.tree_leaves(state.ema_params):
        return state.ema_params, "ema"
    return state.params, "raw"


def step_rng(state: TrainState) -> jax.Array:
    """The raw uint32[2] key of this step: a resumed run draws exactly the same randomness."""
    return jax.random.fold_in(state.rng, state.step)


def step_key(state: TrainState) -> jax.Array:
    """`step_rng` as a typed key: JAX's key-reuse checker (jax_debug_key_reuse) tracks
    typed keys only, so the loss functions see one and a reused key fails in tests.
    (A state whose `rng` is a typed key already is used as is.)"""
    key = step_rng(state)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


def _where(pred, new, old):
    return jax.tree_util.tree_map(lambda n, o: jnp.where(pred, n, o), new, old)


def _select_groups(new, old, labels, active: dict[str, jax.Array]):
    """Per leaf of `new`/`old` params (labelled by `labels`): new where its group is active."""
    return jax.tree_util.tree_map(lambda n, o, l: jnp.where(active[l], n, o), new, old, labels)


def _select_group_opt_state(new, old, active: dict[str, jax.Array]):
    """Same for the optimizer state: each group's inner state of optax.multi_transform."""
    is_mt = lambda x: isinstance(x, optax.MultiTransformState)  # noqa: E731

    def one(n, o):
        if is_mt(n):
            return optax.MultiTransformState({
                label: _where(active[label], n.inner_states[label], o.inner_states[label])
                for label in n.inner_states})
        return n
    return jax.tree_util.tree_map(one, new, old, is_leaf=is_mt)


def whole_batch_grads(objective, params, batch):
    """((loss, aux), grads) of objective(params, batch) over the whole (sharded) batch."""
    return jax.value_and_grad(objective, has_aux=True)(params, batch)


def train_step(state: TrainState, batch: PyTree, *, loss_fn: LossFn,
               tx: optax.GradientTransformation, compute_dtype=jnp.float32,
               ema_decay: float = 0.0, labels=None, group_active=None,
               skip_nonfinite: bool = True, spike: SpikeGuard = SpikeGuard(),
               skip_by: str = "cond", grad_fn=None) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step. `loss_fn(params, model_state, batch, rng)` -> (loss, (metrics, model_state)).

    An update is skipped (state kept, counters moved) when its loss or gradients are
    non-finite (`skip_nonfinite`) or its loss is a spike (`spike.k` > 0). `skip_by`: how
    the state is kept, same result either way: "cond" runs the optimizer under lax.cond
    (no extra pass over the state: ~8% of the `cpu` LM step on XLA:CPU), "select" updates
    and then picks old or new per element (no branch: used on GPUs, where a conditional
    outside a CUDA graph reads its predicate on the host; not measured there).
    `grad_fn(objective, params, batch)` -> ((loss, aux), grads) of objective(params, batch):
    default `whole_batch_grads`; genjax.grad_sync.flat_grads sums data shards' gradients
    in one all-reduce.
    """
    if skip_by not in ("cond", "select"):
        raise ValueError(f"skip_by={skip_by!r}: use cond | select")
    rng = step_key(state)

    def objective(params, batch):
        params_c = optim.cast_floating(params, compute_dtype)  # grads flow back to fp32
        return loss_fn(params_c, state.model_state, batch, rng)

    (loss, (metrics, model_state)), grads = (grad_fn or whole_batch_grads)(
        objective, state.params, batch)
    # One pass over the gradients serves the check and the logged norm: a NaN or Inf
    # anywhere makes the sum of squares non-finite. So does a finite gradient whose squared
    # norm overflows float32 (norm > ~1.8e19): skipped too, as a loss-scaling step would
    # (clipping by that norm would zero the update). A separate isfinite pass per leaf
    # cost ~2% of the `cpu` LM step (experiments/bench/lm_step_profile.py).
    grad_sq = optax.tree.norm(grads, squared=True)
    finite = jnp.isfinite(grad_sq) & jnp.isfinite(loss)
    spiked = finite & is_spike(state.guard, loss, spike)
    keep = (finite | (not skip_nonfinite)) & ~spiked

    active = None if group_active is None else group_active(state.step)

    def update(model_state):
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if active is not None:  # alternating updates: keep the inactive groups
            params = _select_groups(params, state.params, labels, active)
            opt_state = _select_group_opt_state(opt_state, state.opt_state, active)
        ema_params = state.ema_params
        if ema_decay:  # once per optimizer update (accumulating calls leave params alone)
            ema_params = optim.ema_update(state.ema_params, params, ema_decay)
            emitted = optim.update_emitted(opt_state)
            if emitted is not None:
                ema_params = jax.tree_util.tree_map(
                    lambda new, old: jnp.where(emitted, new, old), ema_params, state.ema_params)
        return params, opt_state, ema_params, model_state

    old = state.params, state.opt_state, state.ema_params, state.model_state
    if not (skip_nonfinite or spike.k):
        params, opt_state, ema_params, model_state = update(model_state)
    elif skip_by == "cond":  # a bad batch leaves the state untouched except the counters
        params, opt_state, ema_params, model_state = jax.lax.cond(
            keep, update, lambda _: old, model_state)
    else:
        params, opt_state, ema_params, model_state = _where(keep, update(model_state), old)
    for name, on in (active or {}).items():
        metrics[f"active/{name}"] = on.astype(jnp.float32)
    skipped = (~finite).astype(jnp.int32)
    bad = ((~finite) | spiked).astype(jnp.int32)

    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params,
        model_state=model_state, skips=(state.skips + bad) * bad,
        total_skips=state.total_skips + skipped,
        guard=update_guard(state.guard, loss, finite & ~spiked, spiked, spike))
    metrics = dict(metrics, loss=loss, grad_norm=jnp.sqrt(grad_sq),
                   param_norm=optax.tree.norm(params), skipped=skipped,
                   consecutive_skips=new_state.skips, spike=spiked.astype(jnp.int32),
                   total_spikes=new_state.guard.spikes)
    return new_state, metrics


def eval_step(params, model_state, batch, *, eval_fn) -> dict[str, jax.Array]:
    """Metric sums over one batch (the loop adds them up and divides by 'count')."""
    return eval_fn(params, model_state, batch)
