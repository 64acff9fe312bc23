"""The scale variants of the LM (remat, layers under scan, chunked attention and loss) meet
the shared family specification (tests/test_families*.py): they change memory and compile
time, never the math, so the first step gives the plain LM's golden loss; jitted equals
unjitted; 8 devices (data=2, fsdp=2, tensor=2) equal 1; an interrupted run resumes bit for
bit. Bad scale settings are one line each."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import assemble, sharding, train
from genjax.checkpoint import Checkpointer
from genjax.errors import ConfigError, UserError
from genjax.families import lm as lm_family
from genjax.scan_convert import convert_checkpoint
from tests.families import run_config, tiny_config
from tests.subproc import assert_one_line_error, losses_by_step, run_module
from tests.test_families import GOLDEN_LOSS, leaves_equal, random_batch

VARIANTS = {
    "remat": {"model.remat": "dots_with_no_batch_dims_saveable"},
    "scan_remat": {"model.scan_layers": True, "model.remat": "full"},
    "chunked": {"model.attention_impl": "chunked", "model.attention_chunk": 8,
                "model.loss_chunk": 8},
}


def build(variant, mesh=None):
    config = tiny_config("lm", mesh, **VARIANTS[variant])
    return assemble.assemble(config, sharding.make_mesh(config.mesh))


@functools.cache
def jitted_step_on_one_device(variant):
    parts = build(variant)
    out = parts.train_step(parts.init_state(), assemble.shard_batch(parts, random_batch(parts)))
    return jax.device_get(out)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_first_step_gives_the_plain_golden_loss_and_jit_equals_no_jit(variant):
    parts = build(variant)
    batch = assemble.shard_batch(parts, random_batch(parts))
    eager_state, eager = assemble.unjitted_train_step(parts)(jax.device_get(parts.init_state()),
                                                             jax.device_get(batch))
    jit_state, jitted = jitted_step_on_one_device(variant)
    # the golden is printed to 6 decimals: 5e-7 of rounding, 1e-6 of tolerance
    assert abs(float(eager["loss"]) - GOLDEN_LOSS["lm"]) < 1.5e-6, float(eager["loss"])
    for k in eager:
        np.testing.assert_allclose(float(eager[k]), float(jitted[k]), rtol=1e-5, atol=1e-6,
                                   err_msg=k)
    for a, b in zip(jax.tree_util.tree_leaves(eager_state), jax.tree_util.tree_leaves(jit_state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_eight_devices_equal_one(variant):
    state, m1 = jitted_step_on_one_device(variant)
    parts = build(variant, dict(data=2, fsdp=2, tensor=2))
    state8, m8 = jax.device_get(parts.train_step(
        parts.init_state(), assemble.shard_batch(parts, random_batch(parts))))
    for k in m1:
        np.testing.assert_allclose(float(m1[k]), float(m8[k]), rtol=1e-5, atol=1e-6, err_msg=k)
    for a, b in zip(jax.tree_util.tree_leaves(state.params),
                    jax.tree_util.tree_leaves(state8.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _with(config, overrides):
    config = config.copy_and_resolve_references()
    config.unlock()
    for key, value in overrides.items():
        section, last = key.split(".")
        config[section][last] = value
    config.lock()
    return config


SCAN_REMAT = {"model.scan_layers": True, "model.remat": "full"}


@pytest.fixture(scope="module")
def scan_run(tmp_path_factory, data_dir):
    """The short LM run (tests/families.py) with scan + remat, uninterrupted."""
    workdir = tmp_path_factory.mktemp("scan_remat_run")
    train.train(_with(run_config("lm"), SCAN_REMAT), str(workdir))
    return workdir


def test_interrupted_scan_remat_run_resumes_bit_for_bit(scan_run, tmp_path):
    config, run = _with(run_config("lm"), SCAN_REMAT), tmp_path / "run"
    train.train(config.copy_and_resolve_references(), str(run), stop_after=3)
    assert sorted(os.listdir(run / "checkpoints")) == ["3"]
    train.train(config.copy_and_resolve_references(), str(run))
    want, got = losses_by_step(scan_run), losses_by_step(run)
    assert sorted(want) == list(range(1, 7)) and got == want
    config = _with(config, {"model.vocab_size": _saved_vocab(run)})
    states = [_restore(d, config, 6) for d in (scan_run, run)]
    assert leaves_equal(states[0][0], states[1][0]) and states[0][1] == states[1][1]


def _restore(workdir, config, step):
    """(state, data position) of `step`, restored into `config`'s model (vocab resolved)."""
    parts = assemble.assemble(config, sharding.make_mesh(config.mesh))
    state, data, _ = Checkpointer(str(workdir), read_only=True).restore(step, parts.abstract_state)
    return state, data


def _saved_vocab(workdir) -> int:
    import json
    return json.loads((workdir / "config.json").read_text())["model"]["vocab_size"]


def test_a_checkpoint_of_the_other_layout_is_one_line_and_converts_both_ways(scan_run, tmp_path):
    config = _with(run_config("lm"), SCAN_REMAT)
    unscanned = _with(config, {"model.scan_layers": False})
    with pytest.raises(UserError, match="another params layout.*genjax.scan_convert"):
        train.train(unscanned.copy_and_resolve_references(), str(scan_run))
    config, unscanned = (_with(c, {"model.vocab_size": _saved_vocab(scan_run)})
                         for c in (config, unscanned))
    flat, back = tmp_path / "flat", tmp_path / "back"
    assert convert_checkpoint(str(scan_run), str(flat)) == 6
    assert convert_checkpoint(str(flat), str(back)) == 6
    s0, d0 = _restore(scan_run, config, 6)
    s2, d2 = _restore(back, config, 6)
    assert leaves_equal(s0, s2) and d0 == d2  # scanned -> unscanned -> scanned: bit for bit
    s1, _ = _restore(flat, unscanned, 6)  # the unscanned copy restores into an unscanned model
    assert "attn_0" in s1.params and "layers" not in s1.params


@pytest.mark.parametrize("key,value,choices", [
    ("model.remat", "everything", "dots_saveable"),
    ("model.attention_impl", "flash", "chunked"),
])
def test_unknown_scale_setting_is_a_config_error_naming_the_choices(key, value, choices):
    with pytest.raises(ConfigError, match=rf"config\.{key}='{value}': choose one of .*{choices}"):
        lm_family.make_model(tiny_config("lm", **{key: value}))


def test_unknown_remat_policy_on_the_command_line_is_one_error_line():
    proc = run_module("genjax.aot", "--config=configs/lm_shakespeare.py:tiny",
                      "--config.model.remat=everything")
    assert_one_line_error(proc, "config.model.remat='everything'", "dots_saveable")


def _preset_params(preset: str) -> int:
    from configs import lm_shakespeare
    model = lm_family.make_model(lm_shakespeare.get_config(preset))
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), np.zeros((1, 8), np.int32))
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(lambda b: b.value, shapes, is_leaf=lambda b: hasattr(b, "names"))))


def test_llama_presets_have_the_published_parameter_counts():
    # LLaMA-2-7B: 6,738,415,616 (Hugging Face meta-llama/Llama-2-7b-hf).
    assert _preset_params("llama_7b") == 6_738_415_616
    # LLaMA-3.2-1B: 1,235,814,400 (meta-llama/Llama-3.2-1B: 8 KV heads, tied embeddings).
    assert _preset_params("llama_1b") == 1_235_814_400


def test_grouped_query_attention_equals_multi_head_attention_with_repeated_key_values():
    """K key/value heads shared by N / K query heads == an N-head model whose key/value
    kernels are the GQA ones repeated per group (built here by hand), including through
    the KV cache; the cache holds K heads."""
    from genjax.models import transformer as tr
    kw = dict(vocab_size=61, num_layers=2, num_heads=4, embed_dim=32, max_len=16,
              pos="rotary", use_bias=True)
    gqa, mha = tr.Transformer(num_kv_heads=2, **kw), tr.Transformer(**kw)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, 61)
    params = jax.tree_util.tree_map(
        lambda b: b.value, gqa.init(jax.random.PRNGKey(0), tokens)["params"],
        is_leaf=lambda b: hasattr(b, "names"))
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda x: x + 0.1 * rng.standard_normal(x.shape), params)
    repeated = jax.tree_util.tree_map(lambda x: x, params)
    for i in range(2):
        for name in ("key", "value"):
            p = params[f"attn_{i}"][name]  # kernel [D, K, H], bias [K, H]
            repeated[f"attn_{i}"][name] = {"kernel": np.repeat(p["kernel"], 2, axis=1),
                                           "bias": np.repeat(p["bias"], 2, axis=0)}
    want = mha.apply({"params": repeated}, tokens)
    np.testing.assert_allclose(gqa.apply({"params": params}, tokens), want, rtol=1e-5, atol=1e-5)
    chunked = tr.Transformer(num_kv_heads=2, attention_impl="chunked", attention_chunk=4, **kw)
    np.testing.assert_allclose(chunked.apply({"params": params}, tokens), want, rtol=1e-5,
                               atol=1e-5)
    cache = tr.init_cache(gqa, batch_size=2)
    assert cache[0]["k"].shape == (2, 16, 2, 8)
    positions = jnp.broadcast_to(jnp.arange(12), (2, 12))
    stepwise = []
    for t in range(12):
        logits, cache = gqa.apply({"params": params}, tokens[:, t:t + 1],
                                  positions_BxT=positions[:, t:t + 1], cache=cache)
        stepwise.append(logits)
    np.testing.assert_allclose(jnp.concatenate(stepwise, 1), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="num_kv_heads=3 must divide num_heads=4"):
        tr.Transformer(num_kv_heads=3, **kw)


@pytest.mark.parametrize("spec", ["distill", "rl+reward_model", "lm+lora"])
def test_a_run_with_frozen_models_or_adapters_converts_and_loads_both_ways(spec, tiny_run,
                                                                            tmp_path):
    """The trained model (params, moments, EMA; LoRA adapters and their frozen base)
    switches layout; a teacher or reward model of its own config keeps the layout its
    source run gives it, so the converted run loads as the new config builds it."""
    from genjax import inference
    from genjax.models import scan_convert
    run = tiny_run(spec)
    there, back = tmp_path / "there", tmp_path / "back"
    convert_checkpoint(str(run), str(there))
    _, converted, _, meta, step = inference.restore(str(there))  # the flipped config's state
    assert meta["config"]["model"]["scan_layers"] is True
    assert scan_convert.layout(converted.params) == "scanned"
    convert_checkpoint(str(there), str(back))
    _, original, data0, _, _ = inference.restore(str(run), step)
    _, again, data2, _, _ = inference.restore(str(back), step)
    assert leaves_equal(original, again) and data0 == data2
