"""Load a trained model from a workdir for sampling and evaluation (params only)."""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax

from genjax import assemble as assemble_lib
from genjax import checkpoint as ckpt_lib
from genjax import config_lib, families, quantize, sharding
from genjax import step as step_lib
from genjax.errors import UserError


@dataclasses.dataclass
class Loaded:
    config: Any
    family: Any           # the family module (genjax/families/__init__.py)
    model: Any
    params: Any           # EMA or raw, see `which`
    model_state: Any
    meta: dict
    step: int
    which: str            # "ema" | "raw": the params actually loaded
    parts: Any            # genjax.assemble.Parts (jitted eval step, mesh): assembled once
    step_params: Any = None       # params / model_state as parts.eval_step takes them
    step_model_state: Any = None  # (differ from the above for LoRA: adapters + frozen base)


def load(workdir: str, *, which: str = "ema", step: int | None = None) -> Loaded:
    """Params of the latest (or `step`) checkpoint in `workdir`; `which`: ema | raw."""
    if which not in ("ema", "raw"):
        raise UserError(f"--params={which!r}: use ema or raw")
    parts, state, _, meta, step = restore(workdir, step)
    if quantize.is_quantized_meta(meta):
        return _quantized(parts, state, meta, step)
    params, model_state, which = assemble_lib.inference_params(parts, state, which)
    step_params, _ = step_lib.inference_params(state, which)
    return Loaded(config=parts.config, family=families.for_inference(parts.family),
                  model=parts.model, params=params, model_state=model_state, meta=meta,
                  step=step, which=which, parts=parts, step_params=step_params,
                  step_model_state=state.model_state)


def inference_data_axis(config) -> int:
    """Data parallelism over every device (-1), or, in one process, over as many as divide
    the run's batch size (an RL run of batch 4 samples on 8 devices)."""
    n, batch = jax.device_count(), int(config.batch_size)
    return -1 if batch % n == 0 or jax.process_count() > 1 else math.gcd(n, batch)


def restore(workdir: str, step: int | None = None):
    """(parts, state, data position, meta, step) of the latest (or `step`) checkpoint of
    `workdir`, assembled on all local devices (data parallel)."""
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise UserError(f"no checkpoints in {workdir!r}: train first, e.g. "
                        f"python -m genjax.train --config=configs/lm_shakespeare.py:cpu "
                        f"--workdir={workdir}")
    ckpt = ckpt_lib.Checkpointer(workdir, read_only=True)
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise UserError(f"no finished checkpoint in {workdir!r}")
    meta = ckpt.read_meta(step)
    config = config_lib.from_saved(meta["config"])
    families.get(config["family"])  # the contract is checked before anything is built
    config.mesh = config_lib.ConfigDict(dict(data=inference_data_axis(config), fsdp=1, tensor=1))
    config.lock()
    mesh = sharding.make_mesh(config.mesh)
    parts = assemble_lib.assemble(config, mesh)
    abstract = (quantize.quantized_abstract_state(parts, meta) if quantize.is_quantized_meta(meta)
                else parts.abstract_state)
    state, data_state, _ = ckpt.restore(step, abstract)
    ckpt.close()
    return parts, state, data_state, meta, step


def _quantized(parts, state, meta: dict, step: int) -> Loaded:
    """An int8 workdir (genjax/quantize.py): int8 params, a model that dequantizes them
    inside the jitted sampler / eval step."""
    qparts = dataclasses.replace(parts, eval_step=quantize.quantized_eval_step(parts))
    return Loaded(config=parts.config, family=families.for_inference(parts.family),
                  model=quantize.QuantizedModel(parts.model), params=state.params,
                  model_state=state.model_state, meta=meta, step=step,
                  which=meta["quantized"]["which"], parts=qparts)
