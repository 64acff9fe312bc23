"""The one checkpoint layer (the only module that imports orbax).

A checkpoint step `W/checkpoints/<step>/` holds three items:
  state  the TrainState arrays (sharded save; restored onto the *current* mesh)
  data   the data iterator's position (JSON)
  meta   family, resolved config, tokenizer, genjax version (JSON)
Saves are async and atomic (orbax writes a temporary directory and renames it when
complete, so a crash mid-save leaves the previous step restorable); the latest
`keep` steps are kept.

Resume order (genjax/train.py calls `resume_or_init`):
  1. the latest checkpoint in the workdir (exact resume: state, RNG, data position);
  2. `config.init_from` -- params only, for fine-tuning; mismatches listed by name;
  3. fresh init.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from genjax import config_lib
from genjax.config_lib import UserError
from genjax.step import TrainState

ITEMS = ("state", "data", "meta")
# Config sections whose change makes a checkpoint belong to "another model".
ARCH_KEYS = ("family", "model")
# ...except these, which change how a model runs, not what it is.
NOT_ARCH = ("model.dropout", "model.attention_impl", "model.z_loss")


def _state_to_dict(state: TrainState) -> dict:
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}


class Checkpointer:
    """Async, atomic, keep-k checkpoints of (state, data position, meta) in `workdir`."""

    def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
                 read_only: bool = False):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=not read_only, read_only=read_only,
            enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only)
        handlers = {"state": ocp.StandardCheckpointHandler(),
                    "data": ocp.JsonCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_handlers=handlers)

    # ------------------------------------------------------------------ queries
    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def read_meta(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        if step is None:
            raise UserError(f"no checkpoint in {self.directory}")
        out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return out["meta"]

    # ------------------------------------------------------------------ save
    def save(self, step: int, state: TrainState, data_state: dict | None, meta: dict) -> bool:
        """Starts an async save of `step` (returns at once; call wait() before exiting)."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(_state_to_dict(state)),
            data=ocp.args.JsonSave(data_state or {}),
            meta=ocp.args.JsonSave(dict(meta, step=int(step))))
        return self.manager.save(int(step), args=args, force=True)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    # ------------------------------------------------------------------ restore
    def restore(self, step: int, abstract_state: TrainState) -> tuple[TrainState, dict, dict]:
        """(state on the current mesh, data position, meta) of `step`."""
        target = _state_to_dict(abstract_state)
        _check_against_saved(self.manager.item_metadata(step), target, self.directory, step)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore()))
        return TrainState(**out["state"]), out["data"], out["meta"]

    def restore_params(self, step: int | None, abstract_params) -> Any:
        """Params only (for init_from), onto `abstract_params`' shardings."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise UserError(f"init_from: no checkpoint in {self.directory}")
        saved = self.manager.item_metadata(step)
        saved_params = _tree_of(saved, "state")["params"]
        problems = tree_mismatches(saved_params, abstract_params)
        if problems:
            raise UserError("init_from: params do not match this model:\n  " +
                            "\n  ".join(problems[:20]))
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item={"params": abstract_params},
                restore_args=jax.tree_util.tree_map(
                    lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, dtype=a.dtype),
                    {"params": abstract_params}),
                partial_restore=True)))
        return out["state"]["params"]


def _tree_of(item_metadata, name):
    tree = item_metadata[name] if name in item_metadata else getattr(item_metadata, name)
    return tree.tree if hasattr(tree, "tree") else tree


def _leaves_by_path(tree) -> dict[str, Any]:
    flat, _ = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))
    return {jax.tree_util.keystr(p, simple=True, separator="/"): x for p, x in flat}


def tree_mismatches(saved, target) -> list[str]:
    """Leaf paths that are missing, extra, or differ in shape/dtype (saved vs target)."""
    a, b = _leaves_by_path(saved), _leaves_by_path(target)
    out = [f"{k}: in checkpoint, not in this model" for k in sorted(set(a) - set(b))]
    out += [f"{k}: in this model, not in checkpoint" for k in sorted(set(b) - set(a))]
    for k in sorted(set(a) & set(b)):
        sa, sb = tuple(getattr(a[k], "shape", ())), tuple(getattr(b[k], "shape", ()))
        da, db = np.dtype(getattr(a[k], "dtype", None) or "float32"), np.dtype(b[k].dtype)
        if sa != sb or da != db:
            out.append(f"{k}: checkpoint {da.name}{list(sa)} vs model {db.name}{list(sb)}")
    return out


def _check_against_saved(item_metadata, target, directory, step) -> None:
    saved = _tree_of(item_metadata, "state")
    problems = tree_mismatches(saved, target)
    if problems:
        raise UserError(f"checkpoint {directory}/{step} does not fit this model "
                        f"({len(problems)} leaves differ):\n  " + "\n  ".join(problems[:20]))


def check_same_model(saved_meta: dict, config) -> None:
    """A checkpoint of another model (family or model config differ) -> UserError."""
    now = config_lib.to_dict(config)
    then = saved_meta.get("config", {})
    diffs = []
    for key in ARCH_KEYS:
        if isinstance(now.get(key), dict):
            diffs += [d for d in config_lib.diff(then.get(key, {}), now[key], prefix=f"{key}.")
                      if d.split(":")[0] not in NOT_ARCH]
        elif then.get(key) != now.get(key):
            diffs.append(f"{key}: {then.get(key)!r} -> {now.get(key)!r}")
    if diffs:
        raise UserError("the workdir holds a checkpoint of a different model; use a new "
                        "--workdir or set --config.init_from. Differences: " + "; ".join(diffs))


def parse_init_from(path: str) -> tuple[str, int | None]:
    """'W' or 'W/checkpoints' or 'W/checkpoints/<step>' -> (workdir, step|None)."""
    path = os.path.abspath(path.rstrip("/"))
    step = None
    if os.path.basename(path).isdigit():
        step, path = int(os.path.basename(path)), os.path.dirname(path)
    if os.path.basename(path) == "checkpoints":
        path = os.path.dirname(path)
    if not os.path.isdir(os.path.join(path, "checkpoints")):
        raise UserError(f"init_from={path!r}: no checkpoints/ directory there")
    return path, step


def log_restore(step: int, directory: str) -> None:
    logging.info("restored step %d from %s", step, directory)
