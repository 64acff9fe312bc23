r"""int8 weight-only quantization for inference, any family.

  python -m genjax.quantize --workdir=W --out=W8
  python -m genjax.sample --workdir=W8 --prompt="ROMEO:"      # genjax.evaluate likewise

Every float parameter with >= 2 dims becomes {"int8": q int8[shape], "scale": s float32}
with symmetric absmax scales s = max|W| / 127 per output channel: the max runs over the
kernel's input (contracted) axes, found from its logical axis names as LoRA does
(genjax/models/param_kinds.py `kernel_axes`: Dense [in, out] -> s [1, out]; attention
[D, heads, kv] -> s [1, heads, kv], [heads, kv, D] -> s [1, 1, D]); a lookup table whose
first axis is "vocab" ([V, D] token embeddings) gets one scale per ROW (s [V, 1]), so the
tied head, logits = x E^T, is per output channel too. q = round(W / s) in [-127, 127], so
|W - q s| <= s / 2 elementwise. Norm scales, biases (any rank) and 1-d leaves stay float32.

W8 holds one step (W's latest): the params at inference (EMA if kept, LoRA merged, a
distillation teacher dropped) quantized, the family's model_state, no optimizer state,
and meta["quantized"] = {"format", "which", "from"}. `inference.load` restores it and
returns `QuantizedModel(model)`: its `apply` dequantizes inside whatever jitted function
calls it (the KV-cache decoder, the DDIM sampler, the eval step), so the compiled
programs take s8 parameters and the fp32 weights exist only as temporaries of one call.

Why not qwix (PyPI qwix 0.1.8, PTQ provider): qwix quantizes by intercepting
dot_general/einsum/conv inside a rewritten Flax module (`quantize_model` + rules) and
stores its own QArray params. Here (1) the token embedding is a gather, not a dot_general,
and must be quantized per row for the tied head; (2) the transform stays family-agnostic
in parameter space (no model rewrite, the same seam as LoRA's merge) and the checkpoint
stays plain arrays; (3) no new dependency. What qwix gives and this does not: int8 x bf16
matmul kernels on TPU/GPU (here XLA dequantizes, usually fused into the matmul operand).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from genjax import assemble as assemble_lib
from genjax import checkpoint as ckpt_lib
from genjax import config_lib, families, runtime, sharding
from genjax import step as step_lib
from genjax import workdir as workdir_lib
from genjax.errors import UserError
from genjax.models.param_kinds import is_matrix, kernel_axes

FORMAT = "int8-absmax-per-channel"
Q, S = "int8", "scale"


# ----------------------------------------------------------------------- arrays
def reduce_axes(shape: tuple, names: tuple | None) -> tuple[int, ...]:
    """Axes the absmax runs over: a [vocab, ...] table per row, a kernel over its inputs."""
    if names and names[0] == "vocab":
        return tuple(range(1, len(shape)))
    batch, n_in = kernel_axes(names, len(shape))
    return tuple(range(batch, batch + n_in))


def quantize_array(w, axes: tuple[int, ...]) -> dict:
    """{"int8": round(w / s), "scale": s}, s = max|w| / 127 over `axes` (kept as size 1)."""
    w = jnp.asarray(w, jnp.float32)
    s = jnp.max(jnp.abs(w), axis=axes, keepdims=True) / 127.0
    s = jnp.where(s > 0, s, 1.0)  # an all-zero channel: q = 0, any scale
    q = jnp.clip(jnp.round(w / s), -127, 127).astype(jnp.int8)
    return {Q: q, S: s.astype(jnp.float32)}


def dequantize_array(leaf: dict, dtype=jnp.float32):
    return (leaf[Q].astype(jnp.float32) * leaf[S]).astype(dtype)


def is_quantized_leaf(x) -> bool:
    return isinstance(x, dict) and set(x) == {Q, S}


def quantizes(path: tuple, x) -> bool:
    """Which leaves become int8: floating weight matrices (genjax/models/param_kinds.py)."""
    return is_matrix(path[-1], x) and jnp.issubdtype(jnp.result_type(x), jnp.floating)


def quantize_params(params, names: dict[tuple, tuple | None]):
    """`params` with every leaf that `quantizes` replaced by {"int8", "scale"};
    `names`: path -> logical axis names (None: unnamed, all but the last axis are inputs)."""
    if any(is_quantized_leaf(v) for v in _flat(params).values()):
        raise UserError("these params are already int8-quantized")
    out = {}
    for path, w in traverse_util.flatten_dict(params).items():
        out[path] = (quantize_array(w, reduce_axes(np.shape(w), names.get(path)))
                     if quantizes(path, w) else w)
    return traverse_util.unflatten_dict(out)


def dequantize_params(qparams, dtype=jnp.float32):
    """The float params q * s (call inside jit: the program then takes the int8 arrays)."""
    return jax.tree_util.tree_map(lambda x: dequantize_array(x, dtype) if is_quantized_leaf(x)
                                  else x, qparams, is_leaf=is_quantized_leaf)


def _flat(params) -> dict:
    return traverse_util.flatten_dict(params, is_leaf=lambda _, x: is_quantized_leaf(x))


def nbytes(tree) -> int:
    return sum(int(np.prod(np.shape(x))) * jnp.result_type(x).itemsize
               for x in jax.tree_util.tree_leaves(tree))


@dataclasses.dataclass(frozen=True)
class QuantizedModel:
    """A flax module whose `apply` takes quantized "params" and dequantizes them in the
    calling (jitted) function; every other attribute is the wrapped module's."""
    inner: Any

    def apply(self, variables, *args, **kwargs):
        variables = {**variables, "params": dequantize_params(variables["params"])}
        return self.inner.apply(variables, *args, **kwargs)

    def __getattr__(self, name):
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


# ----------------------------------------------------------------------- names of a family
def logical_names(family, model, config) -> dict[tuple, tuple | None]:
    """path -> logical axis names of the inference params (what the family's init boxes)."""
    fam = families.for_inference(family)
    boxed = jax.eval_shape(lambda: fam.init_variables(
        model, jax.random.PRNGKey(0), fam.example_batch(config, 1), config))
    return {p: (tuple(x.names) if isinstance(x, nn.Partitioned) else None)
            for p, x in traverse_util.flatten_dict(boxed["params"]).items()}


# ----------------------------------------------------------------------- workdirs
def is_quantized_meta(meta: dict) -> bool:
    return "quantized" in meta


def refuse_int8(meta: dict, workdir: str, refused: str, instead: str) -> None:
    """One UserError line when `meta` is an int8 run's: "<workdir>: int8 weights
    (genjax.quantize) <refused>; <instead>", {run} in `instead` naming the float run."""
    if is_quantized_meta(meta):
        run = repr(meta["quantized"].get("from"))
        raise UserError(f"{workdir}: int8 weights (genjax.quantize) {refused}; "
                        + instead.format(run=run))


def inference_config(config):
    """The config of the model inference applies (LoRA merged: rank 0)."""
    out = config.copy_and_resolve_references()
    out.unlock()
    if "lora" in out:
        out.lora.rank = 0
    out.lock()
    return out


def quantized_abstract_state(parts, meta: dict):
    """The abstract TrainState of a quantized workdir (replicated) for Checkpointer.restore."""
    rep = sharding.replicated(parts.mesh)
    a = parts.abstract_state
    names = logical_names(parts.family, parts.model, parts.config)

    def build(params, model_state):
        params, model_state = families.inference_params(parts.family, params, model_state)
        return quantize_params(params, names), model_state
    q, ms = jax.eval_shape(build, a.params, a.model_state)
    with_rep = lambda t: jax.tree_util.tree_map(  # noqa: E731
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), t)
    return a.replace(params=with_rep(q), model_state=with_rep(ms), opt_state={}, ema_params={})


def quantize_workdir(workdir: str, out: str) -> int:
    """Writes the int8 checkpoint of `workdir`'s latest step into `out`; returns the step."""
    workdir_lib.refuse_nonempty(out)
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise UserError(f"--workdir={workdir!r} holds no checkpoints")
    src = ckpt_lib.Checkpointer(workdir, read_only=True)
    step = src.latest_step()
    if step is None:
        raise UserError(f"no finished checkpoint in {workdir!r}")
    meta = src.read_meta(step)
    if is_quantized_meta(meta):
        raise UserError(f"{workdir!r} is already int8-quantized (from "
                        f"{meta['quantized'].get('from')}): quantize the float run instead")
    config = config_lib.from_saved(meta["config"])
    config.mesh = config_lib.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    config.lock()
    parts = assemble_lib.assemble(config, sharding.make_mesh(config.mesh))
    state, data_state, _ = src.restore(step, parts.abstract_state)
    src.close()
    params, which = step_lib.inference_params(state, "ema")
    params, model_state = families.inference_params(parts.family, params, state.model_state)
    qparams = quantize_params(jax.device_get(params),
                              logical_names(parts.family, parts.model, config))
    new_config = inference_config(config)
    new_state = state.replace(params=qparams, model_state=model_state, opt_state={},
                              ema_params={})
    workdir_lib.write_run(out, step, new_state, data_state, dict(
        meta, quantized={"format": FORMAT, "which": which, "from": os.path.abspath(workdir)}),
        config_lib.to_dict(new_config))
    return step


def quantized_eval_step(parts):
    """parts.eval_step on quantized params (dequantized inside the jitted step)."""
    return jax.jit(lambda qp, ms, batch: parts.eval_step(dequantize_params(qp), ms, batch))


def main(argv) -> None:
    from absl import flags
    FLAGS = flags.FLAGS
    if len(argv) != 1:
        raise UserError("usage: python -m genjax.quantize --workdir=W --out=W8")
    runtime.setup_logging()
    step = quantize_workdir(FLAGS.workdir, FLAGS.out)
    if jax.process_index() == 0:
        print(f"quantized step {step} of {FLAGS.workdir} to int8 in {FLAGS.out}", flush=True)


def define_flags():
    from absl import flags
    flags.DEFINE_string("workdir", None, "the float run", required=True)
    flags.DEFINE_string("out", None, "a new folder for the int8 checkpoint", required=True)


if __name__ == "__main__":
    from genjax import cli  # the tool's runner; inference imports this module without it
    define_flags()
    cli.run(main)
