"""Specification of genjax.models.transformer: shapes, causality, switches, names, cache."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from genjax.models import transformer
from genjax.models.transformer import Transformer, init_cache

VOCAB, MAX_LEN = 48, 8
B = 2  # every test uses tokens of shape [B, MAX_LEN]: op-by-op compiles are shared


def tiny(**overrides) -> Transformer:
    return Transformer(**{"vocab_size": VOCAB, "max_len": MAX_LEN, **transformer.SIZES["tiny"],
                          **overrides})


def init_params(model: Transformer):
    return nn.meta.unbox(model.init(jax.random.PRNGKey(0), random_tokens()))["params"]


def random_tokens(seed=0):
    return jax.random.randint(jax.random.PRNGKey(seed), (B, MAX_LEN), 0, VOCAB, jnp.int32)


def test_logits_are_float32_with_one_row_per_token():
    model = tiny()
    logits = model.apply({"params": init_params(model)}, random_tokens())
    assert logits.shape == (B, MAX_LEN, VOCAB)
    assert logits.dtype == jnp.float32


@pytest.mark.parametrize("pos", ["learned", "rotary"])
def test_changing_a_future_token_leaves_earlier_logits_unchanged(pos):
    model = tiny(pos=pos)
    params = init_params(model)
    tokens = random_tokens()
    changed = tokens.at[:, 5].set((tokens[:, 5] + 1) % VOCAB)
    a = model.apply({"params": params}, tokens)
    b = model.apply({"params": params}, changed)
    np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert not np.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize("norm,pos,activation,tie", list(itertools.product(
    ["layernorm", "rmsnorm"], ["learned", "rotary"], ["gelu", "swiglu"], [True, False])))
def test_every_switch_combination_runs(norm, pos, activation, tie):
    model = tiny(num_layers=1, norm=norm, pos=pos, activation=activation, tie_embeddings=tie)
    logits = model.apply({"params": init_params(model)}, random_tokens())
    assert logits.shape == (B, MAX_LEN, VOCAB)
    assert np.isfinite(logits).all()


@pytest.mark.parametrize("attr,value", [("norm", "batchnorm"), ("pos", "alibi"),
                                        ("activation", "relu"), ("attention_impl", "flash")])
def test_unknown_switch_raises_naming_the_attribute_and_choices(attr, value):
    with pytest.raises(ValueError, match=rf"{attr}=.*{value}.*choose one of"):
        tiny(**{attr: value})


def test_params_carry_logical_axis_names():
    model = tiny(tie_embeddings=False, use_bias=True, pos="learned")
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), random_tokens())
    spec = jax.tree_util.tree_map(tuple, nn.get_partition_spec(boxed)["params"],
                                  is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert spec["token_embed"] == ("vocab", "embed")
    assert spec["pos_embed"] == (None, "embed")
    assert spec["lm_head"] == ("embed", "vocab")
    for name in ("query", "key", "value"):
        assert spec["attn_0"][name]["kernel"] == ("embed", "heads", "kv")
    assert spec["attn_0"]["out"]["kernel"] == ("heads", "kv", "embed")
    assert spec["mlp_0"]["up"]["kernel"] == ("embed", "mlp")
    assert spec["mlp_0"]["down"]["kernel"] == ("mlp", "embed")
    assert spec["ln_attn_0"]["scale"] == ("embed",)
    assert spec["ln_attn_0"]["bias"] == ("embed",)
    assert spec["ln_final"]["scale"] == ("embed",)
    unnamed = [jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_leaves_with_path(
        boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
        if not isinstance(x, nn.Partitioned)]
    assert unnamed == [], f"params without logical names: {unnamed}"


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = tiny(dtype=jnp.bfloat16)
    params = jax.eval_shape(lambda: init_params(model))  # dtypes only: traced, not compiled
    assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float32)}
    logits = jax.eval_shape(model.apply, {"params": params}, random_tokens())
    assert logits.dtype == jnp.float32


def test_dropout_only_in_training_and_driven_by_the_dropout_rng():
    model = tiny(dropout=0.5)
    params, tokens = init_params(model), random_tokens()
    apply = lambda train, seed: model.apply(  # noqa: E731
        {"params": params}, tokens, train=train, rngs={"dropout": jax.random.PRNGKey(seed)})
    np.testing.assert_array_equal(apply(False, 0), model.apply({"params": params}, tokens))
    np.testing.assert_array_equal(apply(True, 0), apply(True, 0))
    assert not np.allclose(apply(True, 0), apply(True, 1))


@pytest.mark.parametrize("pos", ["learned", "rotary"])
def test_cached_forward_in_chunks_equals_uncached_forward(pos):
    model = tiny(pos=pos)
    params = init_params(model)
    tokens = random_tokens()
    full = model.apply({"params": params}, tokens)
    apply = jax.jit(model.apply)  # one compile per chunk size beats op-by-op here
    cache, start, chunks = init_cache(model, batch_size=B), 0, []
    for size in (3, 1, 4):
        positions = jnp.broadcast_to(jnp.arange(start, start + size), (B, size))
        logits, cache = apply({"params": params}, tokens[:, start:start + size],
                              positions_BxT=positions, cache=cache)
        chunks.append(logits)
        start += size
    np.testing.assert_allclose(jnp.concatenate(chunks, axis=1), full, atol=1e-5)
    assert len(cache) == model.num_layers
    assert cache[0]["k"].shape == (B, MAX_LEN, 2, 16)  # [B, S, N, H]


def count_params(model: Transformer) -> int:
    shapes = jax.eval_shape(lambda: init_params(model))
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))


def test_gpt2_124m_row_has_gpt2_small_parameter_count():
    # 124,439,808 = Hugging Face `gpt2` (tied head, biases, learned positions, vocab 50257).
    model = Transformer(vocab_size=50257, max_len=1024, use_bias=True,
                        **transformer.SIZES["gpt2_124m"])
    assert count_params(model) == 124_439_808


def test_llama_parts_are_their_closed_forms():
    """The LLaMA path against closed forms (GPT-2's is pinned by Hugging Face fixtures):
    rotary rotates dims (i, i + H/2) by p * 10000^(-2i/H) (GPT-NeoX / HF layout); SwiGLU is
    down(silu(gate x) * up x); RMSNorm is x / sqrt(mean(x^2) + eps) (no mean subtracted;
    inputs of scale ~1e-3, where eps 1e-5 vs 1e-6 and inside vs outside the sqrt differ)."""
    H, half = 8, 4
    positions = np.array([[0, 1, 7, 100]])
    theta = 10000.0 ** (-2 * np.arange(half) / H)
    for i in range(half):
        for j, (first, second) in ((i, (np.cos, np.sin)), (i + half, (lambda a: -np.sin(a),
                                                                       np.cos))):
            x = np.zeros((1, 4, 1, H), np.float32)
            x[..., j] = 1.0
            got = np.asarray(transformer.rotary(jnp.asarray(x), jnp.asarray(positions)))[0, :, 0]
            angle = positions[0] * theta[i]
            want = np.zeros((4, H))
            want[:, i], want[:, i + half] = first(angle), second(angle)
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"dim {j}")

    x = np.linspace(-3, 3, 8, dtype=np.float32)
    eye = np.eye(8, dtype=np.float32)
    mlp = transformer.Mlp(8, "swiglu", use_bias=False, dtype=jnp.float32, out_std=0.02)
    params = {"gate": {"kernel": eye}, "up": {"kernel": 2 * eye}, "down": {"kernel": eye}}
    silu = x / (1 + np.exp(-x))
    np.testing.assert_allclose(mlp.apply({"params": params}, x[None, None])[0, 0],
                               silu * 2 * x, rtol=1e-5, atol=1e-6)

    V, D = 5, 8
    model = Transformer(vocab_size=V, num_layers=1, num_heads=2, embed_dim=D, max_len=4,
                        norm="rmsnorm", pos="rotary", activation="swiglu", norm_eps=1e-5)
    params = jax.tree_util.tree_map(np.zeros_like, nn.meta.unbox(model.init(
        jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32)))["params"])  # blocks add 0
    rng = np.random.default_rng(0)
    params["token_embed"] = (1e-3 * (rng.standard_normal((V, D)) + 0.7)).astype(np.float32)
    params["ln_final"] = {"scale": np.ones(D, np.float32)}
    if "head" in params:
        params["head"]["kernel"] = params["token_embed"].T.copy()
    tokens = np.array([[0, 1, 2, 3]])
    h = params["token_embed"][tokens[0]].astype(np.float64)
    for eps in (1e-5, 1e-6):
        normed = h / np.sqrt((h ** 2).mean(-1, keepdims=True) + eps)
        got = model.clone(norm_eps=eps).apply({"params": params}, tokens)[0]
        np.testing.assert_allclose(got, normed @ params["token_embed"].T, rtol=1e-4,
                                   atol=1e-7, err_msg=str(eps))
