"""DDPM-style U-Net (Ho et al. 2020; Dhariwal & Nichol 2021) for diffusion models.

Residual blocks with GroupNorm and a time(+class) embedding, self-attention at the
resolutions in `attn_resolutions`, a width times channel-multiplier table per level.
Shape of the DDPM CIFAR-10 model (35.7M params in the paper; 38.3M as built here): width
128, channel_mult (1, 2, 2, 2), 2 blocks per level, attention at 16x16, dropout 0.1.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from genjax import sharding
from genjax.errors import ConfigError
from genjax.models import remat

_CONV = (None, None, "conv_in", "conv_out")
_DENSE = ("conv_in", "conv_out")
_ACT = ("batch", "height", "width", "channels")


def _init(zero: bool = False):
    # DDPM's default: variance_scaling(1, fan_avg, uniform); zeros for residual outputs.
    return nn.initializers.zeros if zero else nn.initializers.variance_scaling(
        1.0, "fan_avg", "uniform")


def conv(features: int, *, kernel: int = 3, stride: int = 1, zero: bool = False, dtype=jnp.float32,
         name: str | None = None) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), strides=stride, padding="SAME", dtype=dtype,
                   kernel_init=nn.with_logical_partitioning(_init(zero), _CONV),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                   name=name)


def dense(features: int, *, dtype=jnp.float32, name: str | None = None) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, kernel_init=nn.with_logical_partitioning(_init(), _DENSE),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                    name=name)


def group_norm(channels: int, dtype) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=math.gcd(32, channels), dtype=dtype)


def timestep_embedding(t_B: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """Sinusoidal embedding of (integer or real) timesteps: float32[B, dim]."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t_B.astype(jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim - 2 * half)))


class GuidanceEmbed(nn.Module):
    """The guidance scale g as conditioning (guidance distillation, Meng et al. 2023): a
    sinusoidal embedding of 100 g (so that scales 0.01 apart differ in the fastest
    component) through a 2-layer MLP whose output layer is zero-initialised: a new
    embedding adds exactly 0, the net starts as the model without it."""
    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, guidance_B):
        h = timestep_embedding(100.0 * jnp.asarray(guidance_B, jnp.float32), self.features // 4)
        h = nn.swish(dense(self.features, dtype=self.dtype)(h))
        return nn.Dense(self.features, dtype=self.dtype,
                        kernel_init=nn.with_logical_partitioning(_init(zero=True), _DENSE),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                               ("conv_out",)))(h)


class ResBlock(nn.Module):
    features: int
    dropout: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, temb, train: bool):
        h = nn.swish(group_norm(x.shape[-1], self.dtype)(x))
        h = conv(self.features, dtype=self.dtype)(h)
        # The time (and class/caption) embedding modulates the *normalised* activations
        # (scale-shift norm, Dhariwal & Nichol 2021). Added before the norm, as in DDPM, a
        # per-channel shift is subtracted away again whenever a group holds one channel
        # (widths <= 32 here: gcd(32, C) groups), and the net would not see t at all.
        scale_BxC, shift_BxC = jnp.split(
            dense(2 * self.features, dtype=self.dtype)(nn.swish(temb)), 2, axis=-1)
        h = group_norm(self.features, self.dtype)(h)
        h = nn.swish(h * (1 + scale_BxC[:, None, None, :]) + shift_BxC[:, None, None, :])
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = conv(self.features, zero=True, dtype=self.dtype)(h)
        if x.shape[-1] != self.features:
            x = conv(self.features, kernel=1, dtype=self.dtype, name="skip")(x)
        return sharding.constrain(x + h, _ACT)


class Attention(nn.Module):
    """Multi-head self-attention over all H*W positions (residual, zero-initialised output)."""
    num_heads: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWxC):
        B, H, W, C = x_BxHxWxC.shape
        if C % self.num_heads:
            raise ConfigError(f"attention: {C} channels not divisible by num_heads={self.num_heads}")
        N, D = self.num_heads, C // self.num_heads
        h = group_norm(C, self.dtype)(x_BxHxWxC).reshape(B, H * W, C)
        qkv_BxLx3xNxD = nn.DenseGeneral(
            (3, N, D), dtype=self.dtype, name="qkv",
            kernel_init=nn.with_logical_partitioning(_init(), ("conv_in", None, "heads", "kv")))(h)
        q, k, v = (qkv_BxLx3xNxD[:, :, i] for i in range(3))
        o_BxLxNxD = jax.nn.dot_product_attention(q, k, v)
        o = nn.DenseGeneral(C, axis=(-2, -1), dtype=self.dtype, name="out",
                            kernel_init=nn.with_logical_partitioning(
                                _init(zero=True), ("heads", "kv", "conv_out")))(o_BxLxNxD)
        return x_BxHxWxC + o.reshape(B, H, W, C)


class CrossAttention(nn.Module):
    """Image positions attend to text tokens ctx_BxSxD (valid where mask_BxS); residual,
    zero-initialised output, so a new cross-attention starts as the identity."""
    num_heads: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWxC, ctx_BxSxD, mask_BxS):
        B, H, W, C = x_BxHxWxC.shape
        if C % self.num_heads:
            raise ConfigError(f"cross-attention: {C} channels not divisible by "
                             f"num_heads={self.num_heads}")
        N, D = self.num_heads, C // self.num_heads
        h = group_norm(C, self.dtype)(x_BxHxWxC).reshape(B, H * W, C)
        q_BxLxNxD = nn.DenseGeneral(
            (N, D), dtype=self.dtype, name="q",
            kernel_init=nn.with_logical_partitioning(_init(), ("conv_in", "heads", "kv")))(h)
        kv_BxSx2xNxD = nn.DenseGeneral(
            (2, N, D), dtype=self.dtype, name="kv",
            kernel_init=nn.with_logical_partitioning(_init(), ("embed", None, "heads", "kv")))(
                ctx_BxSxD.astype(self.dtype))
        o_BxLxNxD = jax.nn.dot_product_attention(q_BxLxNxD, kv_BxSx2xNxD[:, :, 0],
                                                 kv_BxSx2xNxD[:, :, 1],
                                                 mask=mask_BxS[:, None, None, :])
        o = nn.DenseGeneral(C, axis=(-2, -1), dtype=self.dtype, name="out",
                            kernel_init=nn.with_logical_partitioning(
                                _init(zero=True), ("heads", "kv", "conv_out")))(o_BxLxNxD)
        return x_BxHxWxC + o.reshape(B, H, W, C)


class UNet(nn.Module):
    """eps/x0/v network: (x_t [B,H,W,C], t [B], cond | None) -> float32[B,H,W,C].

    cond: class labels int32[B] (num_classes > 0), caption tokens int32[B, L]
    (text_encoder set; all-PAD = the null caption) or None (unconditional).
    Text conditioning: the encoder's pooled embedding is added to the time embedding
    (what the whole caption means steers every block, as a class embedding does, for the
    cost of one dense layer), and cross-attention to its token embeddings at
    `cross_attn_resolutions` (per-word detail; only at low resolution, where H*W queries
    are few). Alternatives an ablation can pick: cross_attn_resolutions=() (pooled only).
    guidance_input: the classifier-free guidance scale is an input too (`guidance_B`,
    float32[B], genjax's convention: 1 conditional), added to the time embedding by a
    zero-initialised GuidanceEmbed (a guidance-distilled student, genjax/guidance_distill.py).
    """
    out_channels: int = 1
    width: int = 128
    channel_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (16,)   # spatial sizes (H) with self-attention
    mid_attention: bool = True  # self-attention between the middle blocks (at the lowest H)
    num_heads: int = 1
    dropout: float = 0.1
    num_classes: int = 0      # 0: unconditional; else ids 0..num_classes-1 plus null = num_classes
    text_encoder: nn.Module | None = None   # genjax/models/text_encoder.TextEncoder
    cross_attn_resolutions: Sequence[int] = ()  # spatial sizes (H) attending to the text
    dtype: jnp.dtype = jnp.float32
    remat: str = "none"       # residual blocks under genjax.models.remat (same math)
    guidance_input: bool = False  # True: __call__ takes guidance_B (see above)

    def __post_init__(self):
        remat.check(self.remat, "UNet")
        for attr in ("width", "num_res_blocks"):
            if getattr(self, attr) < 1:
                raise ConfigError(f"UNet.{attr}={getattr(self, attr)}: must be >= 1")
        if min(self.channel_mult, default=0) < 1:
            raise ConfigError(f"UNet.channel_mult={tuple(self.channel_mult)}: one multiplier "
                              f">= 1 per level, at least one level")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"UNet.dropout={self.dropout}: must be in [0, 1)")
        super().__post_init__()

    @nn.compact
    def __call__(self, x_BxHxWxC, t_B, labels_B=None, *, guidance_B=None, train: bool = False):
        dt, w = self.dtype, self.width
        down = 2 ** (len(self.channel_mult) - 1)  # each level after the first halves H, W
        if x_BxHxWxC.shape[1] % down or x_BxHxWxC.shape[2] % down:
            raise ConfigError(f"UNet: {x_BxHxWxC.shape[1]}x{x_BxHxWxC.shape[2]} images do not "
                              f"halve {len(self.channel_mult) - 1} times (channel_mult="
                              f"{tuple(self.channel_mult)}): pad them to a multiple of {down} "
                              f"(config.data.image_size) or use fewer levels")
        if self.num_classes and self.text_encoder is not None:
            raise ValueError("UNet: num_classes and text_encoder are exclusive")
        if self.guidance_input != (guidance_B is not None):
            raise ValueError(f"UNet(guidance_input={self.guidance_input}) called with "
                             f"guidance_B={'None' if guidance_B is None else 'an array'}")
        temb = timestep_embedding(t_B, w)
        temb = dense(4 * w, dtype=dt)(temb)
        temb = dense(4 * w, dtype=dt)(nn.swish(temb))
        if self.guidance_input:
            temb = temb + GuidanceEmbed(4 * w, dt, name="guidance_embed")(guidance_B)
        ctx = None
        if self.text_encoder is not None:
            if labels_B is None:  # unconditional call: the null caption
                labels_B = jnp.zeros((t_B.shape[0], self.text_encoder.max_words), jnp.int32)
            ctx_BxSxD, mask_BxS, pooled_BxD = self.text_encoder(labels_B)
            ctx = (ctx_BxSxD, mask_BxS)
            temb = temb + dense(4 * w, dtype=dt, name="text_pooled")(pooled_BxD)
        if self.num_classes:
            if labels_B is None:  # unconditional call of a conditional model: the null class
                labels_B = jnp.full(t_B.shape, self.num_classes, jnp.int32)
            temb = temb + nn.Embed(
                self.num_classes + 1, 4 * w, dtype=dt, name="label_embed",
                embedding_init=nn.with_logical_partitioning(
                    nn.initializers.normal(1.0), (None, "conv_out")))(labels_B)

        # Named as flax would auto-name ResBlock (remat's wrapper class has another name).
        res_block, count = remat.wrap(ResBlock, self.remat, static_argnums=(3,)), [0]
        def block(features):
            count[0] += 1
            return res_block(features, self.dropout, dt, name=f"ResBlock_{count[0] - 1}")

        def attend(h, middle=False):
            if (middle and self.mid_attention) or h.shape[1] in self.attn_resolutions:
                h = Attention(self.num_heads, dt)(h)
            if ctx is not None and h.shape[1] in self.cross_attn_resolutions:
                h = CrossAttention(self.num_heads, dt)(h, *ctx)
            return h

        h = sharding.constrain(conv(w, dtype=dt)(x_BxHxWxC.astype(dt)), _ACT)
        skips = [h]
        for level, mult in enumerate(self.channel_mult):
            for _ in range(self.num_res_blocks):
                h = attend(block(w * mult)(h, temb, train))
                skips.append(h)
            if level != len(self.channel_mult) - 1:
                h = conv(h.shape[-1], stride=2, dtype=dt)(h)
                skips.append(h)

        h = block(h.shape[-1])(h, temb, train)
        h = attend(h, middle=True)
        h = block(h.shape[-1])(h, temb, train)

        for level, mult in reversed(list(enumerate(self.channel_mult))):
            for _ in range(self.num_res_blocks + 1):
                h = attend(block(w * mult)(jnp.concatenate([h, skips.pop()], -1), temb, train))
            if level != 0:
                B, H, W, C = h.shape
                h = jax.image.resize(h, (B, 2 * H, 2 * W, C), "nearest")
                h = conv(C, dtype=dt)(h)

        h = nn.swish(group_norm(h.shape[-1], dt)(h))
        return conv(self.out_channels, zero=True, dtype=dt)(h).astype(jnp.float32)
