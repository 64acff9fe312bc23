"""Where a run starts, in this order:

  1. the newest readable checkpoint in the workdir: an exact resume (state, RNG, data
     position, the batches on_nan=rollback discarded);
  2. `config.init_from`: params from another run's checkpoint, step 0, placed by the
     family (`families.load_pretrained`: params and EMA; LoRA: the frozen base);
  3. a fresh init.
After 2 or 3, the family's `frozen_from` runs (a reward model) fill their model_state keys;
after 1 the checkpoint already holds them.
`check_workdir` runs first, before anything is compiled: a workdir that holds another
model is an error, changed schedule keys a warning.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import jax

from genjax import checkpoint as ckpt_lib
from genjax import families, same_model
from genjax.errors import UserError
from genjax.rollback import BatchBook
from genjax.step import TrainState


@dataclasses.dataclass
class Start:
    state: TrainState
    step: int             # the step the state is at (0 unless resumed)
    book: BatchBook       # batches drawn and discarded so far
    source: str           # "workdir" | "init_from" | "fresh"


def check_workdir(ckpt: ckpt_lib.Checkpointer, config, family) -> None:
    """UserError if the workdir's latest checkpoint is of another model (the family's
    runtime_keys may differ); a warning for changed schedule keys."""
    latest = ckpt.latest_step()
    if latest is None:
        return
    try:
        saved_meta = ckpt.read_meta(latest)
    except Exception:  # noqa: BLE001 - a corrupt step; restore_latest deals with it
        return
    _check_meta(saved_meta, config, family)


def _check_meta(saved_meta: dict, config, family) -> None:
    same_model.check_same_model(saved_meta, config, families.runtime_keys(family))
    same_model.warn_changed_schedule(saved_meta, config)


def start(ckpt: ckpt_lib.Checkpointer, parts, config, train_iter) -> Start:
    """The state to train from; sets `train_iter`'s position when resuming."""
    checked = ckpt.latest_step()  # check_workdir compared this step's meta with config
    if checked is not None or ckpt.quarantined():  # falls back past corrupt
        # steps (or raises: strict); all of them corrupt, now or in an earlier run: raises
        try:
            restored = ckpt.restore_latest(parts.abstract_state,
                                           strict=bool(config.strict_restore))
        except UserError as e:
            if "does not fit this model" not in str(e):
                raise
            changed = same_model.changed_schedule(ckpt.read_meta(ckpt.latest_step()), config)
            if not changed:
                raise
            raise UserError(f"the checkpoint's optimizer state has another structure than "
                            f"these settings make ({'; '.join(changed)}): resume with the "
                            f"saved values, or train a new --workdir with "
                            f"--config.init_from={os.path.dirname(ckpt.directory)}") from None
        if restored is not None:
            state, data_state, saved_meta, step = restored
            if step != checked:  # fell back past a step whose meta could not be read
                _check_meta(saved_meta, config, parts.family)
            if data_state:
                train_iter.set_state(data_state)
            logging.info("resumed from %s/%d", ckpt.directory, step)
            print(f"resumed from step {step}", flush=True)
            return Start(state, step, BatchBook.from_meta(saved_meta, step), "workdir")
    state = parts.init_state()
    source = "fresh"
    if config.init_from:
        state = _init_from(state, parts, config)
        source = "init_from"
    for key, path in families.frozen_from(parts.family, config).items():
        state = _frozen_from(state, parts, key, path)
    return Start(state, int(jax.device_get(state.step)), BatchBook.from_meta(None, 0), source)


def _init_from(state: TrainState, parts, config) -> TrainState:
    target = families.pretrained_target(parts.family, parts.abstract_state)
    which = str(config.get("init_from_params", "raw"))
    params = _restore_params(config.init_from, target, "init_from", which)
    state = families.load_pretrained(parts.family, state, params, config)
    print(f"initialised params from {config.init_from}" + (" (EMA)" if which == "ema" else ""),
          flush=True)
    return state


def _frozen_from(state: TrainState, parts, key: str, path: str) -> TrainState:
    """model_state[key] <- the params of the run at `path` (shapes and shardings of the
    abstract model_state[key]; a mismatch is a UserError listing the leaves)."""
    params = _restore_params(path, parts.abstract_state.model_state[key], f"model_state[{key!r}]")
    print(f"model_state[{key!r}] from {path}", flush=True)
    return state.replace(model_state={**state.model_state, key: params})


def _restore_params(path: str, target, what: str, which: str = "raw"):
    """The params ("raw" | "ema") of the run at `path` (`what` names it in errors)."""
    src_dir, src_step = ckpt_lib.parse_init_from(path, what)
    src = ckpt_lib.Checkpointer(src_dir, read_only=True)
    try:
        return src.restore_params(src_step, target, which, what)
    finally:
        src.close()
