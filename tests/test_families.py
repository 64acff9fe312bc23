"""Shared specification of every family: the same step, jitted or not, on any mesh.

Golden values pin the first step's loss of each family's `tiny` config on a fixed
random batch. Update them only when the model, loss or initialisation changes on
purpose (say so in the commit); a change from refactoring alone is a bug.
"""
import importlib

import jax
import numpy as np
import pytest

from genjax import assemble, sharding

# family -> (config module, batch maker, golden first-step loss)
# The image families (diffusion, vae, gan) join this table once their tiny configs
# compile fast enough for the CI budget; tests/test_image_families.py covers them now.
FAMILIES = {
    "lm": ("configs.lm_shakespeare", "tokens", 4.174229),
}


def tiny_config(family: str, mesh: dict | None = None):
    module = importlib.import_module(FAMILIES[family][0])
    c = module.get_config("tiny")
    c.unlock()
    if family == "lm":
        c.model.vocab_size = 64
    else:  # what resolve_config fills in from Fashion-MNIST
        c.data.channels = 1
        c.data.image_size = c.data.image_size or 28
        if "num_classes" in c.model and not c.model.num_classes:
            c.model.num_classes = 10
    c.mesh.update(mesh or dict(data=1, fsdp=1, tensor=1))
    c.lock()
    return c


def random_batch(parts, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    example = parts.family.example_batch(parts.config, int(parts.config.batch_size))
    out = {}
    for key, x in example.items():
        if key == "tokens":
            out[key] = rng.integers(0, parts.config.model.vocab_size, x.shape, dtype=np.int32)
        elif key == "label":
            out[key] = rng.integers(0, 10, x.shape, dtype=np.int32)
        elif np.issubdtype(x.dtype, np.floating):
            out[key] = rng.uniform(-1, 1, x.shape).astype(x.dtype)
        else:
            out[key] = np.zeros_like(x)
    return out


def build(family, mesh=None):
    config = tiny_config(family, mesh)
    return assemble.assemble(config, sharding.make_mesh(config.mesh))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_jit_equals_no_jit(family):
    parts = build(family)
    batch = random_batch(parts)
    state = parts.init_state()
    eager_state, eager_metrics = assemble.unjitted_train_step(parts)(
        jax.device_get(state), jax.device_get(assemble.shard_batch(parts, batch)))
    jit_state, jit_metrics = parts.train_step(state, assemble.shard_batch(parts, batch))
    np.testing.assert_allclose(float(eager_metrics["loss"]), float(jit_metrics["loss"]), rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(eager_state.params),
                    jax.tree_util.tree_leaves(jit_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    golden = FAMILIES[family][2]
    if golden is not None:
        np.testing.assert_allclose(float(eager_metrics["loss"]), golden, rtol=1e-4,
                                   err_msg="golden first-step loss changed: see module docstring")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_eight_devices_equal_one(family):
    losses = {}
    for name, mesh in {"one": None, "eight": dict(data=2, fsdp=2, tensor=2)}.items():
        parts = build(family, mesh)
        state = parts.init_state()
        state, m = parts.train_step(state, assemble.shard_batch(parts, random_batch(parts)))
        losses[name] = float(m["loss"])
    np.testing.assert_allclose(losses["one"], losses["eight"], rtol=1e-5)

