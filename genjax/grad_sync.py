"""How data-parallel gradients are summed across the `data` axis (config.grad_sync).

  xla   XLA's partitioner reduces each weight gradient where its dot produces it; XLA then
        combines those all-reduces into one over a tuple of buffers (one per param leaf).
  flat  Each data shard computes its loss and gradients alone (jax.shard_map), the
        gradients are raveled into one float vector and averaged by a single pmean. Exact
        only for a family whose loss is a mean over independent examples without
        randomness or model_state updates (its `local_loss(config)` capability), on a mesh
        that splits nothing but the batch (fsdp = tensor = 1).
  auto  flat where allowed on CPU devices, else xla. XLA:CPU's in-process collective meets
        the other devices once per buffer (~66 us each here), so the `cpu` LM's 35 leaves
        cost 2.97 ms against 0.74 ms as one buffer (experiments/bench/cpu_allreduce.py);
        on GPUs/TPUs the per-dot all-reduces overlap the backward pass, so xla stays.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, PartitionSpec as P

from genjax import families, sharding
from genjax.errors import ConfigError

MODES = ("auto", "xla", "flat")


def mode(config, family, mesh: Mesh) -> str:
    """"xla" | "flat" for this run; config.grad_sync=flat where it cannot be exact is a
    ConfigError saying why."""
    asked = str(config.get("grad_sync", "auto"))
    if asked not in MODES:
        raise ConfigError(f"config.grad_sync={asked!r}: use auto | xla | flat")
    why_not = _why_not_flat(config, family, mesh)
    if asked == "flat" and why_not:
        raise ConfigError(f"config.grad_sync=flat: {why_not}")
    if asked == "auto":
        return "flat" if not why_not and mesh.devices.flat[0].platform == "cpu" else "xla"
    return asked


def _why_not_flat(config, family, mesh: Mesh) -> str:
    sizes = dict(mesh.shape)
    if sizes.get("data", 1) < 2:
        return "the mesh has one data shard (nothing to sum)"
    if any(n > 1 for axis, n in sizes.items() if axis != "data"):
        return f"the mesh {sizes} splits more than the batch (fsdp/tensor > 1)"
    if not families.local_loss(family, config):
        return (f"family {config.family!r} does not declare its loss local to each example "
                f"for this config (capability local_loss: e.g. dropout draws randomness)")
    return ""


def flat_grads(mesh: Mesh) -> Callable:
    """grad_fn for step.train_step: ((loss, (metrics, model_state)), grads) of
    objective(params, batch) as per-shard values averaged over `data`, the gradients in
    one pmean of their raveled vector. The model sees local arrays: no sharding hints."""
    def grad_fn(objective, params, batch):
        def per_shard(params: Any, batch: Any):
            with sharding.hints_off():
                (loss, (metrics, model_state)), grads = jax.value_and_grad(
                    objective, has_aux=True)(params, batch)
            flat, unravel = ravel_pytree(grads)
            flat = jax.lax.pmean(flat, "data")
            loss, metrics = jax.tree_util.tree_map(
                lambda x: jax.lax.pmean(x, "data") if jnp.issubdtype(x.dtype, jnp.inexact)
                else x, (loss, metrics))
            return (loss, (metrics, model_state)), unravel(flat)

        batch_specs = jax.tree_util.tree_map(lambda _: P("data"), batch)
        # check_vma=False: scans inside the model (chunked attention) carry shard-invariant
        # zeros; every output here is made equal across shards by the pmeans above.
        return jax.shard_map(per_shard, mesh=mesh, in_specs=(P(), batch_specs),
                             out_specs=P(), check_vma=False)(params, batch)
    return grad_fn
