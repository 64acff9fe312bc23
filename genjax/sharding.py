"""Device mesh, logical-axis rules and shardings: the one place that knows about devices.

Models never name mesh axes. They name *logical* axes:

  params:       nn.with_logical_partitioning(init, ("embed", "mlp"))
  activations:  x = sharding.constrain(x, ("batch", "length", "embed"))

and `config.sharding_rules` maps each logical name to a mesh axis (or None):

  ("batch", ("data", "fsdp"))   batches split over data *and* fsdp (FSDP = ZeRO-3)
  ("embed", "fsdp")             parameters split over fsdp
  ("mlp"/"heads"/"vocab", "tensor")  Megatron-style tensor parallelism

Logical names used in genjax: batch, length, embed, heads, kv, mlp, vocab (LM);
height, width, channels, conv_in, conv_out, latent (images). A dimension whose size
is not divisible by its mesh axes is left unsharded (a tiny model on 8 devices still runs).
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import math
from typing import Any, Sequence

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from genjax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Sequence[tuple[str, Any]]

_ACTIVE: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar(
    "genjax_sharding", default=None)


# ----------------------------------------------------------------------------- mesh
def make_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a (data, fsdp, tensor) mesh with `jax.make_mesh` (topology-aware device order
    on TPU/GPU); one entry may be -1 = "all remaining devices". Without -1, a mesh smaller
    than the machine uses the first devices (e.g. data=1). Axes are Auto-sharded (XLA
    propagates shardings; models constrain activations with `constrain`). A shape that
    does not fit the devices is a ConfigError."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
    shown, n = dict(zip(MESH_AXES, sizes)), len(devices)
    if sizes.count(-1) > 1:
        raise ConfigError(f"config.mesh: at most one axis may be -1, got {shown}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ConfigError(f"config.mesh: sizes must be positive (or one -1), got {shown}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n % known:
            raise ConfigError(f"config.mesh: {n} devices are not divisible by {known} ({shown})")
        sizes[sizes.index(-1)] = n // known
    if math.prod(sizes) > n:
        raise ConfigError(f"config.mesh {shown} needs {math.prod(sizes)} devices, but {n} "
                          f"are available")
    try:
        return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * 3,
                             devices=devices[:math.prod(sizes)])
    except ValueError as e:  # e.g. a shape the TPU topology cannot be split into
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"config.mesh {dict(zip(MESH_AXES, sizes))} does not fit the "
                          f"{n} {devices[0].device_kind} devices: {first}") from None


def rules_from_config(rules_cfg) -> tuple[tuple[str, Any], ...]:
    """config.sharding_rules (tuple of (logical, mesh axis | tuple | None)) -> tuple."""
    out = []
    for name, target in rules_cfg:
        if isinstance(target, list):
            target = tuple(target)
        out.append((str(name), target))
    return tuple(out)


# ------------------------------------------------------------------- logical -> mesh
def _axis_size(mesh: Mesh, target) -> int:
    if target is None:
        return 1
    if isinstance(target, str):
        return mesh.shape[target]
    return math.prod(mesh.shape[t] for t in target)


def logical_to_spec(names: Sequence[str | None] | None, shape: Sequence[int], mesh: Mesh,
                    rules: Rules) -> P:
    """PartitionSpec for one array; indivisible dims and reused mesh axes stay unsharded."""
    if names is None:
        return P()
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for name, size in zip(names, shape):
        target = table.get(name) if name is not None else None
        if isinstance(target, (list, tuple)):
            target = tuple(t for t in target if mesh.shape.get(t, 1) > 1 and t not in used) or None
            if target is not None and len(target) == 1:
                target = target[0]
        elif target is not None and (mesh.shape.get(target, 1) == 1 or target in used):
            target = None
        if target is not None and size % _axis_size(mesh, target):
            logging.debug("dim %s (size %d) not divisible by %s: unsharded", name, size, target)
            target = None
        if target is not None:
            used.update([target] if isinstance(target, str) else target)
        spec.append(target)
    return P(*spec)


def _names_of(x) -> tuple | None:
    return tuple(x.names) if isinstance(x, nn.Partitioned) else None


def param_shardings(abstract_boxed, mesh: Mesh, rules: Rules):
    """NamedShardings for a (boxed, abstract) variables tree from `model.init`."""
    def one(x):
        names = _names_of(x)
        value = x.value if isinstance(x, nn.Partitioned) else x
        return NamedSharding(mesh, logical_to_spec(names, value.shape, mesh, rules))
    return jax.tree_util.tree_map(one, abstract_boxed,
                                  is_leaf=lambda x: isinstance(x, nn.Partitioned))


def unbox(tree):
    """Strips flax partitioning boxes: Partitioned(value) -> value."""
    return nn.meta.unbox(tree)


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int) -> NamedSharding:
    """Leading (batch) dim split over the mesh axes `batch` maps to; other dims replicated."""
    target = dict(rules).get("batch", ("data", "fsdp"))
    return NamedSharding(mesh, P(target, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_axis_size(mesh: Mesh, rules: Rules) -> int:
    """How many ways the global batch is split (must divide the batch size)."""
    return _axis_size(mesh, dict(rules).get("batch", ("data", "fsdp")))


# ------------------------------------------------------------------- activations
@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules):
    """Inside this context (while tracing), `constrain` emits sharding constraints."""
    token = _ACTIVE.set((mesh, tuple(rules)))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def hints_off():
    """Inside this context `constrain` emits nothing (per-shard code under shard_map)."""
    token = _ACTIVE.set(None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def mesh_of(tree) -> Mesh | None:
    """The mesh of the first leaf placed with a NamedSharding (None: no such leaf)."""
    for leaf in jax.tree_util.tree_leaves(tree):
        placed = getattr(leaf, "sharding", None)
        if isinstance(placed, NamedSharding):
            return placed.mesh
    return None


def split_like_params(x, params):
    """`x` with its leading (batch) axis split over the "data" axis of the mesh `params`
    live on, so a jitted function of both runs each device on its share of the batch;
    unchanged when the params have no mesh, the axis does not divide the batch, or the
    mesh spans processes (x is one process's array)."""
    mesh = mesh_of(params)
    if x is None or mesh is None or "data" not in mesh.shape or jax.process_count() > 1:
        return x
    ways = mesh.shape["data"]
    if ways == 1 or np.shape(x)[0] % ways:
        return x
    return jax.device_put(x, NamedSharding(mesh, P("data")))


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Sharding hint for an activation by logical axis names; a no-op outside `activate`."""
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    spec = logical_to_spec(names, x.shape, mesh, rules)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


# ------------------------------------------------------------------- host <-> global
def global_batch(local_batch: dict, mesh: Mesh, rules: Rules) -> dict:
    """Assembles each process's local shard (numpy) into one global jax.Array per leaf."""
    def one(x):
        x = np.asarray(x)
        sharding = batch_sharding(mesh, rules, x.ndim)
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        return jax.make_array_from_process_local_data(sharding, x)
    return jax.tree_util.tree_map(one, local_batch)


def per_device_bytes(tree) -> int:
    """Bytes one device holds for a tree of (possibly sharded) arrays; max over devices."""
    totals: dict[Any, int] = {}
    for leaf in jax.tree_util.tree_leaves(tree):
        for shard in leaf.addressable_shards:
            totals[shard.device] = totals.get(shard.device, 0) + shard.data.nbytes
    return max(totals.values()) if totals else 0
