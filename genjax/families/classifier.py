"""Classifier family: softmax cross-entropy on labelled images (the evaluators' feature net).

Batch: {"image": float32[B, H, W, C] in [-1, 1], "label": int32[B]} (+ "mask": float32[B]
in eval batches). Training augmentation (cheap, on device, per example): a random shift of
up to `model.augment_shift` pixels (a roll: exact for images with at least that much
constant border, as the padded 28 -> 32 Fashion-MNIST images have) and a random
horizontal flip (`model.augment_flip`). Eval sums: loss (cross-entropy, nats), accuracy
(correct predictions), count.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genjax.errors import ConfigError
from genjax.families import image_seam
from genjax.families.image_seam import (  # noqa: F401  shared by the image families
    image_shape, make_data, throughput_unit)
from genjax.models import classifier as classifier_lib

runtime_keys = ("model.dropout",)  # capability: may change across a resume


def make_model(config) -> classifier_lib.Classifier:
    m = config.model
    if m.name != "cnn":
        raise ConfigError(f"config.model.name={m.name!r}: the classifier family has: cnn")
    if not m.num_classes:
        raise ConfigError("config.model.num_classes is 0: resolve it from the data first")
    return classifier_lib.Classifier(
        num_classes=int(m.num_classes), width=int(m.width), num_stages=int(m.num_stages),
        convs_per_stage=int(m.convs_per_stage), feature_dim=int(m.feature_dim),
        dropout=float(m.dropout), dtype=jnp.dtype(config.compute_dtype))


def resolve_config(config, data) -> None:
    """The image families' resolution (channels, classes, size), then: >= 2 classes."""
    image_seam.resolve_config(config, data)
    if config.model.num_classes < 2:
        raise ConfigError(f"a classifier needs >= 2 classes; the data has {data.class_names}")


def example_batch(config, batch_size: int) -> dict[str, np.ndarray]:
    return {"image": np.zeros((batch_size, *image_shape(config)), np.float32),
            "label": np.zeros((batch_size,), np.int32)}


def init_variables(model, rng, batch, config) -> dict:
    return model.init({"params": rng}, jnp.asarray(batch["image"]))


def augment(x_BxHxWxC, rng, *, shift: int, flip: bool) -> jax.Array:
    """Random per-example roll by [-shift, shift] pixels in H and W, and left-right flip."""
    b = x_BxHxWxC.shape[0]
    k_shift, k_flip = jax.random.split(rng)
    if shift:
        d_Bx2 = jax.random.randint(k_shift, (b, 2), -shift, shift + 1)
        x_BxHxWxC = jax.vmap(lambda x, d: jnp.roll(x, (d[0], d[1]), axis=(0, 1)))(
            x_BxHxWxC, d_Bx2)
    if flip:
        mirror_B = jax.random.bernoulli(k_flip, 0.5, (b,))
        x_BxHxWxC = jnp.where(mirror_B[:, None, None, None], x_BxHxWxC[:, :, ::-1], x_BxHxWxC)
    return x_BxHxWxC


def loss_fn(params, model_state, batch, rng, *, model, config):
    k_aug, k_drop = jax.random.split(rng)
    x = augment(batch["image"].astype(jnp.float32), k_aug,
                shift=int(config.model.augment_shift), flip=bool(config.model.augment_flip))
    labels_B = batch["label"].astype(jnp.int32)
    logits_BxK = model.apply({"params": params}, x, train=True, rngs={"dropout": k_drop})
    loss_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxK, labels_B)
    acc = jnp.mean((jnp.argmax(logits_BxK, -1) == labels_B).astype(jnp.float32))
    return jnp.mean(loss_B), ({"accuracy": acc}, model_state)


def eval_fn(params, model_state, batch, *, model, config):
    x = batch["image"].astype(jnp.float32)
    labels_B = batch["label"].astype(jnp.int32)
    mask_B = batch.get("mask", jnp.ones((x.shape[0],), jnp.float32))
    logits_BxK = model.apply({"params": params}, x)
    loss_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxK, labels_B)
    correct_B = (jnp.argmax(logits_BxK, -1) == labels_B).astype(jnp.float32)
    return {"loss": jnp.sum(loss_B * mask_B), "accuracy": jnp.sum(correct_B * mask_B),
            "count": jnp.sum(mask_B)}


def param_labels(params, config):
    return None
