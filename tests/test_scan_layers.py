"""Layers under nn.scan: the same function as the Python loop, one compiled layer body.

Scanned and unscanned transformers give the same logits, gradients and KV-cache decode
from the same (converted) weights; conversion is a bit-exact round trip; weight decay
sees through the stacked layer axis.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from genjax import optim
from genjax.models import scan_convert, transformer
from genjax.sampling import lm

KW = dict(vocab_size=64, num_heads=2, embed_dim=32, max_len=16)


def models(num_layers=3, **kw):
    plain = transformer.Transformer(**KW, num_layers=num_layers, **kw)
    return plain, plain.clone(scan_layers=True)


def tokens(B=2, T=16, seed=0):
    return jax.random.randint(jax.random.PRNGKey(seed), (B, T), 0, KW["vocab_size"])


def plain_params(model, seed=1):
    return nn.meta.unbox(model.init(jax.random.PRNGKey(seed), tokens())["params"])


def test_converted_init_has_the_scanned_models_own_structure_and_logical_names():
    plain, scanned = models()
    own = scanned.init(jax.random.PRNGKey(1), tokens())
    converted = scan_convert.stack(plain.init(jax.random.PRNGKey(1), tokens()))
    assert jax.tree_util.tree_structure(own) == jax.tree_util.tree_structure(converted)
    for a, b in zip(jax.tree_util.tree_leaves(own, is_leaf=lambda x: isinstance(x, nn.Partitioned)),
                    jax.tree_util.tree_leaves(converted,
                                              is_leaf=lambda x: isinstance(x, nn.Partitioned))):
        assert a.value.shape == b.value.shape and a.names == b.names
    kernel = converted["params"]["layers"]["attn"]["query"]["kernel"]
    assert kernel.names == ("layers", "embed", "heads", "kv") and kernel.value.shape[0] == 3


@pytest.mark.parametrize("kw", [{}, dict(remat="full", pos="rotary", norm="rmsnorm",
                                         activation="swiglu", tie_embeddings=False)])
def test_scanned_and_unscanned_give_the_same_logits_and_grads(kw):
    plain, scanned = models(**kw)
    p = plain_params(plain)
    sp = scan_convert.stack(p)
    x = tokens()
    np.testing.assert_allclose(scanned.apply({"params": sp}, x), plain.apply({"params": p}, x),
                               rtol=1e-5, atol=1e-6)
    loss = lambda m, q: jnp.mean(jax.nn.log_softmax(m.apply({"params": q}, x))[..., 0])  # noqa
    g_plain = scan_convert.stack(jax.grad(lambda q: loss(plain, q))(p))
    g_scan = jax.grad(lambda q: loss(scanned, q))(sp)
    for a, b in zip(jax.tree_util.tree_leaves(g_scan), jax.tree_util.tree_leaves(g_plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_conversion_round_trips_bit_for_bit_both_ways():
    plain, _ = models()
    p = plain_params(plain)
    back = scan_convert.unstack(scan_convert.stack(p))
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(p)
    assert all(np.array_equal(a, b) for a, b in
               zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(p)))
    s = scan_convert.stack(p)
    again = scan_convert.stack(scan_convert.unstack(s))
    assert all(np.array_equal(a, b) for a, b in
               zip(jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(s)))
    assert scan_convert.layout(p) == "unscanned" and scan_convert.layout(s) == "scanned"
    # any pytree holding params dicts (optimizer moments, a TrainState) converts too
    state = {"mu": p, "nu": p, "count": jnp.int32(3)}
    assert scan_convert.layout(scan_convert.convert(state, "scanned")["nu"]) == "scanned"


def test_kv_cache_decode_of_the_scanned_model_equals_the_unscanned():
    plain, scanned = models(num_layers=2)
    p = plain_params(plain)
    prompts = np.array([[3, 5, 7, 9, 11, 13], [2, 4, 17, 33, 8, 1]], np.int32)
    lengths = np.array([6, 2], np.int32)
    want = lm.generate(plain, p, prompts, lengths, rng=jax.random.PRNGKey(0),
                       max_new_tokens=8, temperature=0.0)
    got = lm.generate(scanned, scan_convert.stack(p), prompts, lengths,
                      rng=jax.random.PRNGKey(0), max_new_tokens=8, temperature=0.0)
    np.testing.assert_array_equal(got, want)
    assert transformer.init_cache(scanned, 2)["k"].shape == (2, 2, 16, 2, 16)  # [L, B, S, N, H]


def _compiled_grad_hlo(model):
    x = tokens()
    params = jax.eval_shape(lambda: plain_params(model.clone(scan_layers=False)))
    if model.scan_layers:
        params = jax.eval_shape(scan_convert.stack, params)
    f = jax.jit(jax.grad(lambda q: jnp.sum(model.apply({"params": q}, x))))
    return f.lower(params).compile().as_text()


def _ops(hlo: str, op: str) -> int:
    return len(re.findall(rf"\s{op}\(", hlo))


def test_scanned_hlo_has_one_layer_body_whatever_the_depth():
    counts = {}
    for L in (2, 4):
        for scan in (False, True):
            hlo = _compiled_grad_hlo(transformer.Transformer(**KW, num_layers=L, scan_layers=scan))
            counts[L, scan] = (_ops(hlo, "dot"), _ops(hlo, "while"))
    assert counts[2, True] == counts[4, True], counts        # flat in depth
    assert counts[2, True][1] >= 2, counts                  # forward and backward loops
    assert counts[4, False][0] > counts[2, False][0], counts  # the loop unrolls


def test_weight_decay_mask_ignores_the_stacked_layer_axis():
    plain, _ = models()
    p = plain_params(plain)
    want = optim.decay_mask(p)
    got = optim.decay_mask(scan_convert.stack(p))
    for part in transformer.BLOCK_PARTS:
        assert got["layers"][part] == want[f"{part}_0"], part
    assert {k: v for k, v in got.items() if k != "layers"} == \
        {k: v for k, v in want.items() if not k[-1].isdigit()}
    assert not got["layers"]["ln_attn"]["scale"] and got["layers"]["mlp"]["up"]["kernel"]


def test_layers_of_different_shapes_cannot_be_stacked():
    # A config cannot express per-layer shapes (every layer has the model's one shape);
    # a hand-made or foreign params tree can: one line, naming the first leaf that differs.
    plain, _ = models(num_layers=2)
    p = plain_params(plain)
    p["mlp_1"]["up"]["kernel"] = p["mlp_1"]["up"]["kernel"][:, :64]
    with pytest.raises(ValueError, match=r"mlp_1\['up'\]\['kernel'\] has shape \(32, 64\) "
                                         r"but mlp_0's is \(32, 128\): scan_layers needs"):
        scan_convert.stack(p)
