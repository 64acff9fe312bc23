"""The one checkpoint layer (with genjax/checkpoint_handlers.py, the only modules that
import orbax).

A checkpoint step `W/checkpoints/<step>/` holds three items:
  state  the TrainState arrays (sharded save; restored onto the *current* mesh)
  data   the data iterator's position (JSON)
  meta   family, resolved config, tokenizer, genjax version (JSON)
Saves are async and atomic (orbax writes a temporary directory and renames it when
complete, so a crash mid-save leaves the previous step restorable); the latest
`keep` steps are kept.

Resume order (genjax/train.py):
  1. the latest checkpoint in the workdir (exact resume: state, RNG, data position);
  2. `config.init_from` -- params only, for fine-tuning; mismatches listed by name;
  3. fresh init.
"""
from __future__ import annotations

import dataclasses
import math
import os

import jax
import orbax.checkpoint as ocp

from genjax import checkpoint_checksums, config_lib, faults, runtime
from genjax.checkpoint_handlers import ORBAX_NOTICES, handler_registry
from genjax.checkpoint_checksums import checksums as _checksums
from genjax.checkpoint_layout import (  # noqa: F401  (tree_mismatches: interop imports it here)
    check_against_saved, check_layout, tree_mismatches, tree_of)
from genjax.checkpoint_paths import parse_init_from  # noqa: F401  (its users import it here)
from genjax.errors import (CheckpointError, ConfigError, CorruptCheckpoint,  # noqa: F401
                           UserError, machine_failure, short_reason, warn)
from genjax.step import TrainState

def _state_to_dict(state: TrainState) -> dict:
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}


class Checkpointer:
    """Async, atomic checkpoints of (state, data position, meta) in `workdir/checkpoints`.

    Retention: the latest `keep` finished steps, plus the `keep_best` best by the metric
    `best_metric` (`best_mode` min|max) given to `save`, plus the step this run resumed
    from (`protect`). Every save stores per-leaf checksums; `restore_latest` verifies them
    and falls back to the previous good step (or raises, with `strict`).
    """

    def __init__(self, workdir: str, *, keep: int = 3, keep_best: int = 0,
                 best_metric: str = "", best_mode: str = "min", async_save: bool = True,
                 read_only: bool = False):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        if best_mode not in config_lib.BEST_MODES:
            raise ConfigError(f"best_mode={best_mode!r}: use {' | '.join(config_lib.BEST_MODES)}")
        self.keep, self.keep_best = max(1, int(keep)), int(keep_best)
        self.best_metric, self.best_mode = best_metric, best_mode
        self.protect: int | None = None
        self.read_only = read_only
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None, create=not read_only, read_only=read_only,
            save_interval_steps=0 if read_only else 1,  # read-only: orbax warns unless 0
            enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only)
        runtime.quiet_absl_notices(ORBAX_NOTICES)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             handler_registry=handler_registry())
        self._metric_of: dict[int, float] = {}
        self._pending: int | None = None  # the step of the save in flight

    # ------------------------------------------------------------------ queries
    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def _check_step(self, step: int, what: str = "step") -> None:
        if step not in self.all_steps():
            raise UserError(f"{what}: no step {step} in {self.directory} ({self.all_steps()})")

    def read_meta(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        if step is None:
            raise UserError(f"no checkpoint in {self.directory}")
        self._check_step(step)
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001
            raise _unreadable(e, step, f"step {step} of {self.directory}: its meta cannot "
                                       f"be read") from e
        return out["meta"]

    def best_step(self) -> int | None:
        """The finished step with the best `best_metric` (None without metrics)."""
        scored = {s: self._metric(s) for s in self.all_steps()}
        scored = {s: v for s, v in scored.items() if v is not None}
        if not scored:
            return None
        pick = min if self.best_mode == "min" else max
        return pick(scored, key=lambda s: (scored[s], -s))

    def _metric(self, step: int) -> float | None:
        if step not in self._metric_of:
            try:
                value = self.read_meta(step).get("metrics", {}).get(self.best_metric)
            except Exception:  # noqa: BLE001 - unreadable meta: no score
                value = None
            self._metric_of[step] = _score(value)
        return self._metric_of[step]

    # ------------------------------------------------------------------ save
    def save(self, step: int, state: TrainState, data_state: dict | None, meta: dict,
             metrics: dict | None = None) -> None:
        """Starts an async save of `step`; raises CheckpointError if an earlier save failed
        or the state holds NaN/Inf (such a checkpoint is never written)."""
        self.wait()  # one save in flight at a time; surfaces errors of the previous one
        self._apply_retention()
        state_dict = _state_to_dict(state)
        scheme = checkpoint_checksums.SCHEME
        checksums, finite = _checksums(state_dict, scheme)
        if not finite:
            raise CheckpointError(f"step {step}: the train state holds NaN/Inf; "
                                  f"not writing a checkpoint of it")
        metrics = {k: float(v) for k, v in (metrics or {}).items()}
        if self.best_metric in metrics:
            self._metric_of[int(step)] = _score(metrics[self.best_metric])
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state_dict),
            data=ocp.args.JsonSave(data_state or {}),
            meta=ocp.args.JsonSave(dict(meta, step=int(step), checksums=checksums,
                                        checksum_scheme=scheme, metrics=metrics)))
        try:
            self.manager.save(int(step), args=args, force=True)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"saving checkpoint step {step} failed: {_first_line(e)}") from e
        self._pending = int(step)
        faults.kill_if("kill_mid_save", int(step))  # tests: a crash while orbax writes

    def wait(self) -> None:
        """Blocks until the in-flight save is finished; a failed save raises here."""
        try:
            self.manager.wait_until_finished()
            self.manager.check_for_errors()
        except Exception as e:  # noqa: BLE001
            step = self._pending
            raise CheckpointError(f"saving checkpoint step {step} failed: {_first_line(e)}") from e

    def close(self) -> None:
        self.wait()
        self._apply_retention()
        self._end_tmp_cleanup()
        self.manager.close()

    def abandon(self) -> None:
        """Closes after a failure before the first save: no retention (nothing is deleted)."""
        self._end_tmp_cleanup()
        self.manager.close()

    def _end_tmp_cleanup(self) -> None:
        """Waits for orbax's sweep of unfinished saves' temporary folders, which its
        manager starts on a thread when made and awaits only at the first save: a process
        that exits before (bad config, resume of a finished run) would race that thread and
        print its traceback. orbax 0.12 has no public wait for it."""
        wait = getattr(self.manager, "_maybe_await_cleanup_tmp_directory", None)
        if wait is not None:
            wait()

    def rollback_to(self, before: int) -> int | None:
        """For on_nan=rollback: deletes the finished steps >= `before` (they hold the bad
        stretch) and returns the newest step left, or None if none is older."""
        self.wait()
        steps = self.all_steps()
        if not any(s < before for s in steps):
            return None
        for s in [s for s in steps if s >= before]:
            self.manager.delete(s)
            self._metric_of.pop(s, None)
        self.manager.reload()
        self.protect = max(s for s in steps if s < before)
        return self.protect

    def _apply_retention(self) -> None:
        if self.read_only:
            return
        steps = self.all_steps()
        keep = set(steps[-self.keep:])
        if self.protect is not None:
            keep.add(self.protect)
        if self.keep_best and self.best_metric:
            scored = [(self._metric(s), s) for s in steps]
            scored = [(v, s) for v, s in scored if v is not None]
            scored.sort(key=lambda vs: vs[0], reverse=self.best_mode == "max")
            keep.update(s for _, s in scored[:self.keep_best])
        for s in steps:
            if s not in keep:
                self.manager.delete(s)
                self._metric_of.pop(s, None)

    # ------------------------------------------------------------------ restore
    def restore(self, step: int, abstract_state: TrainState, *,
                verify: bool = True) -> tuple[TrainState, dict, dict]:
        """(state on the current mesh, data position, meta) of `step`.

        Raises UserError if the checkpoint does not fit the model (shape/dtype/structure,
        listed by leaf), CorruptCheckpoint if it cannot be read or fails its checksums.
        """
        target = _state_to_dict(abstract_state)
        try:
            metadata = self.manager.metadata(step).item_metadata
        except Exception as e:  # noqa: BLE001
            raise _unreadable(e, step, f"step {step}: unreadable metadata") from e
        check_against_saved(metadata, target, self.directory, step)
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001
            raise _unreadable(e, step, f"step {step}: cannot be read") from e
        bad = _checksum_mismatches(out["meta"], out["state"], step) if verify else []
        if bad:
            raise CorruptCheckpoint(f"step {step}: checksum mismatch in {bad[:5]}")
        return TrainState(**out["state"]), out["data"], out["meta"]

    def restore_latest(self, abstract_state: TrainState, *, strict: bool = False):
        """The newest step that restores and verifies: (state, data, meta, step) or None.

        A corrupt step is moved to `checkpoints/corrupt-<step>` with a warning and the
        previous one is tried; `strict` raises instead. Never a silent restart: if steps
        exist but none is readable, this raises.
        """
        steps = self.all_steps()
        for step in reversed(steps):
            try:
                state, data, meta = self.restore(step, abstract_state)
            except CorruptCheckpoint as e:
                if strict:
                    raise CheckpointError(f"{e} (strict: not falling back)") from e
                msg = f"checkpoint {e}; falling back to the previous step"
                warn(msg)
                self._quarantine(step)
                continue
            self.protect = step
            return state, data, meta, step
        if steps:
            raise CheckpointError(f"no readable checkpoint among steps {steps} in "
                                  f"{self.directory}; refusing to restart from scratch")
        if self.quarantined():  # an earlier run moved every step aside: still no restart
            raise CheckpointError(f"every checkpoint in {self.directory} was moved aside as corrupt"
                                  f" ({', '.join(self.quarantined())}); refusing to restart "
                                  f"from scratch: delete them to start over")
        return None

    def quarantined(self) -> list[str]:
        """The `corrupt-<step>` folders that restore_latest moved aside."""
        names = os.listdir(self.directory) if os.path.isdir(self.directory) else []
        return sorted(n for n in names if n.startswith("corrupt-"))

    def _quarantine(self, step: int) -> None:
        """Process 0 moves the step aside; every process waits for it, then re-lists the
        steps (one that kept the old list would refuse to save that step again)."""
        if self.read_only:
            return
        src = os.path.join(self.directory, str(step))
        dst, n = os.path.join(self.directory, f"corrupt-{step}"), 1
        while os.path.exists(dst):  # an earlier post-mortem copy of this step is kept
            n += 1
            dst = os.path.join(self.directory, f"corrupt-{step}.{n}")
        if jax.process_index() == 0 and os.path.exists(src):
            os.rename(src, dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"genjax: checkpoint {step} moved aside")
        self.manager.reload()

    def restore_params(self, step: int | None, abstract_params, which="raw", source="init_from"):
        """Params only (of `source`: init_from's or another config key's run) onto the
        shardings of `abstract_params`; which: "raw" | "ema". Top-level keys the source's
        meta lists as "aux_params" (no part of its model: a PPO value head) are skipped."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise UserError(f"{source}: no checkpoint in {self.directory}")
        self._check_step(step, source)
        key = {"raw": "params", "ema": "ema_params"}.get(which)
        if key is None:
            raise UserError(f"init_from_params={which!r}: use raw or ema")
        try:
            saved_params = tree_of(self.manager.metadata(step).item_metadata, "state")[key]
        except Exception as e:  # noqa: BLE001
            raise _unreadable(e, step, f"{source}: step {step} of {self.directory} cannot "
                                       f"be read") from e
        if key == "ema_params" and not jax.tree_util.tree_leaves(saved_params):
            raise UserError(f"init_from_params=ema: {self.directory} kept no EMA params "
                            "(optim.ema_decay 0): --config.init_from_params=raw")
        meta = self.read_meta(step)
        aux = set(meta.get("aux_params", ())) - set(abstract_params)
        saved_params = {k: v for k, v in saved_params.items() if k not in aux}
        problems = tree_mismatches(saved_params, abstract_params)
        check_layout(saved_params, abstract_params, self.directory)
        if problems:
            raise UserError(f"{source}: params do not match this model:\n  " +
                            "\n  ".join(problems[:20]))
        # The state item is a PyTree checkpoint: read partially (params, not the optimizer).
        path = os.path.join(self.directory, str(step), "state")
        item = {key: abstract_params}
        restore_args = jax.tree_util.tree_map(
            lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, dtype=a.dtype), item)
        args = ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
        try:
            with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as reader:
                restored = reader.restore(path, args=args)
        except Exception as e:  # noqa: BLE001
            raise _unreadable(e, step, f"{source}: step {step} of {self.directory} cannot "
                                       f"be read") from e
        bad = _checksum_mismatches(meta, restored, step)
        if bad:
            raise CorruptCheckpoint(f"{source}: step {step} of {self.directory} fails its "
                                    f"checksums in {bad[:5]}: the checkpoint is corrupt")
        return restored[key]


def _checksum_mismatches(meta: dict, tree: dict, step: int) -> list[str]:
    """Leaf paths of `tree` (the state dict, or the part a partial read holds) whose
    checksums differ from those the save stored in `meta` ([] if it stored none)."""
    saved = meta.get("checksums")
    if not saved:
        return []
    scheme = meta.get("checksum_scheme", "legacy")  # none before 2026-12-04
    if scheme not in checkpoint_checksums.SCHEMES:
        raise CheckpointError(f"step {step}: checksum scheme {scheme!r} is unknown to this "
                              f"genjax (a newer one wrote it)")
    now, _ = _checksums(tree, scheme)
    return sorted(k for k in now if now[k] != saved.get(k))


def _unreadable(e: BaseException, step: int, what: str) -> CorruptCheckpoint:
    """The CorruptCheckpoint "<what> (<reason>)" of a read that failed on the files; a
    failure of this machine raises CheckpointError here instead."""
    _raise_if_this_machine(e, step)
    return CorruptCheckpoint(f"{what} ({short_reason(e)})")


def _raise_if_this_machine(e: BaseException, step: int) -> None:
    """CheckpointError, not CorruptCheckpoint, when the machine failed rather than the
    files: such a step is never moved aside (nor an older one restored in its place)."""
    cause = machine_failure(e)
    if cause is not None:
        raise CheckpointError(f"step {step}: reading it failed on this machine "
                              f"({type(cause).__name__}: {_first_line(cause)}); the "
                              f"checkpoint is left as it is") from e


def _score(value) -> float | None:
    """A step's best_metric for ranking; NaN/Inf rank as unscored (a NaN sorts anywhere)."""
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _first_line(e: BaseException) -> str:
    """`e` as one line (orbax's errors can span many)."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def run_meta(path: str, key: str = "init_from") -> dict:
    """The checkpoint meta (config, family, data: tokenizer, classes) of the run at `path`
    (as parse_init_from reads it; its latest step unless one is named)."""
    workdir, step = parse_init_from(path, key)
    ckpt = Checkpointer(workdir, read_only=True)
    try:
        return ckpt.read_meta(step)
    finally:
        ckpt.close()
