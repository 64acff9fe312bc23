"""orbax's handlers for a checkpoint's items (state arrays, data position and meta as
JSON) and its writer for arrays (genjax/checkpoint.py builds its manager with them)."""
from __future__ import annotations

import jax
import orbax.checkpoint as ocp

# orbax's replica-parallel saving splits the writing of a replicated array among its
# replicas, slicing each replica's part on device: worth it across hosts, pure overhead in
# one process (one eager slice per device per leaf: a tiny diffusion state's blocking save
# on 8 CPU devices took 0.58 s against 0.06 s, experiments/bench/checkpoint_save.py).
# None: off in one process, orbax's own default across processes; True/False forces it.
REPLICA_PARALLEL: bool | None = None
_registered: bool | None = None  # what _set_replica_parallel last registered (None: orbax's)


def _set_replica_parallel() -> None:
    global _registered
    wanted = REPLICA_PARALLEL
    if wanted is None and jax.process_count() == 1:
        wanted = False
    if wanted != _registered:  # orbax warns of the override (ours: see ORBAX_NOTICES)
        ocp.type_handlers.register_type_handler(  # use_replica_parallel=None: orbax's default
            jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=wanted),
            override=True)
        _registered = wanted


def handler_registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    """Which orbax handler reads and writes each item, per kind of save/restore args."""
    _set_replica_parallel()
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    state = ocp.StandardCheckpointHandler()
    registry.add("state", ocp.args.StandardSave, state)
    registry.add("state", ocp.args.StandardRestore, state)
    registry.add("state", ocp.args.PyTreeRestore, ocp.PyTreeCheckpointHandler())  # params only
    for item in ("data", "meta"):
        handler = ocp.JsonCheckpointHandler()
        registry.add(item, ocp.args.JsonSave, handler)
        registry.add(item, ocp.args.JsonRestore, handler)
    return registry


# orbax's warnings that are no problem here: one for every read-only CheckpointManager
# (each sample/eval), one for our choice of array writer (_set_replica_parallel).
ORBAX_NOTICES = ("Given directory is read only", "Type handler registry type")
