"""LoRA for any family, in parameter space: W_eff = W + (alpha / rank) * A @ B.

`config.lora.rank > 0` wraps the run's family (`families.for_config`): the trained params
are only the adapters, {"lora": <the kernels' nesting> -> {"a", "b"}}; the base weights
sit frozen in `model_state["lora_base"]` (checkpointed, sharded by their logical names,
never differentiated, no optimizer memory). Every kernel whose "/"-joined path matches
one of `config.lora.targets` (regexes, `re.search`) gets an adapter; the family's model
code does not change: the wrapper merges the weights and calls the family's own loss,
whose model_state still holds the frozen base (DPO takes it as its reference).

Shapes: a kernel [*in, *out] gets A [*in, r] (random, std 1/sqrt(prod(in))) and
B [r, *out] (zeros), so at step 0 the model is the base model bit for bit, and A and B
keep the kernel's logical axis names (they shard like it). The input axes are the
contracted ones: attention output kernels [heads, kv, D] take (heads, kv); kernels with
heads elsewhere ([D, (3,) heads, kv]) take the first axis; Dense and Conv kernels take all
but the last. A leading "layers" axis (layers under scan) is a batch axis.

Not offered, stated: EMA (EMA(A) . EMA(B) != EMA(A B): a LoRA run needs
optim.ema_decay = 0), dropout on the adapter's input (parameter-space LoRA has no
activation to drop; use the model's own dropout), parameter groups (GAN).
`python -m genjax.lora merge --workdir=W --out=W2` writes an ordinary checkpoint.
"""
from __future__ import annotations

import math
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from genjax import sharding
from genjax.errors import ConfigError
from genjax.models.param_kinds import is_matrix, kernel_axes

BASE = "lora_base"  # model_state key of the frozen base params
# Exports of the wrapped family passed through unchanged (none of them takes params).
PASSTHROUGH = ("make_model", "example_batch", "make_data", "resolve_config", "finalize_eval",
               "flops_per_example", "throughput_unit", "likelihood_metrics", "runtime_keys",
               "text_tokenizer", "sample_options", "sample_labels", "conditioning",
               "frozen_from")


def enabled(config) -> bool:
    return "lora" in config and int(config.lora.rank) > 0


def refuse(config, why: str) -> None:
    """One ConfigError line naming `why` when LoRA is on for a family that cannot take it."""
    if enabled(config):
        raise ConfigError(f"config.lora.rank={int(config.lora.rank)} with {config.family}: {why}")


def scale(config) -> float:
    return float(config.lora.alpha) / int(config.lora.rank)


def path_str(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def is_kernel(path: tuple, x) -> bool:
    """A weight matrix (genjax/models/param_kinds.py): what an adapter may target."""
    return is_matrix(path[-1], x)


def targets(base_params, config) -> list[tuple]:
    """Paths (tuples) of the kernels (is_kernel) that get an adapter; ConfigError if none."""
    try:
        patterns = [re.compile(p) for p in config.lora.targets]
    except re.error as e:
        raise ConfigError(f"config.lora.targets={tuple(config.lora.targets)}: not a regular "
                          f"expression ({e})") from None
    flat = traverse_util.flatten_dict(sharding.unbox(base_params))
    paths = [p for p, x in flat.items()
             if is_kernel(p, x) and any(r.search(path_str(p)) for r in patterns)]
    if not paths:
        kernels = [path_str(p) for p, x in flat.items() if is_kernel(p, x)]
        raise ConfigError(f"config.lora.targets={tuple(config.lora.targets)} matches no kernel; "
                          f"kernels: {kernels[:12]}")
    return sorted(paths)


def delta(a, b, batch: int):
    """A [*batch, *in, r] @ B [*batch, r, *out] -> [*batch, *in, *out]."""
    if not batch:
        return jnp.tensordot(a, b, axes=1)
    return jax.vmap(lambda x, y: jnp.tensordot(x, y, axes=1))(a, b)


def init_adapters(base_boxed, config, rng) -> dict:
    """{"lora": nested {"a", "b"}} for the targeted kernels, boxed with logical names."""
    flat = traverse_util.flatten_dict(base_boxed)  # Partitioned boxes are leaves
    out = {}
    r = int(config.lora.rank)
    for i, path in enumerate(targets(base_boxed, config)):
        leaf = flat[path]
        names = tuple(leaf.names) if isinstance(leaf, nn.Partitioned) else None
        shape = np.shape(sharding.unbox(leaf))
        nb, ni = kernel_axes(names, len(shape))
        bshape, ishape, oshape = shape[:nb], shape[nb:nb + ni], shape[nb + ni:]
        std = 1.0 / math.sqrt(max(1, math.prod(ishape)))
        a = std * jax.random.normal(jax.random.fold_in(rng, i), (*bshape, *ishape, r), jnp.float32)
        b = jnp.zeros((*bshape, r, *oshape), jnp.float32)
        if names is not None:
            a = nn.Partitioned(a, names=(*names[:nb + ni], None))
            b = nn.Partitioned(b, names=(*names[:nb], None, *names[nb + ni:]))
        out[path + ("a",)] = a
        out[path + ("b",)] = b
    return {"lora": traverse_util.unflatten_dict(out)}


def merge(base, adapters, config, dtype=None):
    """base params with every adapted kernel replaced by W + scale * A @ B (in `dtype`,
    default the base's). `adapters`: the trained params {"lora": ...}."""
    flat = traverse_util.flatten_dict(base)
    s = scale(config)
    for path, ab in traverse_util.flatten_dict(adapters["lora"], is_leaf=lambda _, x: _is_ab(x)).items():
        w = flat[path]
        d = delta(ab["a"].astype(jnp.float32), ab["b"].astype(jnp.float32), _batch_of(ab, w))
        flat[path] = (w.astype(jnp.float32) + s * d).astype(dtype or w.dtype)
    return traverse_util.unflatten_dict(flat)


def _is_ab(x) -> bool:
    return isinstance(x, dict) and set(x) == {"a", "b"}


def _batch_of(ab, w) -> int:
    # a: [*batch, *in, r], b: [*batch, r, *out], w: [*batch, *in, *out]
    # => a.ndim + b.ndim - 2 = w.ndim + batch
    return ab["a"].ndim + ab["b"].ndim - 2 - w.ndim


def wrap(family, config):
    """The LoRA family around `family` (a module with the family contract)."""
    if float(config.optim.ema_decay):
        raise ConfigError("config.lora with optim.ema_decay > 0: the EMA of A and B is not "
                          "the EMA of A @ B; set optim.ema_decay=0 for LoRA runs")
    w = types.ModuleType(f"{family.__name__}+lora")
    w.__doc__ = __doc__
    w.inner = family
    for name in PASSTHROUGH:
        if hasattr(family, name):
            setattr(w, name, getattr(family, name))

    def init_variables(model, rng, batch, config):
        variables = dict(family.init_variables(model, rng, batch, config))
        base = variables.pop("params")
        return {"params": init_adapters(base, config, jax.random.fold_in(rng, 1)),
                BASE: base, **variables}

    def merged(params, model_state, config):
        dtype = jax.tree_util.tree_leaves(params)[0].dtype  # the compute dtype
        inner_state = {k: v for k, v in model_state.items() if k != BASE}
        return merge(model_state[BASE], params, config, dtype), inner_state

    def loss_fn(params, model_state, batch, rng, *, model, config):
        full, inner_state = merged(params, model_state, config)
        with_base = {**inner_state, BASE: model_state[BASE]}
        loss, (metrics, new_state) = family.loss_fn(full, with_base, batch, rng, model=model,
                                                    config=config)
        return loss, (metrics, {**new_state, BASE: model_state[BASE]})

    def eval_fn(params, model_state, batch, *, model, config):
        full, inner_state = merged(params, model_state, config)
        return family.eval_fn(full, {**inner_state, BASE: model_state[BASE]}, batch,
                              model=model, config=config)

    def param_labels(params, config):
        return None

    def merge_params(params, model_state):
        """(full params, the model_state of the family without LoRA): what inference
        applies, and what lora.merge and quantize write."""
        full, inner_state = merged(params, model_state, config)
        if hasattr(family, "lora_merged_state"):
            inner_state = family.lora_merged_state(inner_state, model_state[BASE])
        return full, inner_state

    def load_pretrained(state, src_params, config):
        """init_from: the source params become the frozen base."""
        return state.replace(model_state={**state.model_state, BASE: src_params})

    def pretrained_target(abstract_state):
        return abstract_state.model_state[BASE]

    if _has_groups(family, config):
        raise ConfigError("config.lora: families with parameter groups (several players) "
                          "are not supported")
    for fn in (init_variables, loss_fn, eval_fn, param_labels, merge_params,
               load_pretrained, pretrained_target):
        setattr(w, fn.__name__, fn)
    return w


def _has_groups(family, config) -> bool:
    try:
        return family.param_labels({"x": np.zeros(1)}, config) is not None
    except Exception:  # noqa: BLE001 - a family that needs its real params: assume groups
        return True
