"""Rematerialisation (gradient checkpointing) as a config choice: `model.remat`.

  none                              keep every activation for the backward pass (default)
  full                              keep only each block's inputs; recompute the rest
  dots_saveable                     keep matmul outputs, recompute elementwise ops
  dots_with_no_batch_dims_saveable  keep matmul outputs without batch dims (weights-only
                                    contractions), recompute attention scores etc.

The math is unchanged (same loss and gradients); memory falls, compute rises by up to
one extra forward. Policies are `jax.checkpoint_policies` (JAX's own names).
"""
from __future__ import annotations

from typing import Callable

import jax
from flax import linen as nn

from genjax.errors import ConfigError

CHOICES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable")


def check(remat: str, owner: str) -> None:
    """Unknown policy -> ValueError naming the choices."""
    if remat not in CHOICES:
        raise ConfigError(f"{owner}.remat={remat!r}: choose one of {list(CHOICES)}")


def policy(remat: str) -> Callable | None:
    """The jax.checkpoint policy of a choice (None = save nothing = full remat)."""
    return None if remat in ("none", "full") else getattr(jax.checkpoint_policies, remat)


def wrap(target, remat: str, *, static_argnums: tuple[int, ...] = (), prevent_cse: bool = True):
    """`target` (a Module class or a function of a module) under nn.remat, or as is for none.

    static_argnums count the module as argument 0 (flax's convention).
    Under nn.scan pass prevent_cse=False (scan already stops the CSE that would undo remat).
    """
    if remat == "none":
        return target
    return nn.remat(target, policy=policy(remat), static_argnums=static_argnums,
                    prevent_cse=prevent_cse)
