"""What the three image families (diffusion, vae, gan) share: shapes, classes, data seam."""
from __future__ import annotations

import jax.numpy as jnp

from genjax.errors import ConfigError


def image_shape(config) -> tuple[int, int, int]:
    s, c = int(config.data.image_size), int(config.data.channels)
    if not c:
        raise ConfigError("config.data.channels is 0: resolve it from the data first "
                         "(genjax.train does this)")
    return s, s, c


def num_classes(config) -> int:
    """Label-embedding size without the null class (0 = unconditional model)."""
    m = config.model
    if not m.class_conditional:
        return 0
    if not m.num_classes:
        raise ConfigError("config.model.num_classes is 0: resolve it from the data first")
    return int(m.num_classes)


def sample_labels(config, num_samples: int, label=None):
    """int32[num_samples] labels of samples (GAN, VAE, and diffusion's class models):
    None -> classes 0, 1, 2, ... in turn, or None for an unconditional model; else `label`."""
    n = num_classes(config)
    if not n:
        return None
    if label is None:
        return jnp.arange(num_samples, dtype=jnp.int32) % n
    return jnp.broadcast_to(jnp.asarray(label, jnp.int32), (num_samples,))


def make_data(config, *, process_index: int, process_count: int):
    from genjax.data.image_loader import ImageData
    return ImageData(config.data, global_batch_size=int(config.batch_size), seed=int(config.seed),
                     process_index=process_index, process_count=process_count)


def resolve_config(config, data) -> None:
    """channels 0 -> the data's; num_classes 0 -> the data's class count; checks the size."""
    h, w, c = data.image_shape
    if h != config.data.image_size or w != config.data.image_size:
        raise ConfigError(f"data images are {h}x{w}, config.data.image_size="
                         f"{config.data.image_size}")
    if not config.data.channels:
        config.data.channels = int(c)
    if not config.model.num_classes:
        config.model.num_classes = len(data.class_names)


def throughput_unit(config) -> tuple[str, int]:
    return "images", 1
