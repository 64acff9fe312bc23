"""Specification of genjax.sampling.lm: the KV-cache decode, its filters and its checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from genjax.models import transformer
from genjax.sampling import lm

VOCAB, MAX_LEN = 40, 16


def tiny(**overrides) -> transformer.Transformer:
    return transformer.Transformer(**{"vocab_size": VOCAB, "max_len": MAX_LEN,
                                      **transformer.SIZES["tiny"], **overrides})


def random_params(model, seed=0):
    """Unit-scale random weights (not the small init), so greedy decodes are not constant."""
    shapes = jax.eval_shape(lambda: nn.meta.unbox(model.init(
        jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32)))["params"])
    rng = np.random.default_rng(seed)  # numpy: no compiles for a dozen shapes

    def draw(path, x):
        noise = rng.standard_normal(x.shape).astype(np.float32)
        if x.ndim == 1:
            return jnp.asarray(1.0 + 0.1 * noise)  # norm scales
        return jnp.asarray(noise * (0.3 if "embed" in jax.tree_util.keystr(path) else 0.2))
    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def model_and_params():
    model = tiny()
    return model, random_params(model)


# Right-padded prompts of lengths 6 and 2; the padding is arbitrary tokens on purpose.
PROMPTS = np.array([[3, 5, 7, 9, 11, 13], [2, 4, 17, 33, 8, 1]], np.int32)
LENGTHS = np.array([6, 2], np.int32)


@pytest.mark.parametrize("pos", ["learned", "rotary"])
def test_greedy_with_kv_cache_equals_greedy_by_full_reforward(pos):
    model = tiny(pos=pos)
    params = random_params(model)
    cached = lm.generate(model, params, PROMPTS, LENGTHS, rng=jax.random.PRNGKey(0),
                         max_new_tokens=10, temperature=0.0)
    reference = lm.generate_reference(model, params, PROMPTS, LENGTHS, max_new_tokens=10)
    assert cached.shape == (2, 10) and cached.dtype == jnp.int32
    np.testing.assert_array_equal(cached, reference)
    assert len(np.unique(np.asarray(reference))) > 2, "degenerate decode proves little"


def step_logits(model, params, prompt, length, tokens_BxN):
    """float64 logits [B, N, V] the model gave each generated token (full forward)."""
    B, N = tokens_BxN.shape
    seq = jnp.concatenate([jnp.tile(jnp.asarray(prompt[:length]), (B, 1)), tokens_BxN], axis=1)
    logits = jax.jit(model.apply)({"params": params}, seq)  # one compile beats op-by-op
    return np.asarray(logits[:, length - 1:length - 1 + N], np.float64)


def sample_many(model, params, seed=1, **kwargs):
    """256 samples of 3 tokens continuing PROMPTS[0]."""
    prompts = np.tile(PROMPTS[:1], (256, 1))
    lengths = np.full((256,), LENGTHS[0], np.int32)
    return np.asarray(lm.generate(model, params, prompts, lengths, rng=jax.random.PRNGKey(seed),
                                  max_new_tokens=3, **kwargs))


def test_top_k_never_emits_a_token_outside_the_top_k(model_and_params):
    model, params = model_and_params
    tokens = sample_many(model, params, temperature=2.0, top_k=5)
    logits = step_logits(model, params, PROMPTS[0], LENGTHS[0], tokens)
    top5 = np.argsort(-logits, axis=-1)[..., :5]
    assert (top5 == tokens[..., None]).any(-1).all()
    assert len(np.unique(tokens[:, 0])) > 1, "expected sampling, not argmax"


def test_top_p_never_emits_a_token_outside_the_nucleus(model_and_params):
    model, params = model_and_params
    temperature, p = 1.5, 0.6
    tokens = sample_many(model, params, temperature=temperature, top_p=p)
    logits = step_logits(model, params, PROMPTS[0], LENGTHS[0], tokens) / temperature
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    order = np.argsort(-probs, axis=-1)
    sorted_probs = np.take_along_axis(probs, order, axis=-1)
    mass_before = np.cumsum(sorted_probs, axis=-1) - sorted_probs
    rank = np.argsort(order, axis=-1)  # rank of each vocabulary id
    emitted_rank = np.take_along_axis(rank, tokens[..., None], axis=-1)[..., 0]
    emitted_mass_before = np.take_along_axis(mass_before, emitted_rank[..., None], -1)[..., 0]
    assert (emitted_mass_before < p + 1e-5).all()
    assert len(np.unique(tokens[:, 0])) > 1, "expected sampling, not argmax"


def test_top_k_and_top_p_masks_on_a_known_distribution():
    logits = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05]))
    kept = lambda masked: np.isfinite(np.asarray(masked)).tolist()  # noqa: E731
    assert kept(lm.top_k_mask(logits, 2)) == [True, True, False, False]
    assert kept(lm.top_k_mask(logits, 0)) == [True] * 4
    assert kept(lm.top_p_mask(logits, 0.7)) == [True, True, False, False]
    assert kept(lm.top_p_mask(logits, 0.9)) == [True, True, True, False]
    assert kept(lm.top_p_mask(logits, 0.1)) == [True, False, False, False]  # top token always
    assert kept(lm.top_p_mask(logits, 1.0)) == [True] * 4
    np.testing.assert_array_equal(lm.top_p_mask(logits, 0.7)[:2], logits[:2])


def test_ids_at_or_above_valid_vocab_are_never_sampled(model_and_params):
    model, params = model_and_params
    tokens = sample_many(model, params, temperature=100.0, valid_vocab=30)
    assert tokens.max() < 30
    assert tokens.max() > 20, "near-uniform sampling should reach the top valid ids"


def test_same_rng_same_tokens_and_different_rng_different_tokens(model_and_params):
    model, params = model_and_params
    run = lambda seed: sample_many(model, params, seed, temperature=2.0, top_k=5)  # noqa: E731
    np.testing.assert_array_equal(run(0), run(0))
    assert (run(0) != run(1)).any()


def test_request_longer_than_the_context_raises_naming_the_numbers(model_and_params):
    model, params = model_and_params
    with pytest.raises(ValueError, match=r"prompt length 6 \+ max_new_tokens 11 = 17 .*16"):
        lm.generate(model, params, PROMPTS, LENGTHS, rng=jax.random.PRNGKey(0),
                    max_new_tokens=11)
    lm.generate(model, params, PROMPTS, LENGTHS, rng=jax.random.PRNGKey(0),
                max_new_tokens=10)  # exactly fills the context: fine
