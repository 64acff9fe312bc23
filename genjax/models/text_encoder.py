"""Small bidirectional transformer text encoder for text-to-image diffusion.

tokens_BxL (int32, 0 = PAD; genjax/data/caption_tokenizer.py) ->
  (ctx_BxSxD, mask_BxS, pooled_BxD) with S = L + 1: a learned summary slot is prepended
  (always valid, so the all-PAD null caption still has one position to attend to), the
  tokens follow; `pooled` is the final summary slot. Pre-LayerNorm blocks (self-attention
  with a key padding mask, then the GELU MLP of genjax/models/transformer.py), learned
  positions, final LayerNorm. Trained jointly with the U-Net (no pretraining).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from genjax.models.transformer import Mlp
from genjax.sharding import constrain


def _init(names: tuple, std: float = 0.02):
    return nn.with_logical_partitioning(nn.initializers.normal(std), names)


def _zeros(names: tuple):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


class SelfAttention(nn.Module):
    """Bidirectional multi-head attention; mask_BxS marks the valid keys."""
    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BxSxD, mask_BxS):
        D = x_BxSxD.shape[-1]
        N, H = self.num_heads, D // self.num_heads
        qkv_BxSx3xNxH = nn.DenseGeneral((3, N, H), dtype=self.dtype, name="qkv",
                                        kernel_init=_init(("embed", None, "heads", "kv")),
                                        bias_init=_zeros((None, "heads", "kv")))(x_BxSxD)
        q, k, v = (qkv_BxSx3xNxH[:, :, i] for i in range(3))
        o_BxSxNxH = jax.nn.dot_product_attention(q, k, v, mask=mask_BxS[:, None, None, :])
        return nn.DenseGeneral(D, axis=(-2, -1), dtype=self.dtype, name="out",
                               kernel_init=_init(("heads", "kv", "embed")),
                               bias_init=_zeros(("embed",)))(o_BxSxNxH)


class TextEncoder(nn.Module):
    vocab_size: int = 96
    max_words: int = 16
    width: int = 64          # D
    num_layers: int = 2
    num_heads: int = 2
    mlp_ratio: int = 4
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens_BxL):
        B, L = tokens_BxL.shape
        if L != self.max_words:
            raise ValueError(f"tokens have length {L}; the encoder takes {self.max_words}")
        D = self.width
        x_BxLxD = nn.Embed(self.vocab_size, D, dtype=self.dtype, name="embed",
                           embedding_init=_init(("vocab", "embed")))(tokens_BxL)
        summary_D = self.param("summary", _init((None, "embed")), (1, D))[0]
        pos_SxD = self.param("pos", _init((None, "embed")), (L + 1, D))
        x_BxSxD = jnp.concatenate(
            [jnp.broadcast_to(summary_D.astype(self.dtype), (B, 1, D)), x_BxLxD], axis=1)
        x_BxSxD = constrain(x_BxSxD + pos_SxD.astype(self.dtype), ("batch", "length", "embed"))
        mask_BxS = jnp.concatenate([jnp.ones((B, 1), bool), tokens_BxL != 0], axis=1)
        for i in range(self.num_layers):
            h = nn.LayerNorm(dtype=self.dtype, name=f"ln_attn_{i}")(x_BxSxD)
            x_BxSxD = x_BxSxD + SelfAttention(self.num_heads, self.dtype, name=f"attn_{i}")(
                h, mask_BxS)
            h = nn.LayerNorm(dtype=self.dtype, name=f"ln_mlp_{i}")(x_BxSxD)
            x_BxSxD = x_BxSxD + Mlp(self.mlp_ratio * D, "gelu", True, self.dtype, 0.02,
                                    name=f"mlp_{i}")(h)
        x_BxSxD = nn.LayerNorm(dtype=self.dtype, name="ln_final")(x_BxSxD)
        return x_BxSxD, mask_BxS, x_BxSxD[:, 0]
