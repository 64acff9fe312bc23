"""Exact search of generated text in a training text, with hashed k-character windows.

`SpanIndex(text)` hashes every k-window of the text with a polynomial hash mod 2^64,

    h(i, k) = sum_j c[i + j] * B^j = (P[i + k] - P[i]) * B^-i,   P[i] = sum_{j<i} c[j] B^j,

all windows at once in numpy (B is odd, so B^-1 exists mod 2^64; uint64 arithmetic
wraps, which *is* the modulus). The hashes are sorted once per k; a query window is found
by binary search, and every candidate is verified character by character, so a hash
collision can never count as a copy.

Memory for an n-character text: 20 bytes/char kept (code points, P, B^-i) plus 12
bytes/char per indexed k (sorted hashes, their positions): ~130 MB for the 4 M characters
of Shakespeare's training plays, built in about a second.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

BASE = np.uint64(0x9E3779B97F4A7C15)  # odd: invertible mod 2^64
BASE_INV = np.uint64(pow(int(BASE), -1, 2**64))
MAX_CANDIDATES = 64  # occurrences of one window tried when extending a match
BUCKETS = 1 << 20    # bitmap size of the query-side pre-filter (a power of two)


def code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), "<u4")


def _powers(base: np.uint64, n: int) -> np.ndarray:
    """base^0 .. base^(n-1) mod 2^64."""
    out = np.full(n, base, np.uint64)
    out[:1] = 1  # n = 0: an empty sample
    return np.cumprod(out, dtype=np.uint64)


class _Hasher:
    """Prefix sums of one string, for the hash of any of its windows."""

    def __init__(self, codes_N: np.ndarray):
        n = len(codes_N)
        with np.errstate(over="ignore"):
            self.prefix = np.concatenate(
                [np.zeros(1, np.uint64),
                 np.cumsum(codes_N.astype(np.uint64) * _powers(BASE, n), dtype=np.uint64)])
        self.inv = _powers(BASE_INV, n + 1)

    def windows(self, k: int) -> np.ndarray:
        """uint64 hash of every k-window: [n - k + 1] (empty if k > n)."""
        n = len(self.prefix) - 1
        if k > n:
            return np.zeros(0, np.uint64)
        with np.errstate(over="ignore"):
            return (self.prefix[k:] - self.prefix[:n - k + 1]) * self.inv[:n - k + 1]


@dataclasses.dataclass(frozen=True)
class Match:
    length: int        # characters
    query: int         # index of the query (sample) it came from
    query_start: int   # character offset in that query
    text_start: int    # character offset in the indexed text


class SpanIndex:
    """Exact k-window lookups in `text` (module docstring)."""

    def __init__(self, text: str):
        self.text = text
        self.codes = code_points(text)
        self._hasher = _Hasher(self.codes)
        self._sorted: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _table(self, k: int, keep: bool) -> tuple[np.ndarray, np.ndarray]:
        if k in self._sorted:
            return self._sorted[k]
        h = self._hasher.windows(k)
        order = np.argsort(h, kind="stable").astype(np.int32)
        table = (h[order], order)
        if keep:
            self._sorted[k] = table
        return table

    def find(self, queries: list[str], k: int, *, keep: bool = True) -> list[np.ndarray]:
        """Per query: int64[len - k + 1], for each k-window the text offset of one verbatim
        occurrence, or -1. `keep`: cache the sorted table of this k."""
        hashes, positions = self._table(k, keep)
        out = []
        for q in queries:
            qc = code_points(q)
            qh = _Hasher(qc).windows(k)
            lo = np.searchsorted(hashes, qh, side="left")
            hi = np.searchsorted(hashes, qh, side="right")
            found = np.full(len(qh), -1, np.int64)
            for i in np.flatnonzero(hi > lo):
                for p in positions[lo[i]:min(hi[i], lo[i] + MAX_CANDIDATES)]:
                    if np.array_equal(self.codes[p:p + k], qc[i:i + k]):  # no collision
                        found[i] = p
                        break
            out.append(found)
        return out

    def _extend(self, qc: np.ndarray, i: int, p: int) -> int:
        """Length of the common prefix of qc[i:] and text[p:]."""
        m = min(len(qc) - i, len(self.codes) - p)
        diff = np.flatnonzero(qc[i:i + m] != self.codes[p:p + m])
        return int(diff[0]) if len(diff) else m

    def longest(self, queries: list[str], k: int) -> Match | None:
        """The longest substring of any query that occurs verbatim in the text.

        At least k long: every left-maximal occurrence of a found k-window is extended
        (exact unless one k-window occurs more than MAX_CANDIDATES times in the text).
        Shorter: binary search on the length L < k (a length-L copy implies every shorter
        one), the k-window tables of the probed lengths are built and dropped."""
        best = None
        hashes, positions = self._table(k, keep=True)
        for qi, (q, found) in enumerate(zip(queries, self.find(queries, k))):
            qc = code_points(q)
            qh = _Hasher(qc).windows(k)
            for i in np.flatnonzero(found >= 0):
                lo = np.searchsorted(hashes, qh[i], side="left")
                hi = np.searchsorted(hashes, qh[i], side="right")
                for p in positions[lo:min(hi, lo + MAX_CANDIDATES)]:
                    p = int(p)
                    if i > 0 and p > 0 and qc[i - 1] == self.codes[p - 1]:
                        continue  # not left-maximal: the pair (i-1, p-1) covers it
                    n = self._extend(qc, int(i), p)
                    if n >= k and (best is None or n > best.length):
                        best = Match(n, qi, int(i), p)
        if best is not None:
            return best
        lo_len, hi_len, hit = 0, k - 1, None  # largest L in [1, k-1] with a copy
        while lo_len < hi_len:
            mid = (lo_len + hi_len + 1) // 2
            m = self._first(queries, mid)
            if m is None:
                hi_len = mid - 1
            else:
                lo_len, hit = mid, m
        return hit

    def _first(self, queries: list[str], k: int) -> Match | None:
        """Some verified k-long copy, or None. Sorts the (few) query hashes instead of
        the text's, so probing a length costs one pass over the text, no sort."""
        hashes = [(_Hasher(qc).windows(k), qi, qc)
                  for qi, qc in enumerate(code_points(q) for q in queries)]
        if not any(len(h) for h, _, _ in hashes):
            return None
        qh = np.concatenate([h for h, _, _ in hashes])
        owner = np.concatenate([np.full(len(h), j) for j, (h, _, _) in enumerate(hashes)])
        start = np.concatenate([np.arange(len(h)) for h, _, _ in hashes])
        order = np.argsort(qh)
        qs = qh[order]
        th = self._hasher.windows(k)
        bucket = np.zeros(BUCKETS, bool)  # a cheap pre-filter before the binary search
        bucket[qs & np.uint64(BUCKETS - 1)] = True
        maybe = np.flatnonzero(bucket[th & np.uint64(BUCKETS - 1)])
        pos = np.minimum(np.searchsorted(qs, th[maybe]), len(qs) - 1)
        equal = qs[pos] == th[maybe]
        for p, j in zip(maybe[equal], pos[equal]):
            while j < len(qs) and qs[j] == th[p]:
                _, qi, qc = hashes[owner[order[j]]]
                i = int(start[order[j]])
                if np.array_equal(self.codes[p:p + k], qc[i:i + k]):
                    return Match(k, qi, i, int(p))
                j += 1
        return None


@functools.lru_cache(maxsize=1)
def index_for(text: str) -> SpanIndex:
    """One SpanIndex per process for the last text asked (the training text)."""
    return SpanIndex(text)


def locate(documents: list[tuple[str, str]], separator: str, offset: int) -> dict:
    """Text offset in the documents joined with `separator` -> {"document", "offset",
    "line"} (line 1-based, within the document)."""
    start = 0
    for name, doc in documents:
        end = start + len(doc)
        if offset < end + len(separator):
            local = min(offset - start, len(doc))
            return {"document": name, "offset": local, "line": doc.count("\n", 0, local) + 1}
        start = end + len(separator)
    raise ValueError(f"offset {offset} is past the end of the documents")
