"""Convolutional VAE: a stride-2 conv encoder to a diagonal Gaussian posterior, a mirrored
transposed-conv decoder to the parameters of p(x | z) (optionally class-conditional).

Decoder outputs per pixel: `bernoulli` -> 1 logit per channel; `logistic` -> mean and log
scale per channel (a discretised logistic, PixelCNN++ without the mixture).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from genjax import sharding
from genjax.errors import ConfigError
from genjax.models.unet import conv, dense

LIKELIHOODS = ("bernoulli", "logistic")
_ACT = ("batch", "height", "width", "channels")


class Encoder(nn.Module):
    latent_dim: int
    width: int
    channel_mult: Sequence[int]
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWxC):
        h = nn.swish(conv(self.width, dtype=self.dtype)(x_BxHxWxC.astype(self.dtype)))
        for mult in self.channel_mult:  # each level halves H and W
            h = nn.swish(conv(self.width * mult, kernel=4, stride=2, dtype=self.dtype)(h))
            h = sharding.constrain(h, _ACT)
        h = h.reshape(h.shape[0], -1)
        stats = dense(2 * self.latent_dim, dtype=self.dtype)(h).astype(jnp.float32)
        mean, logvar = jnp.split(stats, 2, axis=-1)
        return mean, jnp.clip(logvar, -12.0, 8.0)


class Decoder(nn.Module):
    image_shape: tuple[int, int, int]
    out_per_channel: int
    width: int
    channel_mult: Sequence[int]
    num_classes: int = 0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, z_BxZ, labels_B=None):
        H, W, C = self.image_shape
        levels = len(self.channel_mult)
        h0, w0 = H // 2 ** levels, W // 2 ** levels
        h = z_BxZ.astype(self.dtype)
        if self.num_classes:
            y = nn.Embed(self.num_classes, z_BxZ.shape[-1], dtype=self.dtype, name="label_embed")(
                labels_B)
            h = jnp.concatenate([h, y], axis=-1)
        c0 = self.width * self.channel_mult[-1]
        h = nn.swish(dense(h0 * w0 * c0, dtype=self.dtype)(h)).reshape(-1, h0, w0, c0)
        for mult in reversed(self.channel_mult):
            h = nn.ConvTranspose(self.width * mult, (4, 4), strides=(2, 2), padding="SAME",
                                 dtype=self.dtype, kernel_init=nn.with_logical_partitioning(
                                     nn.initializers.lecun_normal(),
                                     (None, None, "conv_in", "conv_out")))(h)
            h = sharding.constrain(nn.swish(h), _ACT)
        out = conv(C * self.out_per_channel, dtype=self.dtype)(h).astype(jnp.float32)
        return out  # [B, H, W, C * out_per_channel]


class VAE(nn.Module):
    image_shape: tuple[int, int, int] = (32, 32, 1)
    latent_dim: int = 32
    width: int = 32
    channel_mult: Sequence[int] = (1, 2, 2)
    likelihood: str = "logistic"   # bernoulli | logistic
    num_classes: int = 0           # > 0: class-conditional decoder
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"likelihood {self.likelihood!r}: choose one of {LIKELIHOODS}")
        H, W, _ = self.image_shape
        if H % 2 ** len(self.channel_mult) or W % 2 ** len(self.channel_mult):
            raise ConfigError(f"image {H}x{W} not divisible by 2^{len(self.channel_mult)}")
        self.encoder = Encoder(self.latent_dim, self.width, tuple(self.channel_mult), self.dtype)
        self.decoder = Decoder(self.image_shape, 1 if self.likelihood == "bernoulli" else 2,
                               self.width, tuple(self.channel_mult), self.num_classes, self.dtype)

    def encode(self, x_BxHxWxC):
        """-> (mean, logvar) of q(z | x), float32[B, Z] each."""
        return self.encoder(x_BxHxWxC)

    def decode(self, z_BxZ, labels_B=None):
        """-> parameters of p(x | z): float32[B, H, W, C * (1 | 2)]."""
        return self.decoder(z_BxZ, labels_B)

    def __call__(self, x_BxHxWxC, labels_B, eps_BxZ):
        """One reparameterised pass: (decoder output, mean, logvar)."""
        mean, logvar = self.encode(x_BxHxWxC)
        z = mean + jnp.exp(0.5 * logvar) * eps_BxZ
        return self.decode(z, labels_B), mean, logvar


def gaussian_log_prob(z, mean, logvar):
    """log N(z; mean, e^logvar) summed over the last axis."""
    return -0.5 * jnp.sum(jnp.log(2 * jnp.pi) + logvar + (z - mean) ** 2 * jnp.exp(-logvar), -1)


def bernoulli_log_prob(x_BxHxWxC, logits):
    """log p(x) with targets (x + 1) / 2 in [0, 1] (exact for binary pixels; for grey
    pixels a cross-entropy, not a normalised density), summed per example."""
    t = (x_BxHxWxC + 1.0) / 2.0
    lp = t * jax.nn.log_sigmoid(logits) + (1.0 - t) * jax.nn.log_sigmoid(-logits)
    return jnp.sum(lp, axis=(1, 2, 3))


def discretized_logistic_log_prob(x_BxHxWxC, out, num_bins: int = 256):
    """log P(x) for 8-bit pixels in [-1, 1] under a logistic integrated over each pixel's
    bin (Salimans et al. 2017), summed per example. `out` = [mean | log scale] per channel."""
    mean, log_scale = jnp.split(out, 2, axis=-1)
    log_scale = jnp.maximum(log_scale, -7.0)
    half = 1.0 / (num_bins - 1)
    centered = x_BxHxWxC - mean
    inv = jnp.exp(-log_scale)
    plus, minus = inv * (centered + half), inv * (centered - half)
    log_cdf_plus = plus - jax.nn.softplus(plus)          # log sigmoid(plus)
    log_sf_minus = -jax.nn.softplus(minus)               # log (1 - sigmoid(minus))
    delta = jax.nn.sigmoid(plus) - jax.nn.sigmoid(minus)
    mid = inv * centered
    log_pdf_mid = mid - log_scale - 2.0 * jax.nn.softplus(mid)
    lp = jnp.where(x_BxHxWxC < -0.999, log_cdf_plus,
                   jnp.where(x_BxHxWxC > 0.999, log_sf_minus,
                             jnp.where(delta > 1e-5, jnp.log(jnp.maximum(delta, 1e-12)),
                                       log_pdf_mid + jnp.log(2 * half))))
    return jnp.sum(lp, axis=(1, 2, 3))


def log_likelihood(likelihood: str, x_BxHxWxC, out):
    if likelihood == "bernoulli":
        return bernoulli_log_prob(x_BxHxWxC, out)
    if likelihood == "logistic":
        return discretized_logistic_log_prob(x_BxHxWxC, out)
    raise ConfigError(f"likelihood {likelihood!r}: choose one of {LIKELIHOODS}")


def mean_image(likelihood: str, out):
    """The decoder's mean image in [-1, 1]."""
    if likelihood == "bernoulli":
        return 2.0 * jax.nn.sigmoid(out) - 1.0
    return jnp.clip(jnp.split(out, 2, axis=-1)[0], -1.0, 1.0)
