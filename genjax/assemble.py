"""From a config to jitted, sharded functions: model, optimizer, state, step.

Used by every entry point (train, sample, evaluate, aot) so they all build the same
thing. Parameters are created already sharded:
    eval_shape(init) -> logical names -> NamedShardings -> jit(init, out_shardings=...).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding
from ml_collections import ConfigDict

from genjax import families, grad_sync, optim, sharding, step as step_lib
from genjax.errors import ConfigError


@dataclasses.dataclass
class Parts:
    config: ConfigDict
    family: Any                      # the family module (genjax/families/__init__.py)
    model: nn.Module
    tx: Any                          # optax.GradientTransformation
    labels: Any                      # parameter-group labels or None
    mesh: Mesh
    rules: tuple
    abstract_state: step_lib.TrainState   # ShapeDtypeStructs carrying shardings
    state_shardings: step_lib.TrainState
    batch_shardings: Any
    init_state: Callable[[], step_lib.TrainState]
    train_step: Callable             # jitted (state, batch) -> (state, metrics), donates state
    eval_step: Callable              # jitted (params, model_state, batch) -> metric sums
    compute_dtype: Any


def _split_variables(variables):
    variables = dict(variables)
    params = variables.pop("params")
    return params, variables


def _opt_state_shardings(abstract_opt_state, abstract_params, params_sh, mesh: Mesh):
    """Optimizer-state leaves (mu, nu, accumulated grads, ...) take their param's sharding.

    Matched by path suffix + shape; scalars (counts) and anything unmatched is replicated.
    """
    shapes = {jax.tree_util.keystr(p): x.shape
              for p, x in jax.tree_util.tree_flatten_with_path(abstract_params)[0]}
    by_path = {jax.tree_util.keystr(p): sh
               for p, sh in jax.tree_util.tree_flatten_with_path(params_sh)[0]}

    def one(path, leaf):
        key = jax.tree_util.keystr(path)
        for ppath, sh in by_path.items():
            if key.endswith(ppath) and shapes[ppath] == leaf.shape:
                return sh
        return sharding.replicated(mesh)
    return jax.tree_util.tree_map_with_path(one, abstract_opt_state)


def check_batch_size(config: ConfigDict, mesh: Mesh, rules) -> None:
    """The batch splits evenly over the batch mesh axes and the processes, and (several
    processes: each loads its own rows) those axes span every process's devices. Which
    shards a process holds needs no check: make_array_from_process_local_data maps its
    rows onto them in order, contiguous or interleaved, so every row is used once."""
    ways, procs = sharding.batch_axis_size(mesh, rules), jax.process_count()
    bs = int(config.batch_size)
    if bs % ways or bs % procs:
        raise ConfigError(f"config.batch_size={bs} must be divisible by the batch mesh axes "
                          f"({ways}) and the process count ({procs})")
    if procs > 1:
        left_out = sorted(set(range(procs)) - {d.process_index for d in mesh.devices.flat})
        if left_out:
            raise ConfigError(f"config.mesh {dict(mesh.shape)} leaves out the devices of "
                              f"process(es) {left_out}: with {procs} processes use them all")
        if ways % procs:
            raise ConfigError(f"config.mesh {dict(mesh.shape)}: the batch axes ({ways} ways) "
                              f"must split over the {procs} processes, each of which loads its "
                              f"own rows (put data or fsdp >= {procs})")


def assemble(config: ConfigDict, mesh: Mesh) -> Parts:
    family = families.for_config(config)
    model = family.make_model(config)
    rules = sharding.rules_from_config(config.sharding_rules)
    check_batch_size(config, mesh, rules)
    compute_dtype = jnp.dtype(config.compute_dtype)

    # Host arrays, passed to the init program as arguments: a key baked in as a constant
    # lets XLA:GPU constant-fold the whole random init (2m39s to compile gpt2_124m's).
    keys = np.asarray(jax.random.split(jax.random.PRNGKey(config.seed)))
    init_batch = family.example_batch(config, 1)

    def init_variables(init_key):
        with sharding.activate(mesh, rules):
            return family.init_variables(model, init_key, init_batch, config)

    # ---- shapes and logical names, without allocating anything
    boxed = jax.eval_shape(init_variables, keys[0])
    var_sh = sharding.param_shardings(boxed, mesh, rules)
    params_sh, model_state_sh = _split_variables(var_sh)
    abstract_params, _ = _split_variables(sharding.unbox(boxed))
    labels = optim.with_frozen(family.param_labels(abstract_params, config), abstract_params,
                               tuple(config.optim.freeze))
    tx = optim.make_optimizer(config, labels)
    ema = bool(config.optim.ema_decay)

    def init_state_fn(keys):
        params, model_state = _split_variables(sharding.unbox(init_variables(keys[0])))
        return step_lib.init_state(params, model_state, tx, keys[1], ema=ema)

    abstract = jax.eval_shape(init_state_fn, keys)
    rep = sharding.replicated(mesh)
    state_sh = step_lib.TrainState(
        step=rep, params=params_sh,
        opt_state=_opt_state_shardings(abstract.opt_state, abstract.params, params_sh, mesh),
        ema_params=params_sh if ema else {}, model_state=model_state_sh, rng=rep,
        skips=rep, total_skips=rep, guard=jax.tree_util.tree_map(lambda _: rep, abstract.guard))
    abstract_state = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh)

    example = family.example_batch(config, int(config.batch_size))
    batch_sh = jax.tree_util.tree_map(
        lambda x: sharding.batch_sharding(mesh, rules, np.ndim(x)), example)

    eval_fn = functools.partial(_bound, family.eval_fn, model=model, config=config)
    step_kwargs = _step_kwargs(config, family, model, tx, labels, compute_dtype, mesh)

    def train_step(state, batch):
        with sharding.activate(mesh, rules):
            return step_lib.train_step(state, batch, **step_kwargs)

    def eval_step(params, model_state, batch):
        with sharding.activate(mesh, rules):
            params = optim.cast_floating(params, compute_dtype)
            return step_lib.eval_step(params, model_state, batch, eval_fn=eval_fn)

    return Parts(
        config=config, family=family, model=model, tx=tx, labels=labels, mesh=mesh,
        rules=rules, abstract_state=abstract_state, state_shardings=state_sh,
        batch_shardings=batch_sh,
        init_state=functools.partial(
            jax.jit(init_state_fn, in_shardings=rep, out_shardings=state_sh), keys),
        train_step=jax.jit(train_step, in_shardings=(state_sh, batch_sh),
                           out_shardings=(state_sh, rep), donate_argnums=0),
        # inputs arrive already sharded (state + shard_batch); eval batches may add "mask"
        eval_step=jax.jit(eval_step, out_shardings=rep),
        compute_dtype=compute_dtype)


def _bound(fn, *args, model, config, **kwargs):
    return fn(*args, model=model, config=config, **kwargs)


def _step_kwargs(config, family, model, tx, labels, compute_dtype, mesh) -> dict:
    """step.train_step's keyword arguments for this run (jitted or not, the same step)."""
    return dict(
        loss_fn=functools.partial(_bound, family.loss_fn, model=model, config=config),
        tx=tx, compute_dtype=compute_dtype, ema_decay=float(config.optim.ema_decay),
        labels=labels, group_active=optim.group_schedule(config, labels),
        skip_nonfinite=bool(config.skip_nonfinite), spike=step_lib.spike_guard(config),
        skip_by=skip_by(mesh), grad_fn=_grad_fn(config, family, mesh))


def inference_params(parts: Parts, state, which: str = "ema") -> tuple[Any, Any, str]:
    """(params, model_state, "ema" | "raw") the model applies at inference: EMA params when
    asked for and kept, with what the family merges in (LoRA adapters)."""
    params, which = step_lib.inference_params(state, which)
    params, model_state = families.inference_params(parts.family, params, state.model_state)
    return params, model_state, which


def unjitted_train_step(parts: Parts):
    """The same step without jit (golden tests: one step, eagerly)."""
    return functools.partial(step_lib.train_step, **_step_kwargs(
        parts.config, parts.family, parts.model, parts.tx, parts.labels,
        parts.compute_dtype, parts.mesh))


def _grad_fn(config, family, mesh):
    """The step's gradient computation for config.grad_sync (genjax/grad_sync.py)."""
    if grad_sync.mode(config, family, mesh) == "flat":
        return grad_sync.flat_grads(mesh)
    return step_lib.whole_batch_grads


def skip_by(mesh) -> str:
    """How the step keeps the state of a skipped update on `mesh`'s devices (step.train_step):
    by a select on GPUs, where a conditional may read its predicate on the host; else
    under lax.cond."""
    return "select" if mesh.devices.flat[0].platform in ("gpu", "cuda", "rocm") else "cond"


def state_bytes_per_device(parts: Parts) -> dict[str, int]:
    """Per-device bytes of params, optimizer state, EMA and the frozen models kept in
    model_state (a LoRA base, a reference, a teacher, a reward model) by their shardings."""
    def nbytes(abstract):
        total = 0
        for leaf in jax.tree_util.tree_leaves(abstract):
            shard = leaf.sharding.shard_shape(leaf.shape) if leaf.shape else ()
            total += int(np.prod(shard, dtype=np.int64)) * leaf.dtype.itemsize
        return total
    return {"params": nbytes(parts.abstract_state.params),
            "opt_state": nbytes(parts.abstract_state.opt_state),
            "ema_params": nbytes(parts.abstract_state.ema_params),
            "model_state": nbytes(parts.abstract_state.model_state)}


def shard_batch(parts: Parts, local_batch) -> Any:
    return sharding.global_batch(local_batch, parts.mesh, parts.rules)


__all__ = ["Parts", "assemble", "unjitted_train_step", "state_bytes_per_device", "NamedSharding"]
