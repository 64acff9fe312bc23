"""A scalar score of a token sequence: the Transformer body and a linear head read at
one position (the last real token).

The head reads the body's final features through its vocabulary logits: r = logits[t] . w
+ b with w float32[V]. Logits are linear in the final (normed) hidden state h (logits =
h E^T), so r = h . (E^T w) + b is a linear head on h (any direction, when E has rank D),
and the Transformer needs no second output: a pretrained LM checkpoint is the body as
is. w and b start at zero, so a fresh model scores every sequence 0.
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from genjax.models import transformer


class RewardModel(nn.Module):
    """(tokens int32[B, T], last int32[B]) -> reward float32[B]."""
    body: transformer.Transformer

    @nn.compact
    def __call__(self, tokens_BxT, last_B, *, train=False):
        logits_BxTxV = self.body(tokens_BxT, train=train)
        at_last_BxV = jnp.take_along_axis(logits_BxTxV, last_B[:, None, None], axis=1)[:, 0]
        w_V = self.param("head_w", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                                ("vocab",)),
                         (self.body.vocab_size,), jnp.float32)
        b = self.param("head_b", nn.initializers.zeros_init(), (), jnp.float32)
        return jnp.einsum("bv,v->b", at_last_BxV.astype(jnp.float32), w_V) + b
