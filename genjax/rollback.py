"""on_nan = "rollback": which batches of the data stream a run has drawn and discards.

Every batch the loop takes from the data iterator gets an ordinal (0, 1, 2, ...). When
training goes bad (non-finite parameters, or `max_consecutive_skips` skipped updates in
a row) the loop restores the newest checkpoint *before* the bad steps and marks those
steps' batch ordinals bad; after that, a bad ordinal is drawn and thrown away, so the run
continues on the following batches. The book is saved in every checkpoint's meta, so a
resumed run discards exactly the same batches.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

from genjax import faults
from genjax.errors import NonFinite, warn  # noqa: F401  (NonFinite: re-exported)


@dataclasses.dataclass
class BatchBook:
    drawn: int = 0                                  # batches taken from the iterator
    bad: set[int] = dataclasses.field(default_factory=set)  # ordinals thrown away
    rollbacks: int = 0                              # rollbacks so far in this run
    ordinal_of: dict[int, int] = dataclasses.field(default_factory=dict)  # recent step -> ordinal

    @classmethod
    def from_meta(cls, meta: dict | None, step: int) -> "BatchBook":
        """The book saved with a checkpoint of `step` (older checkpoints: `step` drawn)."""
        saved = (meta or {}).get("batches") or {}
        book = cls(drawn=int(saved.get("drawn", step)), bad=set(saved.get("bad", ())),
                   rollbacks=int(saved.get("rollbacks", 0)),
                   ordinal_of={int(s): int(o) for s, o in saved.get("recent", ())})
        book.bad |= faults.dropped()
        return book

    def to_meta(self) -> dict[str, Any]:
        """JSON for the checkpoint's meta; "recent": [step, ordinal] of the last steps, so
        that a run of skipped updates that spans a save still finds its first batches."""
        return {"drawn": self.drawn, "bad": sorted(self.bad), "rollbacks": self.rollbacks,
                "recent": sorted([s, o] for s, o in self.ordinal_of.items())}

    def draw(self, iterator: Iterator, step: int, keep_last: int) -> tuple[int, Any]:
        """(ordinal, batch) for `step`: the next batch that is not marked bad."""
        while True:
            ordinal, batch = self.drawn, next(iterator)
            self.drawn += 1
            if ordinal not in self.bad:
                break
        self.ordinal_of[step] = ordinal
        self.ordinal_of.pop(step - keep_last, None)
        return ordinal, batch

    def mark_bad(self, first_step: int, last_step: int) -> list[int]:
        """Marks the batches of steps [first_step, last_step]; returns their ordinals."""
        ordinals = [self.ordinal_of[s] for s in range(first_step, last_step + 1)
                    if s in self.ordinal_of]
        self.bad.update(ordinals)
        return ordinals

    def rolled_back_to(self, saved: "BatchBook") -> "BatchBook":
        """The book after restoring a checkpoint whose book was `saved`: its position,
        the bad batches known now, one more rollback."""
        return BatchBook(drawn=saved.drawn, bad=self.bad | saved.bad,
                         rollbacks=self.rollbacks + 1, ordinal_of=dict(saved.ordinal_of))


def roll_back(bad: NonFinite, *, config, ckpt, abstract_state, book: BatchBook,
              train_iter, writer) -> tuple[Any, BatchBook, int]:
    """on_nan=rollback: restores the newest checkpoint before the bad steps, marks their
    batches bad (never trained on again) and returns (state, book, restored step).
    on_nan=halt re-raises `bad`; too many rollbacks or no older checkpoint end the run."""
    if config.on_nan != "rollback":
        raise bad
    if book.rollbacks >= config.max_rollbacks:
        raise FloatingPointError(f"{bad} after {book.rollbacks} rollbacks "
                                 f"(config.max_rollbacks)")
    ordinals = book.mark_bad(bad.first, bad.last)
    target = ckpt.rollback_to(bad.first)
    if target is None:
        raise FloatingPointError(f"{bad}; no checkpoint before step {bad.first} to "
                                 f"roll back to")
    state, data_state, saved_meta = ckpt.restore(target, abstract_state)
    train_iter.set_state(data_state)
    book = book.rolled_back_to(BatchBook.from_meta(saved_meta, target))
    msg = (f"{bad}; rolled back to step {target}, skipping batches {ordinals} "
           f"(rollback {book.rollbacks}/{config.max_rollbacks})")
    warn(msg)
    writer.write(target, {"rollback/to_step": target, "rollback/count": book.rollbacks})
    return state, book, target
