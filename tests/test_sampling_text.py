"""Specification of the text layer: prompts, batches, stops, streaming, best-of-n, filters.

One 1-layer model (context 16) and prompts of <= 8 characters, so every decode shares a
few compiled programs (prompts pad to 8 tokens; 8 new tokens fill the context).
"""
import dataclasses

import jax
import numpy as np
import pytest

from genjax.errors import UserError
from genjax.data.tokenizer import CharTokenizer
from genjax.models import transformer
from genjax.sampling import best_of_n, postprocess, text
from genjax.sampling import lm as lm_sampling
from genjax.sampling.text import TextRequest
from test_lm_decode import random_params

CHARS = "abcdefghijklmnopqrstuvwxyz .,\n"
GREEDY = TextRequest(max_new_tokens=8, temperature=0.0)


@pytest.fixture(scope="module")
def lm():
    model = transformer.Transformer(vocab_size=32, max_len=16, num_layers=1, num_heads=2,
                                    embed_dim=32)
    return model, random_params(model, seed=1), CharTokenizer(CHARS)


def texts(lm, prompts, req):
    return [[c.text for c in row] for row in text.generate_texts(*lm, prompts, req)]


# ----------------------------------------------------------------------------- decoding
def test_a_batch_of_prompts_of_different_lengths_equals_decoding_each_alone(lm):
    prompts = ["hello", "a", "the cat"]
    batch = texts(lm, prompts, GREEDY)
    alone = [texts(lm, [p], GREEDY)[0] for p in prompts]
    assert batch == alone
    assert len({row[0] for row in batch}) == 3 and all(len(row[0]) == 8 for row in batch)


def test_many_samples_are_decoded_a_call_at_a_time_with_the_same_texts(lm, monkeypatch):
    """Each row draws from its own stream, so splitting the rows over several decode calls
    (each holding only its own KV cache) gives the texts of one call."""
    req = TextRequest(max_new_tokens=8, temperature=1.0, num_samples=5, seed=3)
    whole = texts(lm, ["ab", "c"], req)
    calls = []
    decode = lm_sampling.decode
    monkeypatch.setattr(lm_sampling, "decode",
                        lambda *a, **k: calls.append(len(a[2])) or decode(*a, **k))
    monkeypatch.setattr(text, "ROWS_PER_CALL", 4)
    assert texts(lm, ["ab", "c"], req) == whole
    assert calls == [4, 4, 2]


def test_samples_that_cannot_fit_in_host_memory_are_refused_before_decoding(lm, monkeypatch):
    with monkeypatch.context() as m:  # 2,000 samples of 10 ids: ~2.3 MiB on the bound
        m.setattr(text.runtime, "available_host_bytes", lambda: 2**21)
        with pytest.raises(UserError, match=r"need ~0.0 GiB of host memory; 0.0 GiB are"):
            text.generate_texts(*lm, ["ab"], TextRequest(max_new_tokens=8, num_samples=2000))
    req = TextRequest(max_new_tokens=8, num_samples=10**9)  # this machine, as it is
    with pytest.raises(UserError, match=r"num_samples=1000000000 x 1 prompt\(s\): "
                                        r"1000000000 samples of up to 10 tokens need ~"):
        text.generate_texts(*lm, ["ab"], req)


def test_same_seed_same_samples_and_samples_differ_from_each_other(lm):
    req = TextRequest(max_new_tokens=8, temperature=1.5, num_samples=3, seed=7)
    first = texts(lm, ["the cat"], req)[0]
    assert first == texts(lm, ["the cat"], req)[0]
    assert len(set(first)) == 3
    assert first != texts(lm, ["the cat"], dataclasses.replace(req, seed=8))[0]


def test_stop_strings_truncate_exactly_and_stop_tokens_end_the_text(lm):
    model, params, tok = lm
    full = text.generate_texts(*lm, ["hello"], GREEDY)[0][0]
    stop = full.text[3:5]
    cut = full.text.find(stop)
    (c,) = text.generate_texts(*lm, ["hello"], dataclasses.replace(GREEDY, stop=("zzz", stop)))[0]
    assert (c.text, c.finish_reason) == (full.text[:cut], "stop_string")
    np.testing.assert_array_equal(c.tokens, tok.encode(full.text[:cut]))
    stop_id = int(tok.encode(full.text[3])[0])
    req = dataclasses.replace(GREEDY, stop_token_ids=(stop_id,))
    (c,) = text.generate_texts(*lm, ["hello"], req)[0]
    assert (c.text, c.finish_reason) == (full.text[:full.text.find(full.text[3])], "stop_token")


def test_the_tokenizers_end_of_text_token_ends_a_sample_unless_switched_off(lm):
    """As Hugging Face's generate stops at GPT-2's eos (<|endoftext|>, 50256) by default.
    Here a char tokenizer that calls the greedy text's 4th character its end of text."""
    model, params, tok = lm
    full = text.generate_texts(*lm, ["hello"], GREEDY)[0][0].text
    end = int(tok.encode(full[3])[0])
    with_end = type("WithEnd", (CharTokenizer,), {"end_of_text_id": end})(CHARS)
    (c,) = text.generate_texts(model, params, with_end, ["hello"], GREEDY)[0]
    assert (c.text, c.finish_reason) == (full[:full.find(full[3])], "stop_token")
    off = dataclasses.replace(GREEDY, stop_at_end_of_text=False)
    assert text.generate_texts(model, params, with_end, ["hello"], off)[0][0].text == full
    assert text.stop_ids(dataclasses.replace(GREEDY, stop_token_ids=(end, 2)), with_end) == \
        (end, 2)


def test_a_bpe_vocabulary_names_its_end_of_text_token_only_where_it_has_one():
    from tokenizers import AddedToken
    from genjax.data.bpe import BPETokenizer
    bpe = BPETokenizer.train("to be or not to be " * 20, 260)
    assert bpe.end_of_text_id is None and CharTokenizer(CHARS).end_of_text_id is None
    bpe._tok.add_special_tokens([AddedToken("<|endoftext|>", special=True)])
    assert bpe.end_of_text_id == bpe.vocab_size - 1
    again = BPETokenizer.from_json(bpe.to_json())  # as a checkpoint's meta carries it
    assert again.end_of_text_id == bpe.vocab_size - 1
    assert again.decode([again.end_of_text_id]) == "<|endoftext|>"


def test_streamed_pieces_concatenate_to_the_non_streamed_text(lm):
    for stop in ((), (texts(lm, ["hello"], GREEDY)[0][0][5:7],)):
        req = TextRequest(prompt="hello", max_new_tokens=8, temperature=0.0, stop=stop)
        pieces = []
        done = text.stream_text(*lm, req, on_text=pieces.append, chunk_size=3)
        assert "".join(pieces) == done.text == text.generate_text(*lm, req)[0]
        assert len(pieces) > 1


def test_over_long_requests_fail_naming_the_numbers_or_truncate_or_slide_explicitly(lm):
    model, params, tok = lm
    with pytest.raises(UserError, match=r"prompt is 12 tokens \+ max_new_tokens=8 = 20 .*16"):
        text.generate_text(*lm, TextRequest(prompt="abcdefghijkl", max_new_tokens=8))
    with pytest.warns(UserWarning, match="truncate='left' keeps its last 8"):
        (c,) = text.generate_texts(*lm, ["abcdefghijkl"],
                                   dataclasses.replace(GREEDY, truncate="left"))[0]
    np.testing.assert_array_equal(c.prompt_tokens, tok.encode("efghijkl"))
    assert c.text == texts(lm, ["efghijkl"], GREEDY)[0][0]  # no silent difference
    with pytest.raises(UserError, match=r"max_new_tokens=16 leaves no room .*16.*window"):
        text.generate_text(*lm, TextRequest(prompt="abcdefgh", max_new_tokens=16))
    with pytest.warns(UserWarning, match="window=True"):
        (slid,) = text.generate_text(*lm, TextRequest(prompt="abcdefgh", max_new_tokens=16,
                                                      temperature=0.0, window=True))
    assert len(slid) == 16 and slid[:8] == texts(lm, ["abcdefgh"], GREEDY)[0][0]


def test_sliding_windows_after_the_first_share_one_compiled_decode(lm):
    req = TextRequest(prompt="abcdefgh", max_new_tokens=16, temperature=0.0, window=True)
    with pytest.warns(UserWarning, match="window=True"):
        (two,) = text.generate_text(*lm, req)  # windows of 8 and 8 tokens
        compiled = lm_sampling.generate_chunk._cache_size()
        (three,) = text.generate_text(*lm, dataclasses.replace(req, max_new_tokens=21))
    assert len(three) == 21 and three[:16] == two  # windows of 8, 8 and 5 tokens
    assert lm_sampling.generate_chunk._cache_size() == compiled  # the 5 reuses the 8s'


def reference_window_decode(lm, prompt: str, n: int):
    """Greedy tokens and their summed log-probability from full forward passes, sliding
    only when this prompt's own context is full (to its last max_len // 2 tokens): the
    window semantics, written without the KV cache or batching."""
    model, params, tok = lm
    apply = jax.jit(model.apply)
    history = list(tok.encode(prompt))
    context, out, total = list(history), [], 0.0
    for _ in range(n):
        row = np.zeros((1, model.max_len), np.int32)  # causal: the padding after is unseen
        row[0, :len(context)] = context
        logits = np.asarray(apply({"params": params}, row)[0, len(context) - 1], np.float64)
        logits[tok.vocab_size:] = -np.inf
        t = int(np.argmax(logits))
        total += logits[t] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
        out.append(t), history.append(t), context.append(t)
        if len(context) == model.max_len:
            context = history[-(model.max_len // 2):]
    return out, total


def test_sliding_windows_match_a_full_forward_reference_alone_or_batched(lm):
    """Each prompt slides where its own context fills, whatever else is in its batch (a
    short prompt used to slide when the longest row's context was full)."""
    _, _, tok = lm
    req = TextRequest(max_new_tokens=30, temperature=0.0, window=True)
    prompts = ["ab", "the cat s"]
    with pytest.warns(UserWarning, match="window=True"):
        batch = texts(lm, prompts, req)
    for p, row in zip(prompts, batch):
        want, _ = reference_window_decode(lm, p, 30)
        assert row[0] == tok.decode(want), p


def test_a_windowed_sample_streams_and_is_ranked_as_it_was_sampled(lm):
    model, params, tok = lm
    req = TextRequest(prompt="the cat s", max_new_tokens=30, temperature=0.0, window=True)
    pieces = []
    with pytest.warns(UserWarning, match="window=True"):
        done = text.stream_text(*lm, req, on_text=pieces.append, chunk_size=5)
    want, logp = reference_window_decode(lm, "the cat s", 30)
    assert "".join(pieces) == done.text == tok.decode(want) and len(pieces) > 2
    # best-of-n scores each token given the window it was drawn in (it raised ValueError)
    (total,) = best_of_n.lm_loglik(model, params, reduce="sum", valid_vocab=tok.vocab_size)(
        [done])
    assert total == pytest.approx(logp, rel=1e-5)


@pytest.mark.parametrize("field,value", [
    ("temperature", -0.1), ("temperature", 1e-39), ("top_p", 0.0),
    ("top_p", 1.5), ("top_k", -1), ("min_p", 1.0),
    ("min_p", -0.1), ("repetition_penalty", 0.0), ("num_samples", 0), ("max_new_tokens", 0),
    ("truncate", "right"), ("stop", ("",)), ("stop_token_ids", (99,))])
def test_invalid_parameters_raise_user_errors_naming_the_field(lm, field, value):
    with pytest.raises(UserError, match=field):
        text.generate_text(*lm, TextRequest(prompt="hi", **{field: value}))


def test_bad_prompts_raise_user_errors(lm):
    with pytest.raises(UserError, match="prompt is empty"):
        text.generate_text(*lm, TextRequest(prompt=""))
    with pytest.raises(UserError, match=r"prompts\[1\] is empty"):
        text.generate_texts(*lm, ["hi", ""], GREEDY)
    with pytest.raises(UserError, match="characters not in the vocabulary.*'Q'.*'\u2603'"):
        text.generate_text(*lm, TextRequest(prompt="hi Q\u2603"))


def test_special_token_text_is_encoded_as_plain_bytes():
    from genjax.data.bpe import BPETokenizer
    tok = BPETokenizer.train("hello world, hello there. " * 20, 280)
    plain = text.encode_untrusted(tok, "hi <|endoftext|>")
    assert plain.tolist() == tok.encode("hi <|endoftext|>").tolist()  # ours: no specials
    tok._tok.add_special_tokens(["<|endoftext|>"])
    special_id = tok._tok.token_to_id("<|endoftext|>")
    assert special_id in tok.encode("hi <|endoftext|>").tolist()  # what a raw encode does
    ids = text.encode_untrusted(tok, "hi <|endoftext|>")
    assert special_id not in ids.tolist() and ids.tolist() == plain.tolist()
    assert special_id in tok.encode("<|endoftext|>").tolist()  # the flag was restored


# ----------------------------------------------------------------------------- best-of-n
def test_best_of_8_beats_best_of_1_on_mean_log_likelihood(lm):
    model, params, tok = lm
    req = TextRequest(max_new_tokens=8, temperature=1.0, seed=0)
    chosen = {1: [], 8: []}
    for prompt in ["hello", "the cat", "a", "bob"]:
        r = dataclasses.replace(req, prompt=prompt)
        for n in chosen:
            ranked = best_of_n.best_of_n_text(model, params, tok, r, n)
            scores = [s for _, s in ranked]
            assert len(ranked) == n and scores == sorted(scores, reverse=True)
            chosen[n].append(scores[0])
    print("mean chosen log-likelihood (nats/token): best of 1 %.3f, best of 8 %.3f"
          % (np.mean(chosen[1]), np.mean(chosen[8])))
    assert np.mean(chosen[8]) > np.mean(chosen[1]) + 0.05, chosen


def test_lm_log_likelihood_matches_a_direct_computation(lm):
    model, params, _ = lm
    prompt, cont = np.array([3, 4, 5]), np.arange(6, 16)  # 13 tokens: the best-of shapes
    total, mean = best_of_n.sequence_logprobs(model, params, [prompt, prompt], [cont, cont[:0]])
    logits = np.asarray(jax.jit(model.apply)({"params": params}, np.arange(3, 16)[None])[0],
                        np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(total[0], sum(logp[2 + i, 6 + i] for i in range(10)), rtol=1e-5)
    np.testing.assert_allclose(mean[0], total[0] / 10, rtol=1e-6)
    assert total[1] == 0 and mean[1] == -np.inf


def test_best_of_n_ranks_any_candidates_with_any_scorer():
    score = best_of_n.per_item(lambda c: {"c1": 2.0, "c2": np.nan}.get(c, 1.0))
    ranked = best_of_n.best_of_n(lambda n, seed: [f"c{i}" for i in range(n)], score, 4)
    assert ranked == [("c1", 2.0), ("c0", 1.0), ("c3", 1.0), ("c2", pytest.approx(np.nan,
                                                                                nan_ok=True))]


# ----------------------------------------------------------------------------- filters
def test_blocklist_rejects_or_redacts_with_reasons_and_respects_word_boundaries():
    reject = postprocess.blocklist(["ass"])
    redact = postprocess.blocklist(["ass"], patterns=[r"\d{3}-\d{4}"], action="redact")
    (ok,) = postprocess.run_hooks(["a classic bass passage, assorted"], [reject])
    assert not ok["rejected"] and ok["text"] == "a classic bass passage, assorted"
    (bad,) = postprocess.run_hooks(["you ASS!"], [reject])
    assert bad["rejected"] and bad["text"] == "" and "'ass'" in bad["reason"]
    (red,) = postprocess.run_hooks(["classic ass, call 555-1234"], [redact])
    assert red["text"] == "classic [REDACTED], call [REDACTED]" and not red["rejected"]
    assert red["redactions"] == [{"term": "ass", "span": [8, 11]},
                                 {"term": r"\d{3}-\d{4}", "span": [18, 26]}]
    assert postprocess.is_flagged(red) and not postprocess.is_flagged(ok)


def test_classifier_format_and_image_hooks():
    hooks = [postprocess.strip(), postprocess.classifier(lambda t: 0.9 * ("bad" in t)),
             postprocess.last_full_line(), postprocess.max_chars(8)]
    good, bad = postprocess.run_hooks(["  line one\nline tw", "bad words"], hooks)
    assert good["text"] == "line one" and good["truncated"] and good["scores"]["classifier"] == 0
    assert bad["rejected"] and "0.900 >= 0.5" in bad["reason"]
    probs = {0: [0.9, 0.1], 1: [0.55, 0.45]}
    unsure = postprocess.image_confidence_filter(lambda im: probs[int(im.sum())],
                                                 threshold=0.6, class_names=["cat", "dog"])
    sure, notsure = postprocess.run_hooks([np.zeros((2, 2, 1)), np.eye(2)[..., None] / 2],
                                          [unsure], key="image")
    assert not sure["rejected"] and sure["label"] == "cat"
    assert notsure["rejected"] and "unsure" in notsure["reason"] and notsure["image"] is None


# ----------------------------------------------------------------------------- CLI
def test_cli_wiring_prints_filter_metadata_and_applies_stops(lm, capsys):
    import re
    from types import SimpleNamespace

    from ml_collections import ConfigDict

    from genjax import families, sample
    model, params, tok = lm
    full = texts(lm, ["hello"], GREEDY)[0][0]
    loaded = SimpleNamespace(
        config=SimpleNamespace(sample=ConfigDict(dict(
            prompt="hello", num_samples=1, max_new_tokens=8, temperature=0.0, top_k=0,
            top_p=1.0))),
        model=model, params=params, meta={"data": {"tokenizer": tok.to_json()}}, step=0,
        family=families.get("lm"))
    flags = dict(prompt=None, num_samples=None, max_new_tokens=None, temperature=None,
                 top_k=None, top_p=None, min_p=None, repetition_penalty=None, stop=[],
                 stop_token_ids=[], stream=False, truncate="error", window=False, best_of=1,
                 blocklist=[], blocklist_regex=[], redact=False, seed=0)
    run = lambda **kw: (sample.sample_lm(loaded, SimpleNamespace(**{**flags, **kw})),  # noqa
                        capsys.readouterr().out)[1]
    out = run(blocklist_regex=[re.escape(full[2:4])], redact=True)
    assert "[REDACTED]" in out and '"redactions": [{"term"' in out and "[filtered]" in out
    out = run(blocklist=[full])
    assert "hello" + full not in out and '"rejected": true, "reason": "blocklist: ' in out
    out = run(stop=[full[3:5]])
    assert out == f"----- sample 1/1 (step 0) -----\nhello{full[:full.find(full[3:5])]}\n"
    given = lambda **kw: sample.lm_request(  # noqa: E731
        loaded.config.sample, SimpleNamespace(**{**flags, **kw})).stop_at_end_of_text
    assert given() and given(stop_at_end_of_text=None) and not given(stop_at_end_of_text=False)
    assert run(stream=True, stop=[full[3:5]]) == out
    with pytest.raises(UserError, match="--stream"):
        run(stream=True, blocklist=["x"])
    with pytest.raises(UserError, match="--redact redacts --blocklist"):
        run(redact=True)  # nothing to redact: it was accepted and did nothing
    # the config's window=True (the presets') streams and ranks past the context
    loaded.config.sample.window, loaded.config.sample.max_new_tokens = True, 30
    with pytest.warns(UserWarning, match="window=True"):
        long = run(window=None)
        slid = texts(lm, ["hello"], dataclasses.replace(GREEDY, max_new_tokens=30, window=True))
        assert run(window=None, stream=True) == long and f"hello{slid[0][0]}\n" in long
        assert "rank 1 of 2" in run(window=None, best_of=2)


def test_label_names_match_exactly_first_then_as_whole_words():
    from genjax.sample import resolve_label
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
             "Sneaker", "Bag", "Ankle boot"]
    got = {k: resolve_label(k, names) for k in ("shirt", "Shirt", "t-shirt", "T_SHIRT",
                                                   "top", "boot", "ankle boot", "7")}
    assert got == {"shirt": 6, "Shirt": 6, "t-shirt": 0, "T_SHIRT": 0, "top": 0, "boot": 9,
                   "ankle boot": 9, "7": 7}
    with pytest.raises(UserError, match=r"'shoe' matches \['red shoe', 'blue shoe'\]"):
        resolve_label("shoe", ["red shoe", "blue shoe"])
    with pytest.raises(UserError, match="not a class"):
        resolve_label("hat", names)


@pytest.mark.parametrize("family,flag,value", [
    ("gan", "guidance", 0.0), ("vae", "guidance", 0.0), ("diffusion", "temperature", 0.0),
    ("lm", "guidance", 0.0), ("lm", "min_confidence", 0.5)])
def test_a_flag_the_sampler_does_not_take_is_refused_even_at_zero(family, flag, value):
    from types import SimpleNamespace

    from genjax import families, sample
    defaults = dict(truncate="error", best_of=1, batch_size=250, min_confidence=0.0)
    sample.check_flags(families.get(family), SimpleNamespace(**defaults))  # defaults: fine
    with pytest.raises(UserError, match=f"--{flag}: the .* sampler of this family does not"):
        sample.check_flags(families.get(family), SimpleNamespace(**{**defaults, flag: value}))


@pytest.mark.parametrize("family,flag,value,match", [
    ("diffusion", "guidance", float("nan"), "--guidance=nan: must be a finite number"),
    ("lm", "temperature", float("inf"), "--temperature=inf: must be a finite number"),
    ("diffusion", "min_confidence", float("nan"), "--min_confidence=nan: must be a finite"),
    ("diffusion", "out", "x.json", r"--out=x.json: end it with .png or .npz"),
    ("diffusion", "out", "grids/", r"--out=grids/: end it with .png or .npz"),
    ("vae", "out", "{file}/grid.png", "a file stands where its folder should be")])
def test_a_value_the_sampler_cannot_use_is_refused_before_sampling(family, flag, value, match,
                                                                    tmp_path):
    # NaN guidance gave a garbage grid, --out=x.json failed in PIL after sampling (its
    # x.json.json written), a file where --out's folder goes failed after sampling.
    from types import SimpleNamespace

    from genjax import families, sample
    (tmp_path / "file").write_text("")
    value = value.format(file=tmp_path / "file") if isinstance(value, str) else value
    defaults = dict(truncate="error", best_of=1, batch_size=250, min_confidence=0.0)
    with pytest.raises(UserError, match=match):
        sample.check_flags(families.get(family), SimpleNamespace(**{**defaults, flag: value}))
    if family != "lm":
        sample.check_flags(families.get(family), SimpleNamespace(
            **defaults, out=str(tmp_path / "new" / "grid.png")))
