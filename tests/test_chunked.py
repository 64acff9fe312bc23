"""Chunked attention and chunked cross-entropy equal the plain versions, values and grads,
with the causal mask and key padding; neither holds a full [T, T] / [B, T, V] array."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from genjax.families import lm as lm_family
from genjax.models import chunked_attention, chunked_logits
from tests.families import tiny_config

B, T, N, H = 2, 16, 2, 8


def qkv(seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 4)
    return [jax.random.normal(k, (B, T, N, H)) for k in ks]


def plain_attention(q, k, v, valid_BxT):
    mask = jnp.tril(jnp.ones((T, T), bool))[None, None] & valid_BxT[:, None, None, :]
    return jax.nn.dot_product_attention(q, k, v, mask=mask)


@pytest.mark.parametrize("chunk", [4, 16])
def test_chunked_attention_equals_plain_with_causal_and_padding_masks(chunk):
    q, k, v, w = qkv()
    valid = jnp.arange(T)[None, :] < jnp.array([[T], [11]])  # row 1: 5 padding keys
    chunked = lambda q, k, v: chunked_attention.attention(q, k, v, chunk=chunk,  # noqa: E731
                                                          valid_BxT=valid)
    plain = lambda q, k, v: plain_attention(q, k, v, valid)  # noqa: E731
    np.testing.assert_allclose(chunked(q, k, v), plain(q, k, v), rtol=1e-5, atol=1e-6)
    g_chunked = jax.grad(lambda *a: jnp.sum(chunked(*a) * w), (0, 1, 2))(q, k, v)
    g_plain = jax.grad(lambda *a: jnp.sum(plain(*a) * w), (0, 1, 2))(q, k, v)
    for a, b in zip(g_chunked, g_plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # padding keys get no gradient; the future does not leak into the past
    assert float(jnp.abs(g_chunked[1][1, 11:]).max()) == 0.0
    early = jax.grad(lambda k: jnp.sum(chunked(q, k, v)[:, :4]))(k)
    assert float(jnp.abs(early[:, 4:]).max()) == 0.0


def test_chunked_attention_never_builds_a_TxT_score_matrix():
    q, k, v, _ = qkv()
    f = jax.grad(lambda q: jnp.sum(chunked_attention.attention(q, k, v, chunk=4)))
    shapes = re.findall(r"f32\[([\d,]+)\]", str(jax.make_jaxpr(f)(q)))
    assert f"{B},{N},4,{T}" in shapes and f"{B},{N},{T},{T}" not in shapes


def _values_and_grads(attend, q, k, v, w):
    out = attend(q, k, v)
    return out, jax.grad(lambda *a: jnp.sum(attend(*a) * w), (0, 1, 2))(q, k, v)


@pytest.mark.parametrize("chunk", [5, 3])
def test_a_chunk_that_does_not_divide_the_length_pads_it_with_the_same_result(chunk):
    """T = 16 in blocks of 5 or 3 (an RL rollout's max_len - 1 tokens is odd)."""
    q, k, v, w = qkv()
    valid = jnp.arange(T)[None, :] < jnp.array([[T], [11]])
    got = _values_and_grads(lambda *a: chunked_attention.attention(
        *a, chunk=chunk, valid_BxT=valid), q, k, v, w)
    want = _values_and_grads(lambda *a: plain_attention(*a, valid), q, k, v, w)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="attention_chunk=0 must be > 0"):
        chunked_attention.attention(q, k, v, chunk=0)


@pytest.mark.parametrize("chunk", [4, 5])
def test_a_query_with_no_valid_key_averages_every_value_as_xla_does(chunk):
    """Left padding: row 1's first 3 queries see only padding keys. XLA's softmax over
    equal masked scores is uniform: the output is the mean of all T values (not of the
    padding a chunk of 5 adds), and q and k get no gradient from such a row (its scores
    are constants)."""
    q, k, v, w = qkv(1)
    valid = jnp.arange(T)[None, :] >= jnp.array([[0], [3]])
    got = _values_and_grads(lambda *a: chunked_attention.attention(
        *a, chunk=chunk, valid_BxT=valid), q, k, v, w)
    want = _values_and_grads(lambda *a: plain_attention(*a, valid), q, k, v, w)
    np.testing.assert_allclose(got[0][1, :3], np.broadcast_to(v[1].mean(0), (3, N, H)),
                               rtol=1e-5, atol=1e-6)  # the mean, computed apart
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_chunked_cross_entropy_equals_plain_values_and_grads():
    D, V = 8, 40
    x = jax.random.normal(jax.random.PRNGKey(0), (B, T, D))
    head = jax.random.normal(jax.random.PRNGKey(1), (D, V))
    targets = jax.random.randint(jax.random.PRNGKey(2), (B, T), 0, V)
    mask = (jnp.arange(T)[None] < jnp.array([[T], [9]])).astype(jnp.float32)

    def plain(x, head):
        nll, logz = lm_family.token_nll(jnp.einsum("btd,dv->btv", x, head), targets)
        return jnp.sum(nll * mask) + 1e-2 * jnp.sum(logz ** 2 * mask), nll

    def chunked(x, head):
        nll, logz, _ = chunked_logits.token_nll(x, head, targets, chunk=4)
        return jnp.sum(nll * mask) + 1e-2 * jnp.sum(logz ** 2 * mask), nll

    (l0, nll0), g0 = jax.value_and_grad(plain, (0, 1), has_aux=True)(x, head)
    (l1, nll1), g1 = jax.value_and_grad(chunked, (0, 1), has_aux=True)(x, head)
    np.testing.assert_allclose(nll1, nll0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    for a, b in zip(g1, g0):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(g1[0][1, 9:]).max()) == 0.0  # masked positions: no gradient


def test_lm_loss_with_chunked_attention_and_cross_entropy_equals_the_plain_loss():
    plain_cfg = tiny_config("lm")
    chunked_cfg = tiny_config("lm", **{"model.attention_impl": "chunked",
                                       "model.attention_chunk": 8, "model.loss_chunk": 8})
    model0, model1 = lm_family.make_model(plain_cfg), lm_family.make_model(chunked_cfg)
    toks = jax.random.randint(jax.random.PRNGKey(0), (4, plain_cfg.model.max_len + 1), 0, 64)
    params = nn.meta.unbox(model0.init(jax.random.PRNGKey(1), toks[:, :-1])["params"])

    def run(model, cfg):
        f = lambda p: lm_family.loss_fn(p, {}, {"tokens": toks}, jax.random.PRNGKey(2),  # noqa
                                        model=model, config=cfg)
        return jax.value_and_grad(f, has_aux=True)(params)

    (l0, (m0, _)), g0 = run(model0, plain_cfg)
    (l1, (m1, _)), g1 = run(model1, chunked_cfg)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    assert float(m1["accuracy"]) == float(m0["accuracy"])
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
