"""A small image classifier (VGG-style CNN): the feature network of the image evaluators.

Per stage: `convs_per_stage` 3x3 convs (GroupNorm, ReLU), then 2x2 max-pooling; the
channels double each stage. Then flatten, a `feature_dim` ReLU layer (the
penultimate features FID-FMNIST/KID/precision-recall are computed on) and the logits.
Inputs are the data pipeline's images (float32[B, H, W, C] in [-1, 1]).
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from genjax import sharding
from genjax.errors import ConfigError
from genjax.models.unet import conv, dense, group_norm

_ACT = ("batch", "height", "width", "channels")
NORMS = ("group", "none")


class Classifier(nn.Module):
    num_classes: int = 10
    width: int = 32              # channels of the first stage
    num_stages: int = 3          # each halves H and W and doubles the channels
    convs_per_stage: int = 1
    feature_dim: int = 128       # penultimate layer
    dropout: float = 0.0         # on the features, in training only
    norm: str = "group"          # group (GroupNorm, <= 32 groups) | none
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        chans = [self.width * 2 ** s for s in range(self.num_stages)
                 for _ in range(self.convs_per_stage)]
        self.convs = [conv(ch, dtype=self.dtype) for ch in chans]
        if self.norm not in NORMS:
            raise ConfigError(f"norm {self.norm!r}: choose one of {NORMS}")
        self.norms = [group_norm(ch, self.dtype) if self.norm == "group" else (lambda h: h)
                      for ch in chans]
        self.feature_layer = dense(self.feature_dim, dtype=self.dtype)
        self.head = dense(self.num_classes, dtype=self.dtype)
        self.drop = nn.Dropout(self.dropout)

    def features(self, x_BxHxWxC):
        """Penultimate features: float32[B, feature_dim] (after ReLU)."""
        h = x_BxHxWxC.astype(self.dtype)
        for i, (cv, norm) in enumerate(zip(self.convs, self.norms)):
            h = sharding.constrain(nn.relu(norm(cv(h))), _ACT)
            if (i + 1) % self.convs_per_stage == 0:
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
        h = h.reshape(h.shape[0], -1)  # flatten: keeps where things are (unlike mean-pooling)
        return nn.relu(self.feature_layer(h)).astype(jnp.float32)

    def __call__(self, x_BxHxWxC, train: bool = False):
        """Logits: float32[B, num_classes]. `train` enables dropout (rng "dropout")."""
        f_BxD = self.drop(self.features(x_BxHxWxC), deterministic=not train)
        return self.head(f_BxD.astype(self.dtype)).astype(jnp.float32)
