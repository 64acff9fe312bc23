"""Text data: cleaning, the split by play, the tokenizer, TFDS builders, the LM loader.

The real Shakespeare dataset is built once per session into the shared `data_dir`
(conftest.py); everything else uses tiny files under tmp_path.
"""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from ml_collections import ConfigDict

from genjax.data import shakespeare, text_builders
from genjax.data.lm_loader import LMData, dataset_source, eval_windows
from genjax.data.tokenizer import CharTokenizer, load_tokenizer, tokenizer_from_json
from genjax.errors import UserError

tfds.disable_progress_bar()
SEQ, BATCH = 16, 8

PLAY_MD = """# The Tragedy of Tests

## ACT I

### SCENE I. A desert place.

_Thunder and lightning. Enter three Witches,
and a \\[Sergeant]_

**First Witch**  
When shall we three meet again  
In thunder, lightning, or in rain\u2014

**Second Witch**  
_\\[Aside]_  
When the hurlyburly\u2019s   done,  
When the battle's lost and won.

_Exit First Witch_

Paddock calls.

## SCENE II. Yorkshire.

Stray wrapped heading text.

**ALL**  
Fair is foul, and foul is fair.
"""

PLAY_TEXT = """FIRST WITCH:
When shall we three meet again
In thunder, lightning, or in rain--

SECOND WITCH:
When the hurlyburly's done,
When the battle's lost and won.
Paddock calls.

ALL:
Fair is foul, and foul is fair."""


def data_cfg(data_dir, name="shakespeare", text_file=""):
    return ConfigDict(dict(name=name, text_file=str(text_file), data_dir=str(data_dir),
                           tokenizer="char"))


def take(it, n):
    return [next(it)["tokens"] for _ in range(n)]


@pytest.fixture(scope="module")
def lm(data_dir):
    """LMData over the real Shakespeare dataset (built on first use)."""
    return LMData(data_cfg(data_dir), seq_len=SEQ, global_batch_size=BATCH, seed=0)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "tiny.txt"
    rng = np.random.default_rng(0)
    path.write_text("".join(rng.choice(list("abcdefgh \n"), size=1000)), encoding="utf-8")
    return path


# ----------------------------------------------------------------------- cleaning
def test_a_play_becomes_speaker_lines_then_verse():
    text, report = shakespeare.clean_play(PLAY_MD)
    assert text == PLAY_TEXT
    assert report["drop_headings"]["lines_removed"] == 4
    assert report["drop_unattributed_lines"]["lines_removed"] == 1
    assert report["drop_stage_directions"]["lines_removed"] == 4
    assert report["normalize_unicode"]["chars_changed"] == 2  # em dash, curly apostrophe


def test_cleaned_corpus_has_speeches_and_no_markdown(lm):
    for split in shakespeare.SPLITS:
        text = lm.text(split)
        for mark in ("**", "_", "#", "[", "\\", "  ", "\n\n\n"):
            assert mark not in text, (split, mark)
        assert set(text) <= set(shakespeare.ALPHABET)
        for speech in text.split("\n\n"):
            name, *verse = speech.split("\n")
            assert name.endswith(":") and name == name.upper() and verse, speech[:200]


def test_split_is_by_whole_play(lm):
    plays = lm.card["prep_report"]["plays"]
    assert plays["validation"] == sorted(shakespeare.VALIDATION_PLAYS)
    assert plays["test"] == sorted(shakespeare.TEST_PLAYS)
    names = [p for split in plays.values() for p in split]
    assert len(names) == len(set(names)) == len(shakespeare.play_paths())
    macbeth, _ = shakespeare.clean_play(shakespeare.play_paths()["macbeth"].read_text())
    assert macbeth in lm.text("test") and macbeth[:300] not in lm.text("train")


# ----------------------------------------------------------------------- tokenizer
def test_tokenizer_round_trips_the_cleaned_corpus(lm, tmp_path):
    tok = lm.tokenizer
    # every split's characters (Shakespeare's held-out plays add none to the training ones)
    assert tok.vocab == sorted(set("".join(lm.text(s) for s in shakespeare.SPLITS)))
    for split in shakespeare.SPLITS:
        ids = tok.encode(lm.text(split))
        assert ids.dtype == np.int32 and tok.decode(ids) == lm.text(split)
    assert tokenizer_from_json(json.loads(json.dumps(tok.to_json()))).vocab == tok.vocab
    tok.save(tmp_path / "tok.json")
    assert load_tokenizer(tmp_path / "tok.json").vocab == tok.vocab


def test_tokenizer_rejects_unknown_characters_by_name():
    tok = CharTokenizer.train("ROMEO: hi\n")
    with pytest.raises(ValueError, match=r"'é'.*'€'"):
        tok.encode("ROMEO: é€")
    with pytest.raises(ValueError, match=r"\(1\): '\\udcff'"):  # a prompt's undecodable byte
        tok.encode("hi \udcff")
    with pytest.raises(ValueError, match="unknown tokenizer kind 'wordpiece'"):
        tokenizer_from_json({"kind": "wordpiece"})


def test_a_character_only_the_validation_split_has_gets_an_id(tmp_path):
    # It used to stop the build with a traceback in genjax.train, also when the run reads
    # with another run's tokenizer (fine-tuning) and never uses this one.
    path = tmp_path / "new_char_at_end.txt"
    path.write_text("a" * 95 + "bbb€b", encoding="utf-8")
    builder = text_builders.prepare(str(path), tmp_path / "tfds")
    tok = load_tokenizer(os.path.join(builder.data_dir, text_builders.TOKENIZER_FILE))
    assert tok.vocab == ["a", "b", "€"]
    assert tok.decode(tok.encode(text_builders.read_split(builder, "validation"))) == \
        ("a" * 95 + "bbb€b")[90:]


# ----------------------------------------------------------------------- text files
def test_a_text_file_builds_and_splits_90_10(text_file, tmp_path):
    text = text_file.read_text(encoding="utf-8")
    builder = text_builders.prepare(str(text_file), tmp_path / "tfds")
    assert text_builders.read_split(builder, "train") == text[:900]
    assert text_builders.read_split(builder, "validation") == text[900:]
    assert text_builders.prepare(str(text_file), tmp_path / "tfds").data_dir == builder.data_dir

    other = tmp_path / "other" / "tiny.txt"  # same name, different content: no collision
    other.parent.mkdir()
    other.write_text(text[::-1], encoding="utf-8")
    assert text_builders.prepare(str(other), tmp_path / "tfds").data_dir != builder.data_dir


def test_a_missing_text_file_is_named(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        LMData(data_cfg(tmp_path, "text", missing), seq_len=SEQ, global_batch_size=BATCH, seed=0)


def test_config_picks_the_dataset():
    assert dataset_source(data_cfg("", "shakespeare")) == "shakespeare"
    assert dataset_source(data_cfg("", "shakespeare", "my.txt")) == "my.txt"
    with pytest.raises(ValueError, match="text_file"):
        dataset_source(data_cfg("", "text"))


# ----------------------------------------------------------------------- training windows
def test_same_seed_same_batches(lm, data_dir):
    again = LMData(data_cfg(data_dir), seq_len=SEQ, global_batch_size=BATCH, seed=0)
    other = LMData(data_cfg(data_dir), seq_len=SEQ, global_batch_size=BATCH, seed=1)
    a, b, c = (take(d.train_iterator(), 3) for d in (lm, again, other))
    assert a[0].shape == (BATCH, SEQ + 1) and a[0].dtype == np.int32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


SUBPROCESS = """
import hashlib, sys
from ml_collections import ConfigDict
from genjax.data.lm_loader import LMData
cfg = ConfigDict(dict(name="shakespeare", text_file="", data_dir=sys.argv[1], tokenizer="char"))
it = LMData(cfg, seq_len=%d, global_batch_size=%d, seed=0).train_iterator()
print(hashlib.sha256(b"".join(next(it)["tokens"].tobytes() for _ in range(3))).hexdigest())
""" % (SEQ, BATCH)


@pytest.mark.slow
def test_same_seed_same_batches_in_another_process(lm, data_dir):
    out = subprocess.run([sys.executable, "-c", SUBPROCESS, data_dir], capture_output=True,
                         text=True, timeout=120, env=dict(os.environ, PYTHONHASHSEED="123"))
    assert out.returncode == 0, out.stderr[-2000:]
    here = hashlib.sha256(b"".join(t.tobytes() for t in take(lm.train_iterator(), 3)))
    assert out.stdout.split()[-1] == here.hexdigest()


def test_resume_mid_epoch_continues_the_same_stream(lm):
    it = lm.train_iterator()
    take(it, 3)
    state = json.loads(json.dumps(it.get_state()))
    expected = take(it, 4)
    resumed = lm.train_iterator()
    resumed.set_state(state)
    np.testing.assert_array_equal(take(resumed, 4), expected)


@pytest.mark.parametrize("change", [{"seed": 1}, {"global_batch_size": BATCH // 2},
                                    {"seq_len": SEQ // 2}])
def test_a_position_saved_under_other_settings_is_one_line_and_a_bare_one_still_resumes(
        lm, data_dir, change):
    """Batch k of another seed, batch or window length is another batch: resuming there
    would silently train on another stream. A checkpoint from before the settings were
    recorded (grain's bare {"next_index": k}) resumes as it did."""
    it = lm.train_iterator()
    take(it, 3)
    state = json.loads(json.dumps(it.get_state()))
    expected = take(it, 2)
    kw = {"seq_len": SEQ, "global_batch_size": BATCH, "seed": 0, **change}
    other = LMData(data_cfg(data_dir), **kw).train_iterator()
    with pytest.raises(UserError, match=f"another stream .*{next(iter(change))} "):
        other.set_state(state)
    bare = lm.train_iterator()
    bare.set_state({"next_index": state["next_index"]})
    np.testing.assert_array_equal(take(bare, 2), expected)


def test_the_per_document_eval_maps_unknown_characters_as_the_splits_do(tmp_path):
    """A fine-tuning text with characters its source's tokenizer lacks: with
    data.unknown_char the splits and the per-document likelihood windows both map them
    (the latter used to raise a bare ValueError); without it both are one UserError."""
    path = tmp_path / "new.txt"
    path.write_text("abc xyz\n" * 40, encoding="utf-8")
    tok = CharTokenizer("abc \n")
    cfg = data_cfg(tmp_path, "text", path)
    cfg.unknown_char = "a"
    data = LMData(cfg, seq_len=4, global_batch_size=2, seed=0, tokenizer=tok)
    (name, chars, batches, _), = data.document_eval_batches("validation", 2, 1)
    rows = next(iter(batches))["tokens"]
    assert tok.decode(rows[0]) == tok.decode(data.tokens("validation")[:5])
    assert set(tok.decode(data.tokens("validation"))) <= set("abc \n")
    cfg.unknown_char = ""
    data = LMData(cfg, seq_len=4, global_batch_size=2, seed=0, tokenizer=tok)
    with pytest.raises(UserError, match="validation document .*'x'.*data.unknown_char"):
        list(data.document_eval_batches("validation", 2, 1))


def test_each_epoch_is_every_window_once_in_a_fresh_order(tmp_path):
    distinct = "".join(chr(0x100 + i) for i in range(108))  # token id = position in train
    path = tmp_path / "distinct.txt"
    path.write_text(distinct + distinct[:12], encoding="utf-8")  # 108 train, 12 validation
    data = LMData(data_cfg(tmp_path, "text", path), seq_len=4, global_batch_size=4, seed=0)
    tokens = data.tokens("train")
    n = len(tokens) - 4  # 104 windows, 26 batches per epoch
    rows = np.concatenate(take(data.train_iterator(), 2 * n // 4))
    starts = rows[:, 0]
    for s, row in zip(starts, rows):
        np.testing.assert_array_equal(row, tokens[s:s + 5])
    epoch1, epoch2 = starts[:n], starts[n:]
    assert sorted(epoch1) == sorted(epoch2) == list(range(n))
    assert list(epoch1) != list(epoch2)


def test_two_processes_get_disjoint_halves_of_each_global_batch(lm, data_dir):
    halves = [take(LMData(data_cfg(data_dir), seq_len=SEQ, global_batch_size=BATCH, seed=0,
                          process_index=i, process_count=2).train_iterator(), 3)
              for i in range(2)]
    full = take(lm.train_iterator(), 3)
    for step in range(3):
        p0, p1 = ({r.tobytes() for r in h[step]} for h in halves)
        assert halves[0][step].shape == (BATCH // 2, SEQ + 1)
        assert not p0 & p1
        assert p0 | p1 == {r.tobytes() for r in full[step]}


# ----------------------------------------------------------------------- evaluation
@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_batches_cover_every_token_once(data_dir, process_count):
    seq, batch = 256, 64
    shards = [LMData(data_cfg(data_dir), seq_len=seq, global_batch_size=batch, seed=0,
                     process_index=i, process_count=process_count)
              for i in range(process_count)]
    tokens = shards[0].tokens("validation")
    per_process = [list(d.eval_batches("validation", batch)) for d in shards]
    assert len({len(p) for p in per_process}) == 1
    targets, inputs = [], []
    for step in range(len(per_process[0])):
        for p in per_process:  # process 0's rows come first in a global batch
            b = p[step]
            assert b["tokens"].shape == (batch // process_count, seq + 1)
            assert b["mask"].shape == (batch // process_count, seq)
            targets.append(b["tokens"][:, 1:][b["mask"] > 0])
            inputs.append(b["tokens"][:, 0][b["mask"][:, 0] > 0])
    np.testing.assert_array_equal(np.concatenate(targets), tokens[1:])
    np.testing.assert_array_equal(np.concatenate(inputs), tokens[:-1:seq])
    assert len(list(shards[0].eval_batches("validation", batch, max_batches=2))) == 2


def test_a_periodic_eval_of_a_few_batches_spreads_its_windows_over_the_split():
    """10 windows of 4 tokens over 100 windows' worth of ids 0..400: starts 0, 44, 88, ...
    up to the last window's 396, not the split's first 40 tokens; whole windows, in
    order; with enough batches, every window as before."""
    tokens = np.arange(401, dtype=np.int32)
    rows = [b["tokens"] for b in eval_windows(tokens, 4, 5, max_batches=2)]
    starts = np.concatenate(rows)[:, 0]
    np.testing.assert_array_equal(starts, 4 * np.round(np.linspace(0, 99, 10)).astype(int))
    for row in np.concatenate(rows):
        np.testing.assert_array_equal(row, np.arange(row[0], row[0] + 5))
    whole = np.concatenate([b["tokens"] for b in eval_windows(tokens, 4, 5, max_batches=20)])
    np.testing.assert_array_equal(whole[:, 0], np.arange(0, 400, 4))


def test_card_describes_the_data(lm):
    card = lm.card
    assert card["dataset"] == "genjax_shakespeare/1.1.0"
    assert card["vocab_size"] == lm.tokenizer.vocab_size == len(set(lm.text("train")))
    assert card["splits"]["train"]["tokens"] == lm.num_tokens("train") > 3_000_000
    assert set(card["prep_report"]["stages"]) == {n for n, _ in shakespeare.STAGES}
    assert lm.meta()["tokenizer"] == lm.tokenizer.to_json()
