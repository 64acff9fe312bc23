"""Cleaning stages, dedup and decontamination, the BPE tokenizer, data cards, the data CLI.

Everything here uses tiny corpora under tmp_path (the whole file runs in well under a minute).
"""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ml_collections import ConfigDict

from genjax.data import bpe, cleaning, data_card, dedup, text_builders
from genjax.data.cleaning import CleaningPipeline, decode_utf8
from genjax.data.lm_loader import LMData
from genjax.data.tokenizer import CharTokenizer, tokenizer_from_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("crown sword night moon love death honour grief storm sea heart blood king queen "
         "ghost witch tomb rose fool lord lady wind fire cloud star").split()


def random_lines(n, seed=0, words=12):
    """n distinct lines of random words (pairwise Jaccard far below 0.8)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, words)).capitalize() + f" {i}." for i in range(n)]


def record(result, stage):
    records = result if isinstance(result, list) else result.records
    return next(r for r in records if r["stage"] == stage)


# ----------------------------------------------------------------------- dedup
def test_planted_exact_and_near_duplicates_are_all_found():
    lines = random_lines(200)
    exact = {20: 3, 90: 50, 150: 3}                 # copy position: original
    near = {40: 7, 120: 60}
    corpus = list(lines)
    for j, i in exact.items():                      # same normal form: case and spaces differ
        corpus[j] = "  " + lines[i].upper().replace(" ", "   ")
    for j, i in near.items():                       # one character changed mid-line
        k = len(lines[i]) // 2
        corpus[j] = lines[i][:k] + ("X" if lines[i][k] != "X" else "Y") + lines[i][k + 1:]
    corpus += ["Exeunt", "Exeunt", "", "ROMEO:", "ROMEO:"]  # short / protected: always kept
    result = CleaningPipeline("exact_dedup,near_dedup").run(["\n".join(corpus)])
    out = result.docs[0].split("\n")
    planted = set(exact) | set(near)
    assert out == [l for i, l in enumerate(corpus) if i not in planted]
    ex, nd = record(result, "exact_dedup"), record(result, "near_dedup")
    assert ex["duplicates"] == len(exact) and ex["distinct_repeated"] == 2
    assert nd["near_duplicates"] == len(near)
    assert (ex["lines_before"], ex["lines_after"], nd["lines_after"]) == (205, 202, 200)
    assert ex["chars_before"] - ex["chars_after"] == sum(len(corpus[j]) for j in exact)
    assert {e["kept"] for e in nd["examples"]} == {lines[i] for i in near.values()}
    assert all(e["jaccard"] >= 0.8 for e in nd["examples"])


def test_no_near_duplicates_among_lines_too_short_to_shingle_or_not_eligible():
    """A file whose lines are all short (or none eligible) has nothing to compare: an empty
    answer, not an IndexError (seen on a 6-byte binary file given as text)."""
    short = ["ab", "ab", "abc"]
    assert dedup.near_duplicates(short, np.ones(3, bool), 0.8) == {}
    same = ["the same line, long enough"] * 3
    assert dedup.near_duplicates(same, np.zeros(3, bool), 0.8) == {}
    assert dedup.near_duplicates(same, np.ones(3, bool), 0.8) == {1: (0, 1.0), 2: (0, 1.0)}


def test_near_dedup_only_removes_lines_similar_to_a_kept_line():
    rng = np.random.default_rng(1)
    lines = random_lines(300, seed=2)
    mutated = []
    for line in lines[:100]:  # many variants at all levels of similarity
        chars = list(line)
        for k in rng.choice(len(chars), rng.integers(1, 8), replace=False):
            chars[k] = "#"
        mutated.append("".join(chars))
    corpus = lines + mutated
    eligible = np.ones(len(corpus), bool)
    found = dedup.near_duplicates(corpus, eligible, 0.7)
    sets = [set(dedup.normal_form(l)[i:i + 5] for i in range(len(l) - 4)) for l in corpus]
    for j, (i, jac) in found.items():
        assert i < j and i not in found
        assert jac == pytest.approx(len(sets[i] & sets[j]) / len(sets[i] | sets[j]))
        assert jac >= 0.7
    # Recall: every mutated line at Jaccard >= 0.75 from its original is found.
    qualified = [k for k in range(100)
                 if len(sets[k] & sets[300 + k]) / len(sets[k] | sets[300 + k]) >= 0.75]
    assert len(qualified) >= 20, len(qualified)  # the recall check below checks something
    for k in qualified:
        assert 300 + k in found, corpus[300 + k]


def test_decontamination_drops_a_train_line_sharing_a_13_gram_with_validation():
    secret = ("now is the winter of our discontent made glorious summer by this sun of "
              "york and all the clouds").split()
    validation = ["GLOUCESTER:\n" + " ".join(secret[:10]) + "\n" + " ".join(secret[10:])]
    train = random_lines(20)
    train[5] = "Now, is THE winter of our discontent -- made glorious summer by this sun!"
    train[9] = " ".join(secret[3:15])  # 12 shared words: not a 13-gram, stays
    result = CleaningPipeline("decontaminate", decontam_ngram=13).run(
        ["\n".join(train)], reference=validation)
    assert result.docs[0].split("\n") == train[:5] + train[6:]
    rec = record(result, "decontaminate")
    assert rec["contaminated_lines"] == 1 and rec["lines_after"] == 19
    assert rec["examples"][0].startswith("now is the winter of our discontent")


def test_filters_keep_speaker_lines_and_tidy_drops_emptied_speeches():
    long_line = "But soft, what light through yonder window breaks?"
    doc = "\n".join(["ROMEO:", long_line, "Exeunt", "", "JULIET:", long_line, "", "NURSE:",
                     "Anon, anon!", "Exeunt"])
    result = CleaningPipeline("exact_dedup,tidy").run([doc])
    assert result.docs[0] == "\n".join(["ROMEO:", long_line, "Exeunt", "", "NURSE:",
                                        "Anon, anon!", "Exeunt"])
    assert record(result, "tidy")["paragraphs_emptied"] == 1
    held_out = CleaningPipeline("exact_dedup,tidy").run([doc], train=False)
    assert held_out.docs == [doc]  # filters never touch held-out splits


@pytest.mark.parametrize("speaker", ["ROMEO: ", "ROMEO:\t", "**ROMEO:**"])
def test_a_speaker_line_is_protected_as_the_map_stages_leave_it(speaker):
    """Protection follows the lines each filter sees: "ROMEO: " is "ROMEO:" after the
    whitespace stage (it was judged before it and left dangling by tidy)."""
    long_line = "But soft, what light through yonder window breaks?"
    doc = "\n".join([speaker, long_line, "", "JULIET:", long_line, "", "NURSE:", "Anon!"])
    result = CleaningPipeline("strip_markup,whitespace,exact_dedup,tidy").run([doc])
    assert result.docs[0] == "\n".join(["ROMEO:", long_line, "", "NURSE:", "Anon!"])
    name = "FIRST GENTLEMAN OF THE KING'S CHAMBER:"  # long enough for exact_dedup
    doc = "\n".join([name + " ", "Away.", "", name + " ", "Then let us go in haste."])
    result = CleaningPipeline("whitespace,exact_dedup,tidy").run([doc])
    assert result.docs[0] == "\n".join([name, "Away.", "", name, "Then let us go in haste."])


# ----------------------------------------------------------------------- map stages
def test_invalid_utf8_bytes_are_counted_and_replaced():
    raw = b"\xef\xbb\xbfok \xff\xfe caf\xc3\xa9\r\nend \xe2\x82"
    text, counts = decode_utf8(raw)
    assert text == "ok \ufffd\ufffd caf\u00e9\nend \ufffd\ufffd"
    assert counts == {"invalid_bytes": 4, "byte_order_marks": 1, "carriage_returns": 1}
    result = CleaningPipeline("nfc").run([raw, "fine"])
    assert result.records[0] == {"stage": "decode_utf8", **counts}
    assert result.docs == [text, "fine"]


def test_map_stages_normalise_markup_and_whitespace():
    doc = ("Cafe\u0301 <b>bold</b>&nbsp;&amp; **strong** _it_ snake_case [link](http://x)\n"
           "# Heading\n\tTabs\u00a0and\u2003spaces  \x07\n\n\n\nlast &foo; line")
    result = CleaningPipeline("nfc,strip_markup,whitespace").run([doc])
    assert result.docs[0] == ("Caf\u00e9 bold & strong it snake_case link\nHeading\n"
                              "Tabs and spaces\n\nlast &foo; line")
    assert record(result, "strip_markup") == {
        "stage": "strip_markup", "lines_before": 7, "lines_after": 7,
        "chars_before": sum(map(len, doc.split("\n"))) - 1,  # NFC: e + U+0301 -> one character
        "chars_after": record(result, "whitespace")["chars_before"],
        "html_tags": 2, "html_entities": 2, "emphasis": 2, "links": 1, "headings": 1}
    assert record(result, "whitespace")["blank_lines_collapsed"] == 2


def test_length_filter_and_line_regexes():
    doc = "\n".join(["A fine line.", "...", "x" * 50, "[Applause]", "ok", "1 2 3 4"])
    result = CleaningPipeline("filter_lines,length_filter", min_chars=3, max_chars=40).run([doc])
    assert result.docs[0] == "A fine line."
    assert {k: v for k, v in record(result, "length_filter").items() if k.startswith(("too", "non"))
            } == {"too_short": 1, "too_long": 1, "non_alpha": 2}


def test_pipeline_names_unknown_stages_and_params():
    with pytest.raises(ValueError, match=r"unknown cleaning stage.*'dedupe'.*known"):
        CleaningPipeline("nfc,dedupe")
    with pytest.raises(ValueError, match="near_dup_treshold"):
        CleaningPipeline("near_dedup", near_dup_treshold=0.5)
    a = CleaningPipeline("exact_dedup", near_dup_threshold=0.5)  # a param no stage reads
    assert a.fingerprint == CleaningPipeline("exact_dedup").fingerprint
    assert CleaningPipeline.from_json(json.loads(json.dumps(a.to_json()))).fingerprint == \
        a.fingerprint


def test_lm_config_restates_the_cleaning_defaults():
    from configs import lm_shakespeare
    data = lm_shakespeare.get_config("tiny").data
    assert {k: data[k] for k in cleaning.DEFAULTS} == cleaning.DEFAULTS
    assert CleaningPipeline.from_config(data).fingerprint == CleaningPipeline().fingerprint


# ----------------------------------------------------------------------- tokenizers
CORPUS = "\n\n".join(random_lines(300, seed=3)) + "\nROMEO: ô ü 😀 \u00e9\u0301\t"
_BPE = []


def bpe_tokenizer():
    if not _BPE:
        _BPE.append(bpe.BPETokenizer.train(CORPUS, 400))
    return _BPE[0]


CHAR_VOCAB = sorted(set(CORPUS))


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(CHAR_VOCAB)))
def test_char_tokenizer_round_trips_text_from_its_vocab(text):
    tok = CharTokenizer(CHAR_VOCAB)
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and tok.decode(ids) == text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_bpe_round_trips_any_unicode_text(text):
    tok = bpe_tokenizer()
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and (ids < tok.vocab_size).all()
    assert tok.decode(ids) == text


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab \n\t'x.")), max_size=200),
       st.integers(1, 20))
def test_bpe_chunked_encoding_equals_whole_text_encoding(text, size):
    tok = bpe_tokenizer()
    chunks = list(bpe._chunks(text, size))
    assert "".join(chunks) == text
    whole = tok._tok.encode(text).ids
    parts = [i for c in chunks for i in tok._tok.encode(c).ids]
    assert parts == whole


def test_bpe_chunks_of_text_with_blank_lines_encode_as_the_whole_text():
    """A tokenizer that merged "\n\n": a chunk ending in "light\n\n" made it one token,
    where inside the text "\n\n" before "JULIET" is two (GPT-2's whitespace rule)."""
    tok = bpe.BPETokenizer.train("light\n\nJULIET: x  \nz \n\n\n  y\n" * 300, 300)
    assert tok._tok.token_to_id("\u010a\u010a") is not None  # the merge was learned
    for text in ["light\n\nJULIET:", "ab  \ncd\n\n\nef \n\ngh\n  ij\nk"]:
        whole = tok._tok.encode(text).ids
        for size in range(1, len(text)):
            chunks = list(bpe._chunks(text, size))
            assert "".join(chunks) == text
            assert [i for c in chunks for i in tok._tok.encode(c).ids] == whole, (text, size)


def test_bpe_json_is_embeddable_and_dispatched_by_kind(tmp_path):
    tok = bpe_tokenizer()
    d = json.loads(json.dumps(tok.to_json()))
    assert d["kind"] == "bpe" and d["vocab_size"] == 400 == tok.vocab_size
    again = tokenizer_from_json(d)
    text = "ROMEO: the crown of the sea \u00f4"
    np.testing.assert_array_equal(again.encode(text), tok.encode(text))
    assert len(tok.encode("crown sword night")) < len("crown sword night")  # merges learned
    with pytest.raises(ValueError, match=">= 256"):
        bpe.BPETokenizer.train(CORPUS, 100)


# ----------------------------------------------------------------------- data cards
@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    lines = random_lines(400, seed=4)
    lines[100] = lines[10]                       # an exact duplicate in train
    lines[390] = lines[20]                       # a validation line (test split by position)
    path = folder / "corpus.txt"
    path.write_bytes(b"\xff" + "\n".join(lines).encode() + b"\n")  # one invalid byte
    return path


def lm_cfg(data_dir, text_file, tokenizer="char"):
    from configs import lm_shakespeare
    data = lm_shakespeare.get_config("tiny").data
    data.unlock()
    data.update(name="text", text_file=str(text_file), data_dir=str(data_dir),
                tokenizer=tokenizer, vocab_size=300)
    return ConfigDict(data.to_dict())


def test_data_card_of_a_text_file_matches_the_data(text_file, tmp_path):
    builder = text_builders.prepare(str(text_file), str(tmp_path), CleaningPipeline())
    directory = builder.data_dir
    card = data_card.read_card(directory)
    assert os.path.exists(os.path.join(directory, data_card.CARD_MD))
    texts = {s: text_builders.read_split(builder, s) for s in ("train", "validation")}
    for split, text in texts.items():
        assert card["splits"][split]["chars"] == len(text)
        assert card["splits"][split]["lines"] == text.count("\n") + 1
    train = card["cleaning"]["records"]["train"]
    assert [r["stage"] for r in train] == cleaning.DEFAULTS["cleaning"].split(",")
    for a, b in zip(train, train[1:]):
        assert (a["lines_after"], a["chars_after"]) == (b["lines_before"], b["chars_before"])
    assert train[-1]["lines_after"] == len(texts["train"].split("\n"))
    assert train[-1]["chars_after"] == len(texts["train"]) - texts["train"].count("\n")
    assert record(train, "exact_dedup")["duplicates"] == 1        # lines[100] == lines[10]
    decon = record(train, "decontaminate")  # lines[20] is validation's (plus any line a
    assert decon["contaminated_lines"] == decon["lines_before"] - decon["lines_after"] >= 1
    assert random_lines(21, seed=4)[20] not in texts["train"]  # 13-gram spanning it touches)
    assert card["cleaning"]["source_stages"]["counts"]["decode_utf8"]["invalid_bytes"] == 1
    assert card["sources"][0]["sha256"] == hashlib.sha256(text_file.read_bytes()).hexdigest()
    assert card["vocabulary"]["tokenizer"]["size"] == len(set(texts["train"]))
    for name, f in card["files"].items():
        with open(os.path.join(directory, name), "rb") as blob_file:
            blob = blob_file.read()
        assert f == {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    assert any(n.endswith(".array_record-00000-of-00001") for n in card["files"])
    # A BPE tokenizer trained later is saved with the data and added to the card.
    text_builders.builder_tokenizer(builder, "bpe", 300)
    card = data_card.read_card(directory)
    assert card["vocabulary"]["tokenizer_bpe300"]["size"] == 300
    assert "tokenizer_bpe300.json" in card["files"]


def test_lm_data_switches_tokenizer_with_one_key(text_file, tmp_path):
    kw = dict(seq_len=16, global_batch_size=4, seed=0)
    char = LMData(lm_cfg(tmp_path, text_file, "char"), **kw)
    data = LMData(lm_cfg(tmp_path, text_file, "bpe"), **kw)
    assert data.builder.data_dir == char.builder.data_dir  # same prepared data
    assert data.tokenizer.kind == "bpe" and data.tokenizer.vocab_size == 300
    text, tokens = data.text("validation"), data.tokens("validation")
    assert data.tokenizer.decode(tokens) == text
    cpt = data.eval_kwargs()["chars_per_token"]
    assert cpt == len(text) / len(tokens) and cpt > 1.5
    assert char.eval_kwargs()["chars_per_token"] == 1.0
    assert tokenizer_from_json(data.meta()["tokenizer"]).encode(text).tolist() == tokens.tolist()
    assert next(data.train_iterator())["tokens"].shape == (4, 17)
    with pytest.raises(ValueError, match="'char' or 'bpe'"):
        LMData(lm_cfg(tmp_path, text_file, "wordpiece"), **kw)


def test_fashion_mnist_card_has_sources_and_cross_split_duplicates(tmp_path):
    from genjax.data import image_builders
    from genjax.data.idx import write_idx
    rng = np.random.default_rng(0)
    x_tr = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    x_te = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    x_te[1] = x_tr[5]  # a test image that is also in train
    src = tmp_path / "src"
    src.mkdir()
    for stem, arr in [("train-images-idx3-ubyte", x_tr), ("t10k-images-idx3-ubyte", x_te),
                      ("train-labels-idx1-ubyte", np.arange(12, dtype=np.uint8) % 10),
                      ("t10k-labels-idx1-ubyte", np.arange(4, dtype=np.uint8))]:
        write_idx(src / f"{stem}.gz", arr)
    builder = image_builders.prepare_images("fashion_mnist", str(tmp_path / "tfds"),
                                            source_dir=str(src))
    card = data_card.read_card(builder.data_dir)
    assert card["splits"] == {"train": {"examples": 12, "image_shape": [28, 28, 1]},
                              "test": {"examples": 4, "image_shape": [28, 28, 1]}}
    assert card["duplicates"]["test_in_train"]["count"] == 1
    assert card["duplicates"]["test_in_train"]["examples"] == [{"test": 1, "train": [5]}]
    files = [s for s in card["sources"] if s["kind"] == "file"]
    assert len(files) == 4 and all(len(s["sha256"]) == 64 for s in files)
    assert card["vocabulary"]["classes"]["sample"][9] == "Ankle boot"
    assert "train-images" not in "".join(card["files"])  # outputs only, sources above


# ----------------------------------------------------------------------- CLI
def cli(*args, data_dir):
    env = dict(os.environ, JAX_PLATFORMS="cpu", GENJAX_DATA_DIR=str(data_dir))
    return subprocess.run([sys.executable, "-m", "genjax.data", *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def test_cli_prepare_and_inspect_a_text_file(text_file, tmp_path):
    out = cli("prepare", text_file, data_dir=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    card_md = out.stdout.strip().splitlines()[-1].removeprefix("data card: ")
    assert os.path.exists(card_md) and card_md.endswith("data_card.md")
    out = cli("inspect", text_file, "--examples", 2, data_dir=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("# Data card: genjax_text_file")
    assert "## train: first 2 examples" in out.stdout and random_lines(1, seed=4)[0] in out.stdout
    assert "exact_dedup" in out.stdout


def test_cli_missing_path_is_one_error_line(tmp_path):
    out = cli("inspect", tmp_path / "nope.txt", data_dir=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ")
    assert "nope.txt" in out.stderr


def test_cli_flags_are_absl_flags_and_bad_ones_are_one_line():
    from genjax.data.__main__ import CliError, parse
    for argv in (["inspect", "x.txt", "--examples", "2"], ["--examples=2", "inspect", "x.txt"]):
        args = parse(argv)
        assert (args.command, args.target, args.examples, args.cleaning) == \
            ("inspect", "x.txt", 2, "default")
    for argv, needle in [(["inspect", "x.txt", "--examples=two"], "--examples=two"),
                         (["inspect", "x.txt", "--examples=-2"], "--examples=-2"),
                         (["prepare", "pets/", "--channels=2"], "--channels=2"),
                         (["prepare", "pets/", "--test_percent=100"], "--test_percent=100"),
                         (["prepare", "pets/", "--test_percent=0"], "--test_percent=0"),
                         (["prepare", "pets/", "--image_size=100000"], "--image_size=100000"),
                         (["inspect", "x.txt", "--nope=1"], "'nope'"),
                         (["frob", "x.txt"], "prepare|inspect")]:
        with pytest.raises(CliError, match=needle):
            parse(argv)


def test_cli_a_grid_path_under_a_file_is_one_error_line(monkeypatch, capsys, tmp_path):
    """`inspect --out=FILE/grid.png`: the OSError of a path that cannot be written is one
    line naming it (exit 2), as bad flags are."""
    from genjax.data import __main__ as data_cli
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")

    def write_grid(argv):  # main() after the dataset: the grid at --out
        from genjax.image_grid import save_grid
        save_grid(np.zeros((4, 8, 8, 1), np.float32), data_cli.parse(argv).out)
    monkeypatch.setattr(data_cli, "main", write_grid)
    with pytest.raises(SystemExit) as e:
        data_cli.run(["inspect", "fashion_mnist", f"--out={afile}/grid.png"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert err == f"error: {str(afile)!r} is a file where a folder is needed\n"
    assert afile.read_text() == "keep me"
