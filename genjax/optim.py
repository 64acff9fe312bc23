"""Optimizer from config: AdamW/Adam/SGD, warmup + cosine/linear decay, clipping,
weight-decay masks, gradient accumulation, and parameter groups (one optimizer each).

The optimizer is built from the config and never stored in the train state; the state
holds only its arrays (`opt_state`), so checkpoints contain arrays only.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from ml_collections import ConfigDict

from genjax.config_lib import OPTIMIZERS, SCHEDULES
from genjax.errors import ConfigError

GROUP_ONLY_KEYS = ("every", "offset")
RUN_ONLY_KEYS = ("accum_steps", "ema_decay", "freeze", "groups")  # one value for the run
FROZEN = "frozen"      # label of frozen leaves: optax.set_to_zero (no update, no state)
TRAINABLE = "trainable"  # label of the others when the family has no groups


def make_schedule(o: ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup to `o.lr`, then cosine/linear decay to `o.lr * o.min_lr_ratio`."""
    warmup = max(0, min(int(o.warmup_steps), total_steps))
    decay_steps = max(1, total_steps - warmup)
    end = o.lr * o.min_lr_ratio
    if o.schedule == "cosine":
        decay = optax.cosine_decay_schedule(o.lr, decay_steps, alpha=o.min_lr_ratio)
    elif o.schedule == "linear":
        decay = optax.linear_schedule(o.lr, end, decay_steps)
    elif o.schedule == "constant":
        decay = optax.constant_schedule(o.lr)
    else:
        raise ConfigError(f"config.optim.schedule={o.schedule!r}: use {' | '.join(SCHEDULES)}")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, o.lr, warmup), decay], [warmup])


# Params under this key carry a leading stacked-layer axis (genjax.models.transformer
# scan_layers), which does not count towards "is a kernel".
STACKED_KEY = "layers"


def decay_mask(params, exclude: tuple[str, ...] = ()) -> Any:
    """True where weight decay applies: kernels/embeddings (ndim >= 2) not matching `exclude`."""
    def one(path, x):
        name = jax.tree_util.keystr(path)
        stacked = any(getattr(k, "key", None) == STACKED_KEY for k in path)
        return x.ndim - stacked >= 2 and not any(s in name for s in exclude)
    return jax.tree_util.tree_map_with_path(one, params)


def _single(o: ConfigDict, total_steps: int) -> optax.GradientTransformation:
    lr = make_schedule(o, total_steps)
    mask = lambda p: decay_mask(p, tuple(o.wd_exclude))  # noqa: E731
    if o.name == "adamw":
        opt = optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=mask)
    elif o.name == "adam":
        opt = optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)
    elif o.name == "sgd":
        opt = optax.sgd(lr, momentum=o.momentum or None)
        if o.weight_decay:
            opt = optax.chain(optax.add_decayed_weights(o.weight_decay, mask), opt)
    else:
        raise ConfigError(f"config.optim.name={o.name!r}: use {' | '.join(OPTIMIZERS)}")
    if o.clip_norm:
        opt = optax.chain(optax.clip_by_global_norm(o.clip_norm), opt)
    return opt


def group_settings(config: ConfigDict, label: str) -> ConfigDict:
    """config.optim with the overrides of `config.optim.groups[label]` applied."""
    o = ConfigDict(config.optim.to_dict())
    o.unlock()
    for key, value in config.optim.groups.get(label, ConfigDict()).items():
        if key in GROUP_ONLY_KEYS:
            continue
        if key in RUN_ONLY_KEYS:
            raise ConfigError(f"config.optim.groups.{label}.{key}: set per run, not per group "
                              f"(config.optim.{key})")
        if key not in o:
            raise ConfigError(f"config.optim.groups.{label}.{key}: no such optimizer key")
        o[key] = value
    return o


def with_frozen(labels, params, patterns: tuple[str, ...]):
    """`labels` with FROZEN on every leaf whose "/"-joined path matches a regex of
    `patterns` (re.search); unchanged without patterns. ConfigError for a pattern that
    matches nothing (a typo would silently train everything)."""
    if not patterns:
        return labels
    compiled = [re.compile(p) for p in patterns]
    paths = {jax.tree_util.keystr(p, simple=True, separator="/"): x
             for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    unused = [p.pattern for p in compiled if not any(p.search(k) for k in paths)]
    if unused:
        raise ConfigError(f"config.optim.freeze: {unused} match no parameter; paths: "
                          f"{sorted(paths)[:12]}")
    base = labels if labels is not None else jax.tree_util.tree_map(lambda _: TRAINABLE, params)

    def one(path, label):
        key = jax.tree_util.keystr(path, simple=True, separator="/")
        return FROZEN if any(p.search(key) for p in compiled) else label
    return jax.tree_util.tree_map_with_path(one, base)


def make_optimizer(config: ConfigDict, labels=None) -> optax.GradientTransformation:
    """The optimizer for `params`; `labels` (pytree of str) gives one optimizer per group;
    the FROZEN group gets optax.set_to_zero (no update, no weight decay, no state, no
    gradient accumulator: with frozen leaves, optim.accum_steps wraps each trained group
    in optax.MultiSteps; otherwise one MultiSteps wraps the whole optimizer)."""
    k = int(config.optim.accum_steps)
    total = updates(config)

    def accumulated(tx):
        return optax.MultiSteps(tx, every_k_schedule=k) if k > 1 else tx
    if labels is None:
        return accumulated(_single(config.optim, total))
    names = sorted(set(jax.tree_util.tree_leaves(labels)))
    unknown = set(config.optim.groups.keys()) - set(names)
    if unknown:
        raise ConfigError(f"config.optim.groups has {sorted(unknown)}, but the model's "
                         f"parameter groups are {names}")
    if k > 1 and group_schedule(config, labels) is not None:
        raise ConfigError(f"optim.accum_steps={k} with alternating groups (optim.groups.*."
                          f"every > 1): a group whose turn never falls on an update's call "
                          f"would never train; use one or the other")
    if FROZEN not in names:  # one accumulator around all groups (GAN: k counts calls)
        return accumulated(optax.multi_transform(
            {n: _single(group_settings(config, n), total) for n in names}, labels))
    return optax.multi_transform(
        {n: optax.set_to_zero() if n == FROZEN else
         accumulated(_single(group_settings(config, n), total)) for n in names}, labels)


def group_schedule(config: ConfigDict, labels) -> Callable[[jax.Array], dict[str, jax.Array]] | None:
    """step -> {label: bool}: which groups update at this step (alternating updates).

    Group `g` updates when `step % every == offset` (default every=1: every step). None
    when every group updates every step (the simultaneous default).
    """
    if labels is None:
        return None
    names = sorted(set(jax.tree_util.tree_leaves(labels)))
    rule = {}
    for n in names:
        g = config.optim.groups.get(n, ConfigDict())
        rule[n] = (int(g.get("every", 1)), int(g.get("offset", 0)))
    if all(every == 1 for every, _ in rule.values()):
        return None
    return lambda step: {n: (step % every) == offset for n, (every, offset) in rule.items()}


def updates(config: ConfigDict) -> int:
    """Optimizer updates of a run: total_steps train steps, one update every accum_steps
    (the schedule, warmup included, counts updates)."""
    return int(config.total_steps) // int(config.optim.accum_steps)


def learning_rate_fn(config: ConfigDict) -> Callable[[int], float]:
    """step -> the learning rate the update that train step `step` (0-based) contributes to
    applies: the (first group's) schedule at step // accum_steps, for logging."""
    schedule, k = make_schedule(config.optim, updates(config)), int(config.optim.accum_steps)
    return lambda step: schedule(int(step) // k)


def update_emitted(opt_state) -> jax.Array | None:
    """Whether the optimizer update just made changed the params (False on the first
    k - 1 calls of each optax.MultiSteps accumulation); None without accumulation."""
    found = [s for s in jax.tree_util.tree_leaves(
        opt_state, is_leaf=lambda x: isinstance(x, optax.MultiStepsState))
        if isinstance(s, optax.MultiStepsState)]
    return None if not found else found[0].mini_step == 0


def ema_update(ema, params, decay: float):
    """ema <- decay * ema + (1 - decay) * params (fp32)."""
    return jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p.astype(e.dtype),
                                  ema, params)


def cast_floating(tree, dtype):
    """Casts floating leaves to `dtype` (bf16 compute over fp32 master params)."""
    dtype = jnp.dtype(dtype)
    return jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)
