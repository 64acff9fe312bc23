"""DCGAN (Radford et al. 2016) generator and discriminator in one module.

The two players are submodules named "generator" and "discriminator", so the parameters
split into two groups by top-level key. Options: a class-conditional generator (label
embedding concatenated to z) and projection discriminator (Miyato & Koyama 2018);
spectral normalisation of the discriminator (Miyato et al. 2018), whose power-iteration
vectors live in the "spectral" collection (model_state). The generator's normalisation
(`norm`): "batch" = DCGAN's BatchNorm but always with the current batch's statistics (in
sampling too: no running averages, so sampling needs only params; draw >= 16 images at a
time), "layer" (GroupNorm with one group: per image) or "none". The discriminator's
(`d_norm`): "none" or "batch" (DCGAN: the same batch-statistics norm after every conv but
the first; the caller passes real and fake batches separately). DCGAN's N(0, 0.02) init
assumes it: without a norm (and without spectral norm) D's logits start at ~0.005 on
Fashion-MNIST, with it at ~0.5 (issue #18).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from genjax import sharding
from genjax.errors import ConfigError

_CONV = (None, None, "conv_in", "conv_out")
_ACT = ("batch", "height", "width", "channels")
_INIT = nn.initializers.normal(0.02)  # DCGAN's init


NORMS = ("batch", "layer", "none")


class BatchStatNorm(nn.Module):
    """Normalises each channel over (batch, H, W) of the current batch; learned scale/bias."""
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWxC):
        C = x_BxHxWxC.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (C,))
        bias = self.param("bias", nn.initializers.zeros, (C,))
        x = x_BxHxWxC.astype(jnp.float32)
        mean = jnp.mean(x, axis=(0, 1, 2))
        var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
        return ((x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias).astype(self.dtype)


def _l2_normalize(x, eps=1e-12):
    return x * jax.lax.rsqrt(jnp.sum(x * x) + eps)


def spectral_normalize(module: nn.Module, w, update_stats: bool):
    """w / sigma_max(w as a [-1, out] matrix), one power iteration per call (u in "spectral")."""
    w_mat = w.reshape(-1, w.shape[-1]).astype(jnp.float32)
    u = module.variable("spectral", "u", lambda: _l2_normalize(
        jax.random.normal(module.make_rng("params"), (w.shape[-1],))))
    v = jax.lax.stop_gradient(_l2_normalize(w_mat @ u.value))
    u_new = jax.lax.stop_gradient(_l2_normalize(w_mat.T @ v))
    sigma = v @ w_mat @ u_new
    if update_stats and not module.is_initializing():
        u.value = u_new
    return (w_mat / sigma).reshape(w.shape).astype(w.dtype)


class SNConv(nn.Module):
    """Conv (HWIO kernel, SAME padding) with optional spectral normalisation."""
    features: int
    kernel: int = 4
    stride: int = 2
    spectral_norm: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, update_stats: bool = False):
        k = self.param("kernel", nn.with_logical_partitioning(_INIT, _CONV),
                       (self.kernel, self.kernel, x.shape[-1], self.features))
        b = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                       (self.features,))
        if self.spectral_norm:
            k = spectral_normalize(self, k, update_stats)
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), k.astype(self.dtype), (self.stride, self.stride), "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + b.astype(self.dtype)


class SNDense(nn.Module):
    features: int
    spectral_norm: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, update_stats: bool = False):
        k = self.param("kernel", nn.with_logical_partitioning(_INIT, ("conv_in", "conv_out")),
                       (x.shape[-1], self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        if self.spectral_norm:
            k = spectral_normalize(self, k, update_stats)
        return x.astype(self.dtype) @ k.astype(self.dtype) + b.astype(self.dtype)


class Generator(nn.Module):
    image_shape: tuple[int, int, int]
    latent_dim: int = 64
    width: int = 64
    channel_mult: Sequence[int] = (4, 2, 1)   # per level, coarse to fine; each level doubles H, W
    num_classes: int = 0
    norm: str = "batch"                       # batch | layer | none
    dtype: jnp.dtype = jnp.float32

    def _norm(self, h):
        if self.norm == "batch":
            return BatchStatNorm(self.dtype)(h)
        if self.norm == "layer":
            return nn.GroupNorm(num_groups=1, dtype=self.dtype)(h)
        return h

    @nn.compact
    def __call__(self, z_BxZ, labels_B=None):
        if self.norm not in NORMS:
            raise ConfigError(f"generator norm {self.norm!r}: choose one of {NORMS}")
        H, W, C = self.image_shape
        levels = len(self.channel_mult)
        if H % 2 ** levels or W % 2 ** levels:
            raise ConfigError(f"image {H}x{W} not divisible by 2^{levels}")
        h = z_BxZ.astype(self.dtype)
        if self.num_classes:
            y = nn.Embed(self.num_classes, self.latent_dim, dtype=self.dtype, name="label_embed")(
                labels_B)
            h = jnp.concatenate([h, y], axis=-1)
        h0, w0, c0 = H // 2 ** levels, W // 2 ** levels, self.width * self.channel_mult[0]
        # A bias right before a normalisation that subtracts the batch mean gets no gradient
        # (Adam would turn its rounding noise into full-size steps): none there.
        biased = self.norm == "none"
        h = nn.Dense(h0 * w0 * c0, use_bias=biased, dtype=self.dtype,
                     kernel_init=nn.with_logical_partitioning(
                         nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                         ("conv_in", "conv_out")))(h)
        h = nn.relu(self._norm(h.reshape(-1, h0, w0, c0)))
        for mult in list(self.channel_mult[1:]) + [None]:
            c = C if mult is None else self.width * mult
            h = nn.ConvTranspose(c, (4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype,
                                 use_bias=biased or mult is None,
                                 kernel_init=nn.with_logical_partitioning(_INIT, _CONV))(h)
            if mult is not None:
                h = sharding.constrain(nn.relu(self._norm(h)), _ACT)
        return jnp.tanh(h.astype(jnp.float32))


def minibatch_std(h_BxHxWxC, group: int):
    """Appends one channel: for each group of `group` consecutive examples, the standard
    deviation over the group of every feature, averaged over features (Karras et al. 2018).
    A discriminator that sees it can tell a collapsed batch (std ~ 0) from a real one.
    Consecutive groups keep real and fake apart when both halves of a [real; fake] batch
    are multiples of `group`. -> [B, H, W, C + 1]."""
    b = h_BxHxWxC.shape[0]
    if b % group:  # (b < group included: a [real; fake] pass would pool the two)
        raise ConfigError(f"minibatch std: batch {b} is not a multiple of group {group}")
    y = h_BxHxWxC.astype(jnp.float32).reshape(b // group, group, *h_BxHxWxC.shape[1:])
    std_G = jnp.sqrt(jnp.var(y, axis=1) + 1e-8).mean(axis=(1, 2, 3))
    std = jnp.broadcast_to(jnp.repeat(std_G, group)[:, None, None, None],
                           (*h_BxHxWxC.shape[:-1], 1))
    return jnp.concatenate([h_BxHxWxC, std.astype(h_BxHxWxC.dtype)], axis=-1)


class Discriminator(nn.Module):
    width: int = 64
    channel_mult: Sequence[int] = (1, 2, 4)   # per stride-2 level, fine to coarse
    num_classes: int = 0                      # > 0: projection discriminator
    spectral_norm: bool = False
    mbstd_group: int = 0                      # > 0: minibatch-std channel before the head
    norm: str = "none"                        # none | batch (DCGAN: all but the first conv)
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWxC, labels_B=None, update_stats: bool = False):
        if self.norm not in ("none", "batch"):
            raise ConfigError(f"discriminator norm {self.norm!r}: choose none | batch")
        h = x_BxHxWxC
        for i, mult in enumerate(self.channel_mult):
            h = SNConv(self.width * mult, spectral_norm=self.spectral_norm, dtype=self.dtype)(
                h, update_stats)
            if self.norm == "batch" and i > 0:
                h = BatchStatNorm(self.dtype)(h)
            h = sharding.constrain(nn.leaky_relu(h, 0.2), _ACT)
        if self.mbstd_group:  # a batch under one group would pool real with fake
            h = minibatch_std(h, self.mbstd_group)
        phi_BxF = h.reshape(h.shape[0], -1)
        out = SNDense(1, spectral_norm=self.spectral_norm, dtype=self.dtype)(
            phi_BxF, update_stats)[:, 0]
        if self.num_classes:  # projection: + <embed(y), phi(x)>
            emb = nn.Embed(self.num_classes, phi_BxF.shape[-1], dtype=self.dtype,
                           embedding_init=_INIT, name="label_embed")(labels_B)
            out = out + jnp.sum(emb * phi_BxF, axis=-1)
        return out.astype(jnp.float32)


class DCGAN(nn.Module):
    image_shape: tuple[int, int, int] = (32, 32, 1)
    latent_dim: int = 64
    g_width: int = 64
    d_width: int = 64
    channel_mult: Sequence[int] = (4, 2, 1)   # generator's; the discriminator mirrors it
    num_classes: int = 0
    spectral_norm: bool = False
    g_norm: str = "batch"
    mbstd_group: int = 0
    d_norm: str = "none"
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.generator = Generator(self.image_shape, self.latent_dim, self.g_width,
                                   tuple(self.channel_mult), self.num_classes, self.g_norm,
                                   self.dtype)
        self.discriminator = Discriminator(self.d_width, tuple(reversed(self.channel_mult)),
                                           self.num_classes, self.spectral_norm,
                                           self.mbstd_group, self.d_norm, self.dtype)

    def generate(self, z_BxZ, labels_B=None):
        """-> float32[B, H, W, C] in [-1, 1]."""
        return self.generator(z_BxZ, labels_B)

    def discriminate(self, x_BxHxWxC, labels_B=None, update_stats: bool = False):
        """-> float32[B] logits ("real" > 0)."""
        return self.discriminator(x_BxHxWxC, labels_B, update_stats)

    def __call__(self, z_BxZ, labels_B=None):
        return self.discriminate(self.generate(z_BxZ, labels_B), labels_B)
