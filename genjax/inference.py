"""Load a trained model from a workdir for sampling and evaluation (params only)."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax

from genjax import assemble as assemble_lib
from genjax import checkpoint as ckpt_lib
from genjax import config_lib, sharding
from genjax.config_lib import UserError


@dataclasses.dataclass
class Loaded:
    config: Any
    family: Any
    model: Any
    params: Any
    model_state: Any
    meta: dict
    step: int


def load(workdir: str, *, which: str = "ema", step: int | None = None) -> Loaded:
    """Params of the latest (or `step`) checkpoint in `workdir`; `which`: ema | raw."""
    if which not in ("ema", "raw"):
        raise UserError(f"--params={which!r}: use ema or raw")
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise UserError(f"no checkpoints in {workdir!r}: train first, e.g. "
                        f"python -m genjax.train --config=configs/lm_shakespeare.py:cpu "
                        f"--workdir={workdir}")
    ckpt = ckpt_lib.Checkpointer(workdir, read_only=True)
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise UserError(f"no finished checkpoint in {workdir!r}")
    meta = ckpt.read_meta(step)
    config = config_lib.from_dict(meta["config"])
    config.mesh = config_lib.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    config.lock()
    mesh = sharding.make_mesh(config.mesh)
    parts = assemble_lib.assemble(config, mesh)
    state, _, _ = ckpt.restore(step, parts.abstract_state)
    ckpt.close()
    params = state.params
    if which == "ema" and jax.tree_util.tree_leaves(state.ema_params):
        params = state.ema_params
    return Loaded(config=config, family=parts.family, model=parts.model, params=params,
                  model_state=state.model_state, meta=meta, step=step)
