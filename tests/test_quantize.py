"""int8 weight-only quantization (genjax/quantize.py) against independent answers:
numpy absmax scales, the rounding bound |W - q s| <= s / 2, the lowered HLO's parameter
types, decode with the dequantized float weights, and a real workdir round trip.
"""
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from genjax import assemble, inference, quantize, sharding
from genjax.errors import UserError
from genjax.sampling import lm as lm_sampling
from genjax.sampling.text import TextRequest
from tests.families import tiny_config, one_error_line
from tests.subproc import assert_one_line_error, run_module
from tests.test_families import random_batch


def quantized_lm(**overrides):
    config = tiny_config("lm", **{"model.use_bias": True, **overrides})
    parts = assemble.assemble(config, sharding.make_mesh(config.mesh))
    params = jax.device_get(parts.init_state().params)
    names = quantize.logical_names(parts.family, parts.model, config)
    return parts, params, names, quantize.quantize_params(params, names)


@pytest.fixture(scope="module")
def lm_parts():
    return quantized_lm()


@pytest.mark.parametrize("scan_layers", [False, True])
def test_scales_are_numpy_absmax_per_output_channel_and_error_is_at_most_half_a_step(
        lm_parts, scan_layers):
    """scan_layers: kernels [L, ...], one scale per layer and output channel."""
    _, params, names, qparams = quantized_lm(**{"model.scan_layers": True}) if scan_layers \
        else lm_parts
    flat, qflat = traverse_util.flatten_dict(params), quantize._flat(qparams)
    # the axes the absmax runs over, written out for this Transformer's leaves
    want_axes = {"token_embed": (1,), "pos_embed": (0,), "kernel": None}
    checked = 0
    for path, w in flat.items():
        w = np.asarray(w, np.float64)
        if w.ndim < 2 or path[-1] in ("bias", "scale"):  # norms, biases: float, untouched
            assert qflat[path] is w or np.array_equal(qflat[path], w), path
            continue
        leaf = qflat[path]
        axes = want_axes[path[-1]]
        if axes is None:  # Dense [in, out] / DenseGeneral [D, heads, kv] / [heads, kv, D]
            axes = {"out": (0, 1)}.get(path[-2], (0,))
            axes = tuple(a + 1 for a in axes) if scan_layers else axes  # after [L]
        s = np.max(np.abs(w), axis=axes, keepdims=True) / 127
        assert leaf["int8"].dtype == np.int8 and leaf["scale"].dtype == np.float32
        np.testing.assert_allclose(leaf["scale"], s, rtol=1e-6, err_msg=str(path))
        err = np.abs(w - np.asarray(leaf["int8"], np.float64) * np.asarray(leaf["scale"]))
        assert np.all(err <= leaf["scale"] / 2 * (1 + 1e-5)), path
        assert np.abs(leaf["int8"]).max() == 127, path  # the absmax maps to +-127
        checked += 1
    assert checked >= (5 if scan_layers else 10)  # scanned: 2 layers' kernels in one leaf
    assert qflat[("token_embed",)]["scale"].shape == (flat[("token_embed",)].shape[0], 1)


def test_quantizing_quantized_params_is_an_error(lm_parts):
    _, _, names, qparams = lm_parts
    with pytest.raises(UserError, match="already int8"):
        quantize.quantize_params(qparams, names)


def test_the_lowered_int8_forward_and_decoder_take_s8_parameters(lm_parts):
    parts, _, _, qparams = lm_parts
    qmodel = quantize.QuantizedModel(parts.model)
    tokens = jnp.zeros((2, 8), jnp.int32)
    hlo = jax.jit(lambda p, t: qmodel.apply({"params": p}, t)).lower(qparams, tokens).as_text()
    signature = hlo[hlo.index("func.func public @main"):].split("{", 1)[0].split("->")[0]
    int8_args = re.findall(r"tensor<[0-9x]*xi8>", signature)
    n_int8 = sum(1 for x in jax.tree_util.tree_leaves(qparams) if x.dtype == np.int8)
    assert len(int8_args) == n_int8 > 0
    # the float inputs are exactly the scales, biases and norms: a small fraction
    f32 = [int(np.prod([int(d) for d in m.split("x") if d] or [1]))
           for m in re.findall(r"tensor<([0-9x]*)xf32>", signature)]
    floats = [x.size for x in jax.tree_util.tree_leaves(qparams) if x.dtype == np.float32]
    assert sorted(f32) == sorted(floats)
    assert sum(f32) < 0.1 * sum(x.size for x in jax.tree_util.tree_leaves(qparams))
    rng = jax.random.PRNGKey(0)
    dec = lm_sampling.prefill.lower(qmodel, qparams, tokens, jnp.full((2,), 3, jnp.int32), rng,
                                    jnp.arange(2, dtype=jnp.int32), num_slots=16).as_text()
    dec_sig = dec[dec.index("func.func public @main"):].split("{", 1)[0]
    assert len(re.findall(r"tensor<[0-9x]*xi8>", dec_sig)) == n_int8


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_int8_decode_equals_decode_with_the_dequantized_float_weights(lm_parts, temperature):
    parts, _, _, qparams = lm_parts
    rng = np.random.default_rng(0)
    prompts = rng.integers(1, 60, (3, 6)).astype(np.int32)
    kw = dict(rng=jax.random.PRNGKey(1), max_new_tokens=20, temperature=temperature)
    got = lm_sampling.decode(quantize.QuantizedModel(parts.model), qparams, prompts,
                             np.array([6, 4, 2]), **kw)
    want = lm_sampling.decode(parts.model, jax.device_get(quantize.dequantize_params(qparams)),
                              prompts, np.array([6, 4, 2]), **kw)
    np.testing.assert_array_equal(np.asarray(got.tokens_BxN), np.asarray(want.tokens_BxN))


def test_quantized_workdir_loads_samples_and_evaluates_like_the_float_run(tiny_run, tmp_path):
    src = tiny_run("lm")
    out = tmp_path / "w8"
    quantize.quantize_workdir(str(src), str(out))
    q, f = inference.load(str(out)), inference.load(str(src))
    assert isinstance(q.model, quantize.QuantizedModel) and q.which == f.which
    assert 3.5 < quantize.nbytes(f.params) / quantize.nbytes(q.params) < 4.0
    deq = jax.device_get(quantize.dequantize_params(q.params))
    for a, b in zip(jax.tree_util.tree_leaves(deq), jax.tree_util.tree_leaves(f.params)):
        a, b = np.asarray(a), np.asarray(b)
        assert np.abs(a - b).max() <= np.abs(b).max() / 254 + 1e-7  # s / 2 at most
    batch = random_batch(f.parts)
    sums_q = q.parts.eval_step(q.params, q.model_state, assemble.shard_batch(q.parts, batch))
    sums_f = f.parts.eval_step(f.params, f.model_state, assemble.shard_batch(f.parts, batch))
    nll_q, nll_f = (float(s["loss"]) / float(s["count"]) for s in (sums_q, sums_f))
    assert abs(nll_q - nll_f) < 0.005 * nll_f
    tokenizer = q.family.text_tokenizer(q.meta)
    req = TextRequest(prompt="ROMEO:", max_new_tokens=12, num_samples=1, temperature=0.0)
    text_q = q.family.sample_text(q.model, q.params, tokenizer, ["ROMEO:"], req)
    text_f = q.family.sample_text(f.model, deq, tokenizer, ["ROMEO:"], req)
    assert text_q[0][0].text == text_f[0][0].text


def test_quantizing_or_converting_a_quantized_workdir_is_one_error_line_and_writes_nothing(
        tiny_run, tmp_path):
    w8, again = tmp_path / "w8", tmp_path / "again"
    quantize.quantize_workdir(str(tiny_run("lm")), str(w8))
    with one_error_line(UserError, match="already int8-quantized"):
        quantize.quantize_workdir(str(w8), str(again))
    assert not again.exists()
    proc = run_module("genjax.quantize", f"--workdir={w8}", f"--out={again}")  # the CLI
    assert_one_line_error(proc, "already int8-quantized")
    assert not again.exists()
    # nor does an int8 run convert to the other layer layout (was a pytree traceback)
    from genjax import scan_convert
    with one_error_line(UserError, match="int8 weights .* are not converted"):
        scan_convert.convert_checkpoint(str(w8), str(again))
    assert not again.exists()


def test_a_diffusion_unet_quantizes_and_samples_like_its_dequantized_float_weights():
    config = tiny_config("diffusion", **{"sample.grid_samples": 0})
    parts = assemble.assemble(config, sharding.make_mesh(config.mesh))
    params = jax.device_get(parts.init_state().params)
    qparams = quantize.quantize_params(
        params, quantize.logical_names(parts.family, parts.model, config))
    flat = quantize._flat(qparams)
    convs = [p for p, x in flat.items() if quantize.is_quantized_leaf(x) and x["int8"].ndim == 4
             and p[-2].startswith("Conv")]  # [kh, kw, in, out]
    assert convs and all(flat[p]["scale"].shape[:3] == (1, 1, 1) for p in convs)  # per out
    key, kw = jax.random.PRNGKey(0), dict(steps=4)
    got = parts.family.sample_images(quantize.QuantizedModel(parts.model), qparams, config, key,
                                     2, **kw)
    want = parts.family.sample_images(parts.model, quantize.dequantize_params(qparams), config,
                                      key, 2, **kw)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_an_empty_or_occupied_out_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    # --out= was the current directory: its config.json was overwritten.
    from genjax import scan_convert
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text("mine")
    with pytest.raises(UserError, match="--out is empty"):
        quantize.quantize_workdir(str(tmp_path / "no_run"), "")
    with pytest.raises(UserError, match="exists and is not empty"):  # scan_convert too
        scan_convert.convert_checkpoint(str(tmp_path / "no_run"), str(tmp_path))
    assert os.listdir(tmp_path) == ["config.json"]
    assert (tmp_path / "config.json").read_text() == "mine"
