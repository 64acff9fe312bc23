"""Unreadable records: named by file and index, skipped within a budget, else an error.

config.data.max_bad_records (genjax/config_lib.py) is the budget: that many corrupt records
are skipped (each named in a warning); one more stops the run. Which records are bad
depends only on the files, so the skipping is the same in every run and every resume.
"""
from __future__ import annotations

import threading

from genjax.errors import UserError, warn


class BadRecordError(UserError):
    """More unreadable records than config.data.max_bad_records (one line, exit 2)."""


def record_file(source, split: str, index: int) -> str:
    """The file holding record `index` of a TFDS data source's `split` (and the record's
    index inside that file)."""
    first = 0
    info = getattr(source, "dataset_info", None)
    if info is None or split not in info.splits:
        return f"the {split} split of {getattr(info, 'full_name', 'the dataset')}"
    for fi in info.splits[split].file_instructions:
        n = int(fi.examples_in_shard)
        if index < first + n:
            return f"{fi.filename} (record {index - first} of that file)"
        first += n
    return f"the {split} split of {info.full_name}"


class Budget:
    """Counts distinct bad records of one dataset against `max_bad` (thread-safe)."""

    def __init__(self, max_bad: int):
        self.max_bad = int(max_bad)
        self.bad: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()

    def read(self, source, split: str, index: int):
        """source[index], or None if it cannot be read and the budget allows skipping it."""
        try:
            return source[index]
        except Exception as e:  # noqa: BLE001 - whatever the decoder raises
            where = (f"{split} record {index} in {record_file(source, split, index)}: "
                     f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            with self._lock:
                self.bad[(split, int(index))] = where
                count = len(self.bad)
            if count > self.max_bad:
                raise BadRecordError(f"unreadable {where} ({count} bad records, "
                                     f"config.data.max_bad_records={self.max_bad})") from e
            warn(f"skipping unreadable {where} ({count} of {self.max_bad} allowed)")
            return None
