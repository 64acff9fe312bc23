"""Specification of text-to-image: captions and their held-out split, the caption
tokenizer's safety, the text-conditional U-Net trained through the shared loop and sampled
through the CLI code, guidance, image best-of-n and the image filter.

Keys in the model tests are `rbg` keys (see tests/test_image_families.py: threefry draws
compile for seconds on CPU).
"""
import json
import os
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from configs import t2i_fmnist
from genjax import diffusion, families, sharding
from genjax.errors import UserError
from genjax.data import captions
from genjax.data.caption_tokenizer import PAD, UNK, CaptionTokenizer
from genjax.sampling import best_of_n, postprocess

TOK = CaptionTokenizer.from_captions(16)
CLASSES = range(len(captions.FASHION_MNIST_CLASSES))


# ------------------------------------------------------------------ captions
def test_captions_are_a_pure_function_of_seed_index_and_step():
    labels, index = np.arange(64) % 10, np.arange(64) + 1000
    first = captions.captions(labels, index, 7, seed=3)
    assert first == captions.captions(labels, index, 7, seed=3)  # a resumed run redraws them
    assert first[:5] == captions.captions(labels[:5], index[:5], 7, seed=3)  # per example
    for other in (captions.captions(labels, index, 8, seed=3),   # next step
                  captions.captions(labels, index, 7, seed=4)):  # other seed
        assert sum(a != b for a, b in zip(first, other)) > 48
    for y, text in zip(labels, first):
        assert text in captions.phrasings(int(y), "train")
    seen = set(captions.captions(np.zeros(4000, int), np.arange(4000), 0, seed=0))
    assert seen == set(captions.phrasings(0, "train"))  # every phrasing gets drawn


def test_heldout_phrasings_are_new_arrangements_of_trained_words():
    train = {t for c in CLASSES for t in captions.phrasings(c, "train")}
    heldout = {t for c in CLASSES for t in captions.phrasings(c, "heldout")}
    assert train and heldout and not train & heldout
    assert not set(captions.TRAIN_TEMPLATES) & set(captions.HELDOUT_TEMPLATES)
    for name, syn in captions.SYNONYMS.items():
        assert not set(syn["train"]) & set(syn["heldout"]), name
        for single, plural in syn["heldout"]:  # never inside a training caption
            assert not any(f" {single} " in f" {t} " or f" {plural} " in f" {t} "
                           for t in train), single
    train_words = {w for t in train for w in captions.words(t)}
    for t in heldout:  # so the held-out test measures composition, not unseen words
        assert set(captions.words(t)) <= train_words, t
        assert UNK not in TOK.encode(t)
    ids = captions.caption_ids(np.full(500, 5), np.arange(500), 1, seed=0, split="heldout")
    assert ids.max() < len(captions.phrasings(5, "heldout"))


@pytest.mark.parametrize("prompt,label", [
    ("a pair of sandals", 5), ("A T-Shirt!", 0), ("long sleeve shirt", 6),
    ("running shoes on white", 7), ("a shirt and a bag", None), ("a red car", None)])
def test_prompt_class_reads_synonyms_as_whole_words(prompt, label):
    assert captions.prompt_class(prompt) == label


# ------------------------------------------------------------------ tokenizer
@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_no_text_encodes_to_a_special_id_other_than_unk(text):
    n = len(captions.words(text))
    if not 1 <= n <= TOK.max_words:
        with pytest.raises(UserError):
            TOK.encode(text)
        return
    ids = TOK.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (TOK.max_words,)
    assert (ids[:n] != PAD).all() and (ids[n:] == PAD).all()  # PAD only pads
    assert ((ids[:n] == UNK) | (ids[:n] >= 2)).all()


def test_markup_and_control_characters_cannot_inject_tokens():
    for text in ("<pad> <unk> sandal", "\x00sandal\x1b[0m<|endoftext|>", "[PAD] sandal"):
        ids = TOK.encode(text)
        words = captions.words(text)
        assert list(ids[:len(words)]).count(TOK.encode("sandal")[0]) == 1
        assert all(i == UNK for w, i in zip(words, ids) if w != "sandal")
    assert TOK.unknown_words("a pair of sandlas") == ["sandlas"]
    assert TOK.decode(TOK.encode("A Pair of SANDALS.")) == "a pair of sandals"
    assert CaptionTokenizer.from_json(json.loads(json.dumps(TOK.to_json()))) == TOK


@pytest.mark.parametrize("prompt,needle", [
    ("", "empty"), ("  ...  \n", "empty"), (" ".join(["sandal"] * 17), "limit is 16")])
def test_empty_and_over_long_prompts_are_user_errors(prompt, needle):
    with pytest.raises(UserError, match=needle):
        TOK.encode(prompt)


# ------------------------------------------------------------------ model and guidance
def tiny_config():
    """The tiny preset, resolved as the data would (1 channel, the caption vocabulary)."""
    c = t2i_fmnist.get_config("tiny")
    c.unlock()
    c.data.channels, c.model.num_classes, c.model.text.vocab_size = 1, 10, TOK.vocab_size
    c.lock()
    return c


@pytest.fixture(scope="module")
def noisy_model():
    """Tiny text U-Net with every parameter drawn from N(0, 0.2^2) (zero-initialised layers
    included), so outputs depend on the caption from the start. Shapes from eval_shape: no
    init to compile."""
    c = tiny_config()
    mod = families.get("diffusion")
    model = mod.make_model(c)
    batch = mod.example_batch(c, 2)
    shapes = jax.eval_shape(lambda k: sharding.unbox(mod.init_variables(model, k, batch, c)),
                            jax.random.key(0, impl="rbg"))["params"]
    rs = np.random.RandomState(0)
    params = jax.tree_util.tree_map(lambda x: rs.normal(0, 0.2, x.shape).astype(np.float32),
                                    shapes)
    return c, mod, model, params


def test_guidance_0_ignores_the_prompt_and_guidance_above_1_follows_it(noisy_model):
    c, mod, model, params = noisy_model
    sandal, bag = TOK.encode_batch(["a pair of sandals"] * 2), TOK.encode_batch(["a bag"] * 2)
    x = jax.random.normal(jax.random.key(2, impl="rbg"), (2, 32, 32, 1))
    t = jnp.array([10, 50])

    @jax.jit
    def outs(params):
        apply = lambda x, t, y: model.apply({"params": params}, x, t, y)  # noqa: E731
        return [diffusion.guided(apply, x, t, y, g, 0) for g in (0.0, 4.0) for y in (sandal, bag)]
    u_sandal, u_bag, g_sandal, g_bag = outs(params)
    np.testing.assert_allclose(u_sandal, u_bag, atol=1e-6)  # the null caption for both
    assert float(jnp.abs(g_sandal - g_bag).max()) > 1e-4  # float32 noise: ~1e-7
    assert float(jnp.abs(g_sandal - u_sandal).max()) > 1e-4

    rng = jax.random.PRNGKey(0)
    imgs = {g: mod.sample_images(model, params, c, rng, 2, guidance=g, steps=2,
                                 prompt=sandal[0]) for g in (0.0, 4.0)}
    assert imgs[0.0].shape == (2, 32, 32, 1)
    assert float(jnp.abs(imgs[0.0] - imgs[4.0]).max()) > 1e-4
    with pytest.raises(ValueError, match="prompt tokens, not a label"):
        mod.sample_labels(c, 2, label=3)


# ------------------------------------------------------------------ best-of-n and filter
def brightness_probs(images_NxHxWxC):
    """Stand-in classifier: class 1 ('bright') with probability sigmoid(8 * mean pixel)."""
    p = jax.nn.sigmoid(8 * np.asarray(images_NxHxWxC).mean(axis=(1, 2, 3)))
    return np.stack([1 - p, p], axis=-1)


def test_best_of_n_images_ranks_by_the_score_and_8_beats_1():
    def sample_fn(n, seed):  # prefix-consistent: the n = 1 draw is the first of the n = 8
        return np.random.default_rng(seed).normal(0, 0.2, (n, 4, 4, 1))
    score = best_of_n.class_confidence(brightness_probs, target=1)
    ranked = best_of_n.best_of_n_images(sample_fn, score, 8, seed=0)
    scores = [s for _, s in ranked]
    assert len(ranked) == 8 and scores == sorted(scores, reverse=True)
    np.testing.assert_allclose(score([im for im, _ in ranked]), scores)
    best = {n: [best_of_n.best_of_n_images(sample_fn, score, n, seed=s)[0][1]
                for s in range(20)] for n in (1, 8)}
    assert all(b8 >= b1 for b1, b8 in zip(best[1], best[8]))
    assert np.mean(best[8]) > np.mean(best[1]) + 0.1


def test_image_filter_rejects_unsure_samples_with_a_reason():
    hook = postprocess.image_confidence_filter(lambda im: brightness_probs(im[None])[0],
                                               threshold=0.7, class_names=["dark", "bright"],
                                               target=1)
    bright, dark = postprocess.run_hooks([np.full((4, 4, 1), 0.5), np.full((4, 4, 1), -0.5)],
                                         [hook], key="image")
    assert not bright["rejected"] and bright["confidence"] > 0.7
    assert dark["rejected"] and dark["image"] is None
    assert "prompted class 'bright'" in dark["reason"] and "top: 'dark'" in dark["reason"]


# ------------------------------------------------------------------ train + CLI
@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """The tiny preset trained 3 steps on Fashion-MNIST by genjax.train, in process;
    checkpoints at steps 2 and 3. No warmup: step 1 moves the zero-initialised output conv,
    step 2 the zero-initialised residual and cross-attention outputs, so from step 3 on
    the caption's gradient reaches the text encoder."""
    from genjax import train
    workdir = str(tmp_path_factory.mktemp("t2i_tiny"))
    c = t2i_fmnist.get_config("tiny")
    c.total_steps, c.ckpt_every_steps, c.optim.warmup_steps = 3, 2, 0
    c.eval_every_steps, c.eval_batches, c.final_eval_batches = 0, 1, 1
    c.sample.grid_samples, c.log_every_steps = 0, 1
    c.mesh.data = 1  # one device: 8 fake ones compile and run slower on a CPU
    final = train.train(c, workdir)
    return workdir, final


@pytest.mark.slow  # ~30 s: compiles the U-Net's gradient and two samplers
def test_trains_jointly_through_the_shared_loop_and_samples_from_a_prompt(trained, tmp_path,
                                                                          capsys):
    from genjax import inference, sample
    workdir, final = trained
    assert np.isfinite(final["loss"])
    first, last = (inference.load(workdir, which="raw", step=s) for s in (2, 3))
    enc = lambda p: jax.tree_util.tree_leaves(p["text_encoder"])  # noqa: E731
    assert any(float(jnp.abs(a - b).max()) > 0 for a, b in zip(enc(first.params),
                                                                enc(last.params)))
    meta = last.meta["data"]
    assert meta["eval_captions"] == "heldout" and meta["caption_tokenizer"]["max_words"] == 16

    flags = dict(workdir=workdir, prompt="a pair of sandals", label=None, num_samples=4,
                 guidance=4.0, steps=2, seed=0, best_of=1, min_confidence=0.0,
                 out=str(tmp_path / "grid.png"))
    ten_classes = lambda x: brightness_probs(x)[:, [0] * 5 + [1] * 5] / 5  # noqa: E731
    run = lambda **kw: sample.sample_images(last, SimpleNamespace(**{**flags, **kw}),  # noqa
                                            probs_fn=ten_classes)
    assert run() == flags["out"] and os.path.getsize(flags["out"]) > 0
    assert "wrote 4 samples ('a pair of sandals'" in capsys.readouterr().out

    # best 2 of 4 by p(sandal) under the stand-in classifier, then the filter
    run(num_samples=2, best_of=4, min_confidence=0.099)
    out = capsys.readouterr().out
    with open(flags["out"] + ".json") as f:
        report = json.load(f)
    assert report["target_class"] == 5 and report["best_of"] == 4
    scores = [s["score"] for s in report["samples"]]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)
    for s in report["samples"]:
        assert s["rejected"] == (s["confidence"] < 0.099)
        assert (s["rejected"] and "unsure" in s["reason"]) or not s["rejected"]
    assert out.count("[filtered]") == sum(s["rejected"] for s in report["samples"])

    for kw, needle in [(dict(label="sandal", prompt=None), "text-conditional"),
                       (dict(prompt=""), "empty prompt"),
                       (dict(prompt="sandal " * 17), "limit is 16"),
                       (dict(prompt="a red car", best_of=8), "name exactly one garment"),
                       (dict(best_of=2), "--best_of=2")]:
        with pytest.raises(UserError, match=needle):
            run(**kw)
