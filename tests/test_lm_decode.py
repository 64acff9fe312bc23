"""Specification of genjax.sampling.lm: the KV-cache decode, its filters and its checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from genjax.models import transformer
from genjax.sampling import filters, lm

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


def _filter_values(valid, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, penalty=1.0):
    """(filters.Sampling, filters.Switches) of these values, no stop tokens."""
    s = filters.Sampling(*(jnp.float32(v) for v in (temperature, top_p, min_p, penalty)),
                         valid_vocab=jnp.int32(valid), stop_ids_K=jnp.zeros(0, jnp.int32),
                         pad_id=jnp.int32(0))
    return s, filters.switches(temperature, top_k, top_p, min_p, penalty)


def test_greedy_takes_the_best_valid_id_when_a_padding_id_leads():
    """Padding rows of the head (ids >= valid_vocab) can hold the largest logit; greedy,
    with or without the repetition penalty, still never emits one."""
    logits = jnp.array([[0.5, 2.0, 1.0, 9.0, 8.0], [3.0, -1.0, 2.5, 7.0, 0.0]])
    seen = jnp.array([[False, True, False, False, False]] * 2)
    for penalty in (1.0, 3.0):  # 3: the seen id 1 falls below id 2 (2.0 / 3 < 1.0)
        s, sw = _filter_values(valid=3, temperature=0.0, penalty=penalty)
        token, _ = filters.sample_token_logp(None, logits, seen, s, sw)
        assert token.tolist() == ([1, 0] if penalty == 1.0 else [2, 0])


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


def test_min_p_never_emits_a_token_below_the_threshold(model_and_params):
    model, params = model_and_params
    temperature, min_p = 1.5, 0.3
    tokens = sample_many(model, params, temperature=temperature, min_p=min_p)
    logits = step_logits(model, params, PROMPTS[0], LENGTHS[0], tokens) / temperature
    probs = np.exp(logits - logits.max(-1, keepdims=True))  # relative to the top token
    emitted = np.take_along_axis(probs, tokens[..., None], axis=-1)[..., 0]
    assert (emitted >= min_p - 1e-5).all()
    assert ((probs >= min_p).sum(-1) > 1).any(), "threshold should leave a choice"
    assert ((probs < min_p) & (probs > 0.1)).any(), "threshold should exclude likely tokens"
    assert len(np.unique(tokens[:, 0])) > 1, "expected sampling, not argmax"


def test_min_p_and_repetition_penalty_masks_on_a_known_distribution():
    logits = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05]))
    kept = lambda masked: np.isfinite(np.asarray(masked)).tolist()  # noqa: E731
    assert kept(lm.min_p_mask(logits, 0.5)) == [True, True, False, False]   # 0.3 >= 0.25
    assert kept(lm.min_p_mask(logits, 0.0)) == [True] * 4
    # Constructed: token 0 leads but was seen; the penalty hands the argmax to token 1.
    x = jnp.array([2.0, 1.9, -1.0, -1.1])
    seen = jnp.array([True, False, True, False])
    penalized = np.asarray(lm.repetition_penalty(x, seen, 1.2))
    np.testing.assert_allclose(penalized, [2.0 / 1.2, 1.9, -1.2, -1.1], rtol=1e-6)
    assert int(np.argmax(penalized)) == 1
    assert int(np.argmax(np.asarray(lm.repetition_penalty(x[2:], seen[2:], 1.2)))) == 1


def _reference_distribution(logits, seen, valid, penalty, temperature, k, p, min_p):
    """The distribution a token is drawn from, in float64, token by token as the
    Hugging Face processors define it: padding ids out; CTRL penalty on seen ids;
    logits / temperature; the k largest; the smallest prefix of the sorted probabilities
    whose mass reaches p (the crossing token in); those with prob >= min_p * the top one."""
    x = np.array(logits, np.float64)
    x[valid:] = -np.inf
    for i in np.flatnonzero(seen):
        x[i] = x[i] / penalty if x[i] > 0 else x[i] * penalty
    x = x / temperature
    keep = np.isfinite(x)
    if 0 < k < len(x):
        keep &= x >= np.sort(x)[::-1][k - 1]
    probs = np.where(keep, np.exp(x - x.max()), 0.0)
    probs /= probs.sum()
    if p < 1:
        nucleus, mass = np.zeros_like(keep), 0.0
        for i in np.argsort(-probs, kind="stable"):
            nucleus[i] = True
            mass += probs[i]
            if mass >= p:
                break
        keep &= nucleus
        probs = np.where(keep, probs, 0.0) / np.where(keep, probs, 0.0).sum()
    if min_p > 0:
        keep &= probs >= min_p * probs.max()
    probs = np.where(keep, probs, 0.0)
    return probs / probs.sum()


@pytest.mark.parametrize("temperature, k, p, min_p, penalty", [
    (0.7, 0, 0.8, 0.0, 1.0), (1.6, 0, 0.8, 0.0, 1.0),     # top-p after temperature
    (0.5, 0, 1.0, 0.2, 1.0), (2.0, 0, 1.0, 0.2, 1.0),     # min-p after temperature
    (1.3, 12, 0.9, 0.05, 1.3), (0.8, 5, 0.6, 0.1, 1.5)])  # all of them, penalty first
def test_the_filter_pipeline_draws_from_the_huggingface_distribution(
        temperature, k, p, min_p, penalty):
    """Independent answer: the distribution token by token in float64 (above); the filters'
    kept set must be the same and their softmax equal within float32 rounding, for 64 rows
    of random logits (no ties) with padding ids and seen ids."""
    rng = np.random.default_rng(7)
    V, valid = 32, 28
    logits = rng.standard_normal((64, V)) * 2.0
    seen = rng.random((64, V)) < 0.25
    s, sw = _filter_values(valid, temperature, k, p, min_p, penalty)
    got = np.asarray(jax.nn.softmax(filters.filtered_logits(
        jnp.asarray(logits, jnp.float32), jnp.asarray(seen), s, sw), axis=-1), np.float64)
    want = np.stack([_reference_distribution(logits[b], seen[b], valid, penalty,
                                             temperature, k, p, min_p) for b in range(64)])
    np.testing.assert_array_equal(got > 0, want > 0)
    np.testing.assert_allclose(got, want, atol=2e-6)
    kept = (want > 0).sum(-1)
    assert kept.min() >= 1 and kept.max() < valid  # the filters cut, and something is left


def test_repetition_penalty_moves_greedy_off_repeated_tokens(model_and_params):
    model, params = model_and_params
    run = lambda penalty: np.asarray(lm.generate(  # noqa: E731
        model, params, PROMPTS, LENGTHS, rng=jax.random.PRNGKey(0), max_new_tokens=10,
        temperature=0.0, repetition_penalty=penalty))

    def repeats(tokens, b):  # emitted tokens already in the prompt or earlier output
        seen, n = set(PROMPTS[b, :LENGTHS[b]].tolist()), 0
        for t in tokens[b].tolist():
            n, seen = n + (t in seen), seen | {t}
        return n
    plain, penalized = run(1.0), run(50.0)
    assert sum(repeats(plain, b) for b in range(2)) > 0, "the case needs a repeating decode"
    assert sum(repeats(penalized, b) for b in range(2)) < sum(repeats(plain, b) for b in range(2))
    # Spec: each penalized token is the argmax of the penalized logits (full forward).
    seq = np.concatenate([PROMPTS[:1, :LENGTHS[0]], penalized[:1]], axis=1)
    logits = np.asarray(jax.jit(model.apply)({"params": params}, seq)[0], np.float64)
    for i, t in enumerate(penalized[0]):
        step = logits[LENGTHS[0] - 1 + i]
        seen = np.isin(np.arange(VOCAB), seq[0, :LENGTHS[0] + i])
        step = np.where(seen, np.where(step > 0, step / 50.0, step * 50.0), step)
        assert t == np.argmax(step), i


def test_stop_token_ends_its_row_pads_the_rest_and_records_the_length(model_and_params):
    model, params = model_and_params
    kw = dict(rng=jax.random.PRNGKey(0), max_new_tokens=10, temperature=0.0)
    plain = np.asarray(lm.generate(model, params, PROMPTS, LENGTHS, **kw))
    stop = int(plain[0, 3])
    pad = VOCAB - 1
    out = lm.decode(model, params, PROMPTS, LENGTHS, stop_token_ids=[stop], pad_id=pad, **kw)
    tokens, lengths, stopped = (np.asarray(x) for x in out)
    for b in range(2):
        hits = np.flatnonzero(plain[b] == stop)
        k = int(hits[0]) if hits.size else 10
        assert lengths[b] == k and stopped[b] == bool(hits.size)
        np.testing.assert_array_equal(tokens[b, :k], plain[b, :k])
        if hits.size:
            assert tokens[b, k] == stop and (tokens[b, k + 1:] == pad).all()
    assert stopped[0] and lengths[0] <= 3


def test_streamed_chunks_concatenate_to_one_decode(model_and_params):
    model, params = model_and_params
    for kw in (dict(temperature=0.0), dict(temperature=2.0, top_k=0)):
        kw.update(rng=jax.random.PRNGKey(3), max_new_tokens=10)
        whole = np.asarray(lm.generate(model, params, PROMPTS, LENGTHS, **kw))
        chunks = [np.asarray(c.tokens_BxN) for c in
                  lm.decode_stream(model, params, PROMPTS, LENGTHS, chunk_size=3, **kw)]
        assert [c.shape[1] for c in chunks] == [3, 3, 3, 1]
        np.testing.assert_array_equal(np.concatenate(chunks, axis=1), whole)


def test_a_wider_compiled_loop_draws_the_same_tokens_and_serves_every_shorter_length(
        model_and_params):
    model, params = model_and_params
    kw = dict(rng=jax.random.PRNGKey(7), temperature=2.0, stop_token_ids=[5])
    wide, compiled = {}, []
    for n in (3, 9):  # one width, two lengths: one compilation of the loop
        wide[n] = lm.decode_with_logprobs(model, params, PROMPTS, LENGTHS, max_new_tokens=n,
                                          width=9, **kw)
        compiled.append(lm.generate_chunk._cache_size())
    assert compiled == compiled[:1] * 2
    for n in (3, 9):
        plain = lm.decode_with_logprobs(model, params, PROMPTS, LENGTHS, max_new_tokens=n, **kw)
        assert wide[n][0].tokens_BxN.shape == (2, n)
        for a, b in zip(jax.tree.leaves(wide[n]), jax.tree.leaves(plain)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="width=2: must be >= max_new_tokens=3"):
        lm.decode(model, params, PROMPTS, LENGTHS, max_new_tokens=3, width=2, **kw)


def test_a_row_samples_the_same_tokens_whatever_batch_it_is_in(model_and_params):
    model, params = model_and_params
    kw = dict(rng=jax.random.PRNGKey(5), max_new_tokens=10, temperature=2.0)
    both = np.asarray(lm.generate(model, params, PROMPTS, LENGTHS, **kw))
    swapped = np.asarray(lm.generate(model, params, PROMPTS[::-1], LENGTHS[::-1],
                                     row_ids_B=[1, 0], **kw))
    np.testing.assert_array_equal(swapped[::-1], both)


def test_bad_sampling_parameters_raise_naming_the_field(model_and_params):
    model, params = model_and_params
    for field, value in [("temperature", -1.0), ("temperature", 1e-39), ("top_p", 0.0),
                         ("min_p", 1.0), ("repetition_penalty", 0.0), ("top_k", -1),
                         ("valid_vocab", 0), ("valid_vocab", VOCAB + 1)]:
        with pytest.raises(ValueError, match=field):
            lm.generate(model, params, PROMPTS, LENGTHS, rng=jax.random.PRNGKey(0),
                        max_new_tokens=2, **{field: value})
    with pytest.raises(ValueError, match="stop_token_ids"):
        lm.generate(model, params, PROMPTS, LENGTHS, rng=jax.random.PRNGKey(0),
                    max_new_tokens=2, stop_token_ids=[VOCAB])


@pytest.mark.parametrize("kw, branches, sorts", [
    (dict(temperature=0.0), 0, 0),                                  # argmax only
    (dict(temperature=0.7, top_k=5, min_p=0.1), 0, 0),              # top-k is not a sort
    (dict(temperature=0.7, top_p=0.9, repetition_penalty=1.2), 0, 1)])
def test_the_per_token_loop_holds_only_the_filters_switched_on_and_no_branch(
        model_and_params, kw, branches, sorts):
    # On a GPU each lax.cond in the loop is a device-to-host sync that also splits the
    # body's CUDA graph; a greedy decode has no reason to draw, sort or branch.
    model, params = model_and_params
    args = (jnp.asarray(PROMPTS), jnp.asarray(LENGTHS), jax.random.PRNGKey(0), jnp.arange(2))
    state = lm.prefill(model, params, *args, num_slots=MAX_LEN)
    s = lm._sampling(model, **{**dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
                                      repetition_penalty=1.0), **kw},
                     stop_token_ids=(), pad_id=0, valid_vocab=None)
    text = lm.generate_chunk.lower(model, params, state, s, jnp.int32(4), chunk_size=4,
                                   switches=lm.switches(**kw)).as_text()
    assert text.count("stablehlo.case") + text.count("stablehlo.if") == branches
    assert text.count("stablehlo.sort") == sorts
    assert ("threefry" in text or "random_bits" in text) == (kw["temperature"] > 0)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_weights_cast_once_to_bfloat16_give_the_bfloat16_models_own_logits_bit_for_bit(
        scan_layers):
    # The decode loop reads bf16 copies of the matrices instead of converting every f32
    # weight per token; norm scales (2-d when scanned) and biases stay f32, as flax uses them.
    model = tiny(dtype=jnp.bfloat16, use_bias=True, scan_layers=scan_layers)
    params = jax.tree.map(jnp.asarray, random_params(model))
    cast = lm._cast_matrices(model, params)
    dtypes = {str(x.dtype) for x in jax.tree.leaves(cast)}
    assert dtypes == {"bfloat16", "float32"}
    apply = jax.jit(lambda p: model.apply({"params": p}, jnp.asarray(PROMPTS)))
    np.testing.assert_array_equal(np.asarray(apply(cast)), np.asarray(apply(params)))
