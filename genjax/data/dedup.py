"""Finding repeated and leaked lines, in numpy (no dependency beyond it).

  exact_duplicates(lines, eligible)           later copies of a line (hash of its normal form)
  near_duplicates(lines, eligible, threshold) MinHash + LSH over character shingles, then the
                                              exact Jaccard similarity of every candidate pair
  contaminated_lines(lines, reference, n)     lines covered by a word n-gram of `reference`

Lines are compared in their normal form (`normal_form`: case-folded, whitespace collapsed).
A line is removed only when an *earlier kept* line matches it, so the first occurrence
always survives and every removal names the line it duplicates. Hashes are fixed (blake2b,
64-bit arithmetic with fixed seeds): the same corpus gives the same result in any process,
whatever PYTHONHASHSEED is.
"""
from __future__ import annotations

import hashlib
import re
from typing import Sequence

import numpy as np

SHINGLE = 5          # characters per shingle (near_duplicates)
NUM_PERM = 64        # MinHash hash functions; LSH uses bands * rows of them
RECALL_AT_THRESHOLD = 0.99  # LSH bands: a pair at the threshold is a candidate this often
MAX_BUCKET_PAIRS = 64  # larger LSH buckets compare each member only to the bucket's first ones
_PRIME = np.uint64(1_000_003)
_WORD = re.compile(r"\w+")


def normal_form(line: str) -> str:
    return " ".join(line.casefold().split())


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: well-spread 64-bit hashes from polynomial ones (wraps mod 2^64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _window_hashes(ids: np.ndarray, lengths: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every run of k consecutive ids inside each segment of `ids` (segments of
    `lengths`, none crossing into the next) and the segment each run belongs to."""
    n_windows = np.maximum(lengths - k + 1, 0)
    owner = np.repeat(np.arange(len(lengths)), n_windows)
    seg_start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    win_start = np.concatenate([[0], np.cumsum(n_windows)[:-1]]).astype(np.int64)
    pos = seg_start[owner] + (np.arange(len(owner)) - win_start[owner])
    h = np.zeros(len(owner), np.uint64)
    ids = ids.astype(np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):
            h = h * _PRIME + ids[pos + j] + np.uint64(1)
        return _mix(h), owner


# ----------------------------------------------------------------------- exact
def exact_duplicates(lines: Sequence[str], eligible: np.ndarray) -> dict[int, int]:
    """{later line: first line} for eligible lines whose normal forms are equal."""
    first: dict[bytes, int] = {}
    dups = {}
    for i in np.flatnonzero(eligible):
        key = hashlib.blake2b(normal_form(lines[i]).encode(), digest_size=16).digest()
        if key in first:
            dups[int(i)] = first[key]
        else:
            first[key] = int(i)
    return dups


# ----------------------------------------------------------------------- near
def lsh_bands(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows): the most rows per band (fewest false candidates) such that a pair with
    Jaccard == threshold shares a bucket in at least one band with RECALL_AT_THRESHOLD."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1 - (1 - threshold ** rows) ** bands >= RECALL_AT_THRESHOLD:
            best = (bands, rows)
    return best


def minhash(hashes: np.ndarray, owner: np.ndarray, num_lines: int,
            num_perm: int = NUM_PERM, seed: int = 0) -> np.ndarray:
    """uint64[num_perm, num_lines] MinHash signatures; a line without shingles gets 2^64-1.

    Hash function p is multiply-shift on the mixed shingle hash: (a_p * h + b_p) >> 32.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2 ** 63, num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2 ** 63, num_perm, dtype=np.uint64)
    sig = np.full((num_perm, num_lines), np.iinfo(np.uint64).max, np.uint64)
    if not len(hashes):
        return sig
    starts = np.flatnonzero(np.concatenate([[True], owner[1:] != owner[:-1]]))  # owner sorted
    lines = owner[starts]
    with np.errstate(over="ignore"):
        for p in range(num_perm):
            v = (a[p] * hashes + b[p]) >> np.uint64(32)
            sig[p, lines] = np.minimum.reduceat(v, starts)
    return sig


def _candidate_pairs(sig: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """(earlier, later) column pairs that agree on all rows of at least one band."""
    pairs: set[tuple[int, int]] = set()
    n = sig.shape[1]
    for band in range(bands):
        key = np.zeros(n, np.uint64)  # 64-bit hash of the band (a collision is verified away)
        with np.errstate(over="ignore"):
            for row in sig[band * rows:(band + 1) * rows]:
                key = _mix(key * _PRIME + row)
        order = np.argsort(key, kind="stable")
        same = key[order][1:] == key[order][:-1]
        if not same.any():
            continue
        starts = np.flatnonzero(np.concatenate([[True], ~same]))
        sizes = np.diff(np.concatenate([starts, [n]]))
        for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
            members = sorted(order[start:start + size].tolist())
            for j in range(1, len(members)):
                for i in range(min(j, MAX_BUCKET_PAIRS)):
                    pairs.add((members[i], members[j]))
    return pairs


def near_duplicates(lines: Sequence[str], eligible: np.ndarray, threshold: float,
                    *, shingle: int = SHINGLE, num_perm: int = NUM_PERM
                    ) -> dict[int, tuple[int, float]]:
    """{later line: (earlier kept line, Jaccard)} for eligible lines whose character-shingle
    sets have Jaccard similarity >= threshold with an earlier line that is itself kept."""
    if not 0 < threshold <= 1:
        raise ValueError(f"near_dup_threshold={threshold}: must be in (0, 1]")
    idx = np.flatnonzero(eligible)
    texts = [normal_form(lines[i]) for i in idx]
    codes = np.frombuffer("".join(texts).encode("utf-32-le"), np.uint32)
    lengths = np.array([len(t) for t in texts], np.int64)
    hashes, owner = _window_hashes(codes, lengths, shingle)
    if not owner.size:  # no eligible line is a shingle long: nothing to compare
        return {}
    sig = minhash(hashes, owner, len(texts), num_perm)
    bands, rows = lsh_bands(threshold, num_perm)
    cols = owner[np.flatnonzero(np.concatenate([[True], owner[1:] != owner[:-1]]))]
    # ^ the lines with at least one shingle (owner is sorted)
    bounds = np.searchsorted(owner, np.arange(len(texts) + 1))
    sets: dict[int, set] = {}

    def shingles(i: int) -> set:
        if i not in sets:
            sets[i] = set(hashes[bounds[i]:bounds[i + 1]].tolist())
        return sets[i]

    partners: dict[int, list[int]] = {}
    for i, j in _candidate_pairs(sig[:, cols], bands, rows):
        partners.setdefault(int(cols[j]), []).append(int(cols[i]))
    removed: dict[int, tuple[int, float]] = {}
    for j in sorted(partners):
        for i in sorted(partners[j]):
            if i in removed:
                continue  # only a kept line can make another redundant
            a, b = shingles(i), shingles(j)
            jaccard = len(a & b) / len(a | b)
            if jaccard >= threshold:
                removed[j] = (i, jaccard)
                break
    return {int(idx[j]): (int(idx[i]), s) for j, (i, s) in removed.items()}


# ----------------------------------------------------------------------- contamination
def _word_ids(texts: Sequence[str], vocab: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    ids, lengths = [], []
    for t in texts:
        words = _WORD.findall(t.casefold())
        ids += [vocab.setdefault(w, len(vocab)) for w in words]
        lengths.append(len(words))
    return np.array(ids, np.int64), np.array(lengths, np.int64)


def contaminated_lines(lines: Sequence[str], reference: Sequence[str], n: int
                       ) -> tuple[np.ndarray, list[str]]:
    """(bool[len(lines)]: line shares a word of a matched n-gram, the matched n-grams).

    Words are `\\w+` runs, case-folded. `lines` are one stream of words, so an n-gram may span
    several short lines (verse); each reference text is a separate stream.
    """
    if n < 1:
        raise ValueError(f"decontam_ngram={n}: must be >= 1")
    vocab: dict[str, int] = {}
    ref_ids, ref_lengths = _word_ids(reference, vocab)
    ref_hashes, _ = _window_hashes(ref_ids, ref_lengths, n)
    ids, per_line = _word_ids(lines, vocab)
    hashes, _ = _window_hashes(ids, np.array([len(ids)]), n)
    hits = np.flatnonzero(np.isin(hashes, ref_hashes))
    covered = np.zeros(len(ids) + 1, np.int64)
    np.add.at(covered, hits, 1)
    np.add.at(covered, hits + n, -1)
    word_hit = np.cumsum(covered)[:len(ids)] > 0
    word_line = np.repeat(np.arange(len(lines)), per_line)
    mask = np.zeros(len(lines), bool)
    mask[word_line[word_hit]] = True
    words = {v: k for k, v in vocab.items()} if len(hits) else {}
    grams = [" ".join(words[w] for w in ids[h:h + n].tolist()) for h in hits[:5]]
    return mask, grams
