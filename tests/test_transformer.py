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
