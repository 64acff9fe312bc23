"""Sharding specification on 8 fake CPU devices (conftest sets XLA_FLAGS before JAX loads)."""
import functools

import jax
import numpy as np
import pytest

from configs import lm_shakespeare
from genjax import assemble, config_lib, sharding
from tests.families import one_error_line


def tiny_lm(mesh: dict, **overrides):
    c = lm_shakespeare.get_config("tiny")
    c.unlock()
    c.model.vocab_size = 64
    c.model.embed_dim = 64
    c.mesh.update(mesh)
    c.update(overrides)
    c.lock()
    return c


def batch_for(config, seed=0):
    rng = np.random.default_rng(seed)
    return {"tokens": rng.integers(0, 64, (config.batch_size, config.model.max_len + 1),
                                   dtype=np.int32)}


def run_steps(config, n=2):
    parts = assemble.assemble(config, sharding.make_mesh(config.mesh))
    state = parts.init_state()
    losses = []
    for i in range(n):
        state, m = parts.train_step(state, assemble.shard_batch(parts, batch_for(config, i)))
        losses.append(float(m["loss"]))
    return parts, state, losses


def test_eight_devices_are_visible():
    assert jax.device_count() == 8


def test_same_batch_same_result_on_one_device_and_on_a_2x2x2_mesh():
    _, one, loss_one = run_steps(tiny_lm(dict(data=1, fsdp=1, tensor=1)))
    parts, eight, loss_eight = run_steps(tiny_lm(dict(data=2, fsdp=2, tensor=2)))
    np.testing.assert_allclose(loss_one, loss_eight, rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(eight.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_params_are_really_sharded():
    parts, state, _ = run_steps(tiny_lm(dict(data=2, fsdp=2, tensor=2)), n=1)
    specs = [leaf.sharding.spec for leaf in jax.tree_util.tree_leaves(state.params)]
    assert any("fsdp" in str(s) for s in specs), specs
    assert any("tensor" in str(s) for s in specs), specs
    big = max(jax.tree_util.tree_leaves(state.params), key=lambda x: x.size)
    assert big.addressable_shards[0].data.size < big.size
    # optimizer moments follow their parameter's sharding
    mu = [x for x in jax.tree_util.tree_leaves(state.opt_state) if x.shape == big.shape]
    assert mu and all(m.sharding.spec == big.sharding.spec for m in mu)


@functools.cache
def fsdp_bytes(fsdp: int) -> dict:
    """Per-device bytes of the tiny LM's state by its shardings, and the compiled step's
    argument bytes (None where XLA gives no memory analysis), on a (-1, fsdp, 1) mesh."""
    config = tiny_lm(dict(data=-1, fsdp=fsdp, tensor=1))
    parts = assemble.assemble(config, sharding.make_mesh(config.mesh))
    batch = jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        batch_for(config), parts.batch_shardings)
    mem = parts.train_step.lower(parts.abstract_state, batch).compile().memory_analysis()
    return dict(assemble.state_bytes_per_device(parts),
                argument_bytes=int(mem.argument_size_in_bytes) if mem else None)


@pytest.mark.parametrize("fsdp", [2, 8])
def test_per_device_state_bytes_fall_as_fsdp_grows(fsdp):
    """Every tiny-LM parameter has a dimension divisible by 8 on its fsdp axis: params and
    Adam moments split exactly fsdp ways; only the optimizer's scalar count is replicated."""
    one, many = fsdp_bytes(1), fsdp_bytes(fsdp)
    assert many["params"] * fsdp == one["params"], (one, many)
    scalars = 8  # two replicated int32 step counts (adam and the lr schedule)
    assert (many["opt_state"] - scalars) * fsdp == one["opt_state"] - scalars, (one, many)
    if one["argument_bytes"] is not None:
        assert many["argument_bytes"] < one["argument_bytes"], (one, many)


def test_indivisible_dims_stay_unsharded():
    mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
    spec = sharding.logical_to_spec(("vocab", "embed"), (65, 64), mesh,
                                    sharding.rules_from_config(tiny_lm({}).sharding_rules))
    assert spec == jax.sharding.PartitionSpec(None, "fsdp")


@pytest.mark.parametrize("mesh, needle", [
    (dict(data=4, fsdp=4, tensor=1), "needs 16 devices, but 8 are available"),
    (dict(data=-1, fsdp=3, tensor=1), "8 devices are not divisible by 3"),
    (dict(data=-1, fsdp=-1, tensor=1), "at most one axis may be -1"),
    (dict(data=0, fsdp=1, tensor=1), "sizes must be positive"),
])
def test_bad_mesh_is_a_one_line_config_error(mesh, needle):
    with one_error_line(config_lib.ConfigError, match=needle):
        sharding.make_mesh(mesh)


@pytest.mark.parametrize("shape, procs_of_devices, needle", [
    # pure tensor parallelism over 2 processes: each would feed its own half batch into a
    # "replicated" one (silently wrong losses)
    (dict(data=1, fsdp=1, tensor=8), [0] * 4 + [1] * 4, r"batch axes \(1 ways\) must split"),
    # a mesh on process 0's devices only: process 1 cannot feed it
    (dict(data=4, fsdp=1, tensor=1), [0] * 4, r"leaves out the devices of process\(es\) \[1\]"),
])
def test_a_multi_process_mesh_whose_batch_axes_miss_a_process_is_one_config_error(
        monkeypatch, shape, procs_of_devices, needle):
    from types import SimpleNamespace
    mesh = SimpleNamespace(shape=shape, axis_names=tuple(shape), devices=np.array(
        [SimpleNamespace(process_index=p) for p in procs_of_devices]))
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    rules = sharding.rules_from_config(lm_shakespeare.get_config("tiny").sharding_rules)
    config = lm_shakespeare.get_config("tiny")
    with one_error_line(config_lib.ConfigError, match=needle):
        assemble.check_batch_size(config, mesh, rules)
    good = SimpleNamespace(shape=dict(data=2, fsdp=1, tensor=4), axis_names=("data", "fsdp",
                           "tensor"), devices=np.array([SimpleNamespace(process_index=p)
                                                        for p in [0] * 4 + [1] * 4]))
    assemble.check_batch_size(config, good, rules)  # data spans the processes: fine


def test_a_shape_the_topology_refuses_is_a_config_error_not_a_silent_reshape(monkeypatch):
    def refuse(*args, **kwargs):
        raise ValueError("cannot split the physical axes\n(details)")
    monkeypatch.setattr(jax, "make_mesh", refuse)
    with pytest.raises(config_lib.ConfigError, match=r"does not fit the 8 cpu devices: "
                                                      r"cannot split the physical axes$"):
        sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))


def test_mesh_is_jaxs_auto_mesh_on_the_first_devices():
    mesh = sharding.make_mesh(dict(data=2, fsdp=1, tensor=2))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 1, "tensor": 2}
    assert sorted(d.id for d in mesh.devices.flat) == [0, 1, 2, 3]
    assert set(mesh.axis_types) == {jax.sharding.AxisType.Auto}


def test_the_init_program_takes_its_prng_keys_as_arguments_not_as_constants():
    # A key baked into the program lets XLA:GPU constant-fold the whole random init: the
    # init of gpt2_124m took 2m39s to compile on an H200 that way (CPU: 5 s).
    config = tiny_lm(dict(data=2, fsdp=2, tensor=2), seed=20261204)
    parts = assemble.assemble(config, sharding.make_mesh(config.mesh))
    program = parts.init_state.func.lower(*parts.init_state.args).as_text()
    for word in np.asarray(jax.random.split(jax.random.PRNGKey(config.seed))).ravel():
        assert str(int(word)) not in program
    a, b = jax.device_get(parts.init_state()), jax.device_get(run_steps(config, 0)[1])
    jax.tree_util.tree_map(np.testing.assert_array_equal, a.params, b.params)
