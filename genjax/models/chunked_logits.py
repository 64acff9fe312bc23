"""Next-token cross-entropy without the whole batch's float32 logits: sequence chunks.

  nll_BxT, logz_BxT, correct_BxT = token_nll(x_BxTxD, head_DxV, targets_BxT, chunk=C)

x_BxTxD: the final (normed) hidden states in the compute dtype; head_DxV: the output
projection (float32 params, cast to x's dtype as the model's own head does). Each chunk
of C positions computes its float32 logits [B, C, V], reduces them to log-partition,
target logit and argmax, and is rematerialised in the backward (jax.checkpoint), so at
most one chunk's logits live at a time: B*C*V*4 bytes instead of B*T*V*4. Equal to the
unchunked loss and gradients (the same per-position arithmetic).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.errors import ConfigError
from genjax.sharding import constrain


def token_nll(x_BxTxD, head_DxV, targets_BxT, *, chunk: int):
    """Per-token NLL (nats), log-partition and argmax == target, each [B, T]."""
    B, T, D = x_BxTxD.shape
    chunk = min(int(chunk), T)
    if chunk <= 0 or T % chunk:
        raise ConfigError(f"loss_chunk={chunk} must be > 0 and divide the sequence length {T}")
    head = head_DxV.astype(x_BxTxD.dtype)

    @jax.checkpoint
    def one(args):
        x_BxCxD, t_BxC = args
        logits = jnp.einsum("bcd,dv->bcv", x_BxCxD, head, preferred_element_type=jnp.float32)
        logits = constrain(logits, ("batch", "length", "vocab"))
        logz_BxC = jax.nn.logsumexp(logits, axis=-1)
        target_BxC = jnp.take_along_axis(logits, t_BxC[..., None], axis=-1)[..., 0]
        correct_BxC = jnp.argmax(logits, -1) == t_BxC
        return logz_BxC - target_BxC, logz_BxC, correct_BxC

    n = T // chunk
    xs = jnp.moveaxis(x_BxTxD.reshape(B, n, chunk, D), 1, 0)
    ts = jnp.moveaxis(targets_BxT.reshape(B, n, chunk), 1, 0)
    outs = jax.lax.map(one, (xs, ts))
    return tuple(jnp.moveaxis(o, 0, 1).reshape(B, T) for o in outs)
