"""The one train step every family shares: forward, loss, backprop, optax update, EMA.

`train_step` is a pure function of (state, batch); the caller jits it with shardings
and donation (genjax/assemble.py). Families plug in through `loss_fn` only
(genjax/losses/__init__.py). Parameter groups (a GAN's generator and discriminator)
train here too: one gradient (the loss uses stop_gradient so each group sees only its own
objective), one optimizer per group (optax.multi_transform), and alternating updates by
*selecting* old or new params/opt-state per group -- never by zeroing gradients, which
would still move Adam's momentum.
"""
from __future__ import annotations

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
    skips: jax.Array           # int32: consecutive skipped (non-finite) updates
    total_skips: jax.Array     # int32: all skipped updates so far


def init_state(params, model_state, tx, rng, *, ema: bool) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
        ema_params=jax.tree_util.tree_map(jnp.copy, params) if ema else {},
        model_state=model_state, rng=rng,
        skips=jnp.zeros((), jnp.int32), total_skips=jnp.zeros((), jnp.int32))


def step_rng(state: TrainState) -> jax.Array:
    """The key of this step: a resumed run draws exactly the same randomness."""
    return jax.random.fold_in(state.rng, state.step)


def all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


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


def train_step(state: TrainState, batch: PyTree, *, loss_fn: LossFn,
               tx: optax.GradientTransformation, compute_dtype=jnp.float32,
               ema_decay: float = 0.0, labels=None, group_active=None,
               skip_nonfinite: bool = True) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step. `loss_fn(params, model_state, batch, rng)` -> (loss, (metrics, model_state))."""
    rng = step_rng(state)

    def objective(params):
        params_c = optim.cast_floating(params, compute_dtype)  # grads flow back to fp32
        return loss_fn(params_c, state.model_state, batch, rng)

    (loss, (metrics, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    if group_active is not None:  # alternating updates: keep the inactive groups as they were
        active = group_active(state.step)
        params = _select_groups(params, state.params, labels, active)
        opt_state = _select_group_opt_state(opt_state, state.opt_state, active)
        for name, on in active.items():
            metrics[f"active/{name}"] = on.astype(jnp.float32)

    ema_params = state.ema_params
    if ema_decay:
        ema_params = optim.ema_update(state.ema_params, params, ema_decay)

    finite = all_finite(grads) & jnp.isfinite(loss)
    if skip_nonfinite:  # a bad batch leaves the state untouched except the counters
        params = _where(finite, params, state.params)
        opt_state = _where(finite, opt_state, state.opt_state)
        ema_params = _where(finite, ema_params, state.ema_params)
        model_state = _where(finite, model_state, state.model_state)
    skipped = (~finite).astype(jnp.int32)

    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params,
        model_state=model_state, skips=(state.skips + skipped) * skipped,
        total_skips=state.total_skips + skipped)
    metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads),
                   param_norm=optax.global_norm(params), skipped=skipped,
                   consecutive_skips=new_state.skips)
    return new_state, metrics


def eval_step(params, model_state, batch, *, eval_fn) -> dict[str, jax.Array]:
    """Metric sums over one batch (the loop adds them up and divides by 'count')."""
    return eval_fn(params, model_state, batch)
