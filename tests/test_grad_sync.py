"""config.grad_sync (genjax/grad_sync.py): gradients summed as one raveled vector equal the
whole batch's, and the flat path is taken only where it is exact."""
import re

import jax
import numpy as np
import pytest

from genjax import assemble, grad_sync, sharding
from genjax.errors import ConfigError
from tests.families import tiny_config
from tests.test_families import random_batch

DATA8 = dict(data=8, fsdp=1, tensor=1)


def parts_for(family="lm", mesh=None, **overrides):
    config = tiny_config(family, mesh or DATA8, **overrides)
    return assemble.assemble(config, sharding.make_mesh(config.mesh))


def three_steps(parts, batch):
    state, losses = parts.init_state(), []
    for _ in range(3):
        state, metrics = parts.train_step(state, assemble.shard_batch(parts, batch))
        losses.append(float(metrics["loss"]))
    return jax.device_get(state.params), losses


def all_reduce_operands(parts, batch) -> list[int]:
    """Operand count of each all-reduce in the compiled step."""
    text = parts.train_step.lower(parts.init_state(),
                                  assemble.shard_batch(parts, batch)).compile().as_text()
    return [line.split(" all-reduce(")[0].count("[") for line in text.splitlines()
            if re.search(r"= .*all-reduce\(", line)]


def test_flat_sync_on_8_shards_equals_the_whole_batch_on_one_device():
    one = parts_for(mesh=dict(data=1, fsdp=1, tensor=1))
    batch = random_batch(one)
    p1, l1 = three_steps(one, batch)
    flat = parts_for(grad_sync="flat")
    p8, l8 = three_steps(flat, batch)
    np.testing.assert_allclose(l8, l1, rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p8), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # one all-reduce whose only large operand is the raveled gradient vector
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(p1))
    assert all_reduce_operands(flat, batch) == [3]  # loss, the [n_params] vector, accuracy
    text = flat.train_step.lower(flat.init_state(),
                                 assemble.shard_batch(flat, batch)).compile().as_text()
    assert f"f32[{n_params}]" in text
    leaves = len(jax.tree_util.tree_leaves(p1))
    assert max(all_reduce_operands(parts_for(grad_sync="xla"), batch)) >= leaves


def test_auto_is_flat_only_on_a_batch_only_mesh_for_a_local_loss():
    def mode(family="lm", mesh=None, **overrides):
        p = parts_for(family, mesh, **overrides)
        return grad_sync.mode(p.config, p.family, p.mesh)
    assert mode() == "flat"                                    # CPU, 8 data shards, LM
    assert mode(**{"model.dropout": 0.1}) == "xla"             # dropout: not local
    assert mode("diffusion") == "xla"                          # per-example noise
    assert mode(mesh=dict(data=4, fsdp=2, tensor=1)) == "xla"  # params split too
    assert mode(mesh=dict(data=1, fsdp=1, tensor=1)) == "xla"  # nothing to sum
    assert mode(grad_sync="xla") == "xla"


def test_flat_where_it_cannot_be_exact_is_one_config_error():
    with pytest.raises(ConfigError, match=r"grad_sync=flat: family 'lm' does not declare .* "
                                          r"local_loss"):
        parts_for(grad_sync="flat", **{"model.dropout": 0.1})
    with pytest.raises(ConfigError, match=r"grad_sync=flat: the mesh .* splits more"):
        parts_for(mesh=dict(data=4, fsdp=2, tensor=1), grad_sync="flat")
    with pytest.raises(ConfigError, match=r"grad_sync='ring': use auto \| xla \| flat"):
        parts_for(grad_sync="ring")
