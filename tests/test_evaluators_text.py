"""Text evaluator metrics on strings with known answers (no model needed).

distinct-n and the repetition rate are defined in genjax/evaluators/text.py; the
memorisation search (genjax/evaluators/text_match.py) must find verbatim copies exactly,
with their source location, and never count a hash collision or unseen text.
"""
import random

import numpy as np
import pytest

from genjax.evaluators import text, text_match, words


def random_text(n: int, seed: int, alphabet: str = "abcdefghijklmnopqrstuvwxyz \n") -> str:
    rnd = random.Random(seed)
    return "".join(rnd.choice(alphabet) for _ in range(n))


# ----------------------------------------------------------------------- diversity
def test_distinct_n_of_known_strings():
    assert text.distinct_n(["a b c a b"], 1) == 3 / 5        # a, b, c of 5 words
    assert text.distinct_n(["a b c a b"], 2) == 3 / 4        # ab, bc, ca, ab
    assert text.distinct_n(["a b c a b"], 3) == 1.0          # abc, bca, cab
    assert text.distinct_n(["a b", "a b"], 1) == 0.5         # pooled over the texts
    assert text.distinct_n(["a b", "a b"], 2) == 0.5
    assert text.distinct_n(["one"], 2) == 0.0                # no bigram at all
    assert text.distinct_n(["x  y\nz"], 1) == 1.0            # whitespace-separated words


def test_repetition_rate_counts_repeats_within_a_sample_only():
    assert text.repetition_rate(["a b a b a b"], 3) == 2 / 4  # aba bab aba bab
    assert text.repetition_rate(["a b c d"], 3) == 0.0
    assert text.repetition_rate(["x y z", "x y z"], 3) == 0.0  # across samples: no repeat
    assert text.repetition_rate(["w " * 12], 2) == 10 / 11     # a loop -> near 1
    assert text.repetition_rate([""], 3) == 0.0


def test_excerpts_have_the_requested_lengths_and_come_from_the_text():
    src = random_text(1000, 3)
    pieces = text.excerpts(src, [10, 50, 200])
    assert [len(p) for p in pieces] == [10, 50, 200]
    assert all(p in src for p in pieces)
    assert pieces[0] == src[:10]                              # evenly spaced from the start


# ----------------------------------------------------------------------- memorisation
@pytest.fixture(scope="module")
def train_docs():
    return [(f"play-{i}", random_text(20_000, seed=i)) for i in range(3)]


@pytest.fixture(scope="module")
def index(train_docs):
    return text_match.SpanIndex("\n\n".join(t for _, t in train_docs))


def test_a_verbatim_copy_is_flagged_with_its_source_location(index, train_docs):
    name, doc = train_docs[1]
    offset = 12_345
    copy = doc[offset:offset + 300]
    assert text.memorised_share(index, [copy], 50) == 1.0
    assert text.memorised_share(index, [copy, "x" * 60], 50) == 251 / (251 + 11)  # windows
    assert np.isnan(text.memorised_share(index, [copy[:49]], 50))  # none to judge, not 0
    m = index.longest(["zz" + copy + "zz"], 50)             # unrelated text around it
    assert (m.length, m.query_start) == (300, 2)
    assert index.text[m.text_start:m.text_start + m.length] == copy
    where = text_match.locate(train_docs, "\n\n", m.text_start)
    assert where == {"document": name, "offset": offset, "line": doc.count("\n", 0, offset) + 1}


def test_unseen_random_text_is_not_flagged(index):
    samples = [random_text(400, seed=100 + i) for i in range(4)]
    assert text.memorised_share(index, samples, 50) == 0.0
    m = index.longest(samples, 50)
    assert m is not None and m.length < 12                  # chance overlaps only
    q = samples[m.query]
    assert q[m.query_start:m.query_start + m.length] in index.text


def test_partial_copy_share_counts_windows():
    train = random_text(5_000, seed=7)
    idx = text_match.SpanIndex(train)
    sample = train[1000:1100] + random_text(100, seed=8)    # 200 chars -> 151 windows
    share = text.memorised_share(idx, [sample], 50)
    assert share == pytest.approx(51 / 151)                 # windows starting at 0..50


def test_an_empty_sample_has_no_windows_and_no_copy():
    """A model may stop at once: "" counts no window (it crashed the hash index)."""
    train = random_text(500, seed=9)
    idx = text_match.SpanIndex(train)
    assert [len(f) for f in idx.find(["", train[:60]], 50)] == [0, 11]
    assert text.memorised_share(idx, ["", train[:60]], 50) == 1.0
    assert idx.longest([""], 50) is None


def test_longest_below_the_window_is_exact(index):
    """Binary search under k agrees with a brute-force longest common substring."""
    rnd = random.Random(0)
    for trial in range(3):
        q = random_text(60, seed=200 + trial)
        start = rnd.randrange(len(index.text) - 30)
        length = 8 + trial * 9                             # 8, 17, 26 < 50
        q = q[:20] + index.text[start:start + length] + q[20:]
        m = index.longest([q], 50)
        brute = max(L for L in range(1, len(q) + 1)
                    if any(q[i:i + L] in index.text for i in range(len(q) - L + 1)))
        assert m.length == brute >= length
        assert q[m.query_start:m.query_start + m.length] == \
            index.text[m.text_start:m.text_start + m.length]


def test_hash_collisions_never_count(monkeypatch):
    """Every window colliding with every other: only true copies may be reported."""
    train = random_text(2_000, seed=11)
    monkeypatch.setattr(text_match._Hasher, "windows",
                        lambda self, k: np.zeros(max(len(self.prefix) - k, 0), np.uint64))
    idx = text_match.SpanIndex(train)
    (found,) = idx.find([random_text(120, seed=12)], 50)
    assert (found == -1).all()
    (found,) = idx.find([train[10:70]], 50)  # within the MAX_CANDIDATES tried per window
    assert found.tolist() == list(range(10, 21))


def test_locate_maps_offsets_across_documents():
    docs = [("a", "xx\nyy"), ("b", "zzz")]
    joined = "\n\n".join(t for _, t in docs)                # "xx\nyy\n\nzzz"
    assert text_match.locate(docs, "\n\n", joined.index("yy")) == \
        {"document": "a", "offset": 3, "line": 2}
    assert text_match.locate(docs, "\n\n", joined.index("zzz") + 1) == \
        {"document": "b", "offset": 1, "line": 1}
    with pytest.raises(ValueError):
        text_match.locate(docs, "\n\n", len(joined) + 5)


def test_multibyte_characters_are_whole_characters():
    train = "héllo wörld – ünïcode " * 10
    idx = text_match.SpanIndex(train)
    m = idx.longest(["xx" + train[5:70] + "yy"], 50)
    assert (m.length, m.query_start) == (65, 2)


def test_word_share_counts_real_words_pooled_over_samples():
    vocab = words.vocabulary("Thou art a villain, O'er the hill.\nROMEO: 'Tis so.")
    assert vocab == {"thou", "art", "a", "villain", "o'er", "the", "hill", "romeo", "tis",
                     "so"}
    assert words.word_share(["Thou ART a villain"], vocab) == 1.0    # case does not matter
    assert words.word_share(["thou sas thars"], vocab) == 1 / 3       # 1 of 3 words is real
    assert words.word_share(["thou", "zz qq yy"], vocab) == 1 / 4     # pooled: 1 of 4 words
    assert words.word_share(["o'er the hill9villain"], vocab) == 1.0  # digits split words
    assert words.word_share(["", "...!"], vocab) == 0.0               # no words at all
