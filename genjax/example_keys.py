"""One PRNG key per example for evals that draw noise (diffusion's timesteps and noise, a
VAE's posterior samples), made from a seed and the example's own values.

An example draws the same noise in any batch, at any position, under any eval batch size
and process count, and different examples draw independently. The alternative, one key
per eval call, gives every batch the same draws position by position: a split's average
then rests on batch-size draws however large the split is (with one timestep per image,
a test set of 10,000 images scored at batch 32 saw 32 timesteps).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def example_keys(seed: int, x_BxD: jax.Array) -> jax.Array:
    """uint32[B, 2] keys: PRNGKey(seed) folded with a 32-bit hash of each row's float32
    bits (a random odd weight per element, summed mod 2^32). Equal rows get equal keys."""
    base, weights_key = jax.random.split(jax.random.PRNGKey(int(seed)))
    bits_BxD = jax.lax.bitcast_convert_type(
        jnp.asarray(x_BxD, jnp.float32).reshape(x_BxD.shape[0], -1), jnp.uint32)
    weights_D = jax.random.bits(weights_key, bits_BxD.shape[1:], jnp.uint32) | jnp.uint32(1)
    hash_B = jnp.sum(bits_BxD * weights_D, axis=1, dtype=jnp.uint32)
    return jax.vmap(lambda h: jax.random.fold_in(base, h))(hash_B)
