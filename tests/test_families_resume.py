"""Shared specification of every family, continued (tests/test_families.py: the same
step): the same loop, interrupted or not. A file of its own so that pytest-xdist, which
hands out whole files, can run it beside the step's specification."""
import json
import os
import shutil

import orbax.checkpoint as ocp
import pytest

from genjax import train
from genjax.checkpoint import Checkpointer
from tests.families import SPECS, run_config
from tests.subproc import losses_by_step


@pytest.mark.parametrize("family", SPECS)
def test_interrupted_run_resumes_bit_for_bit(family, tiny_run, tmp_path):
    """A run stopped after step 3 of 6 (its workdir as the stop leaves it: config, the
    checkpoint of step 3, the metrics of steps 1-3) and run again: steps 4-6's losses and
    the whole final state (params, optimizer, EMA, model state, RNG, data position) equal
    the uninterrupted run's (tiny_run: the session's short run of the family, which
    checkpoints at steps 3 and 6, tests/families.py)."""
    config = run_config(family)
    ref, run = tiny_run(family), tmp_path / "run"
    _stopped_copy(ref, run, at=3)
    train.train(config.copy_and_resolve_references(), str(run))
    want, got = losses_by_step(ref), losses_by_step(run)
    assert sorted(want) == list(range(1, 7)) and got == want
    assert sorted(os.listdir(run / "checkpoints")) == ["3", "6"]

    (sums_ref, data_ref), (sums_run, data_run) = _saved(ref, 6), _saved(run, 6)
    assert "ema_params" in sums_ref or not config.optim.ema_decay, "EMA is part of the state"
    assert sums_run == sums_ref and data_run == data_ref
    assert _saved(ref, 3)[0]["params"] != sums_ref["params"], "the steps moved the params"


def _saved(workdir, step: int) -> tuple[dict, dict]:
    """({part of the state: {leaf: checksum}}, data position) of a checkpoint, read without
    restoring its arrays (two restores and the model to place them on cost ~2.8 s per
    spec). Each save stores per leaf two uint32 sums of its bits, plain and position-
    weighted (genjax/checkpoint_checksums.py): one changed element always changes them,
    unrelated states collide with odds ~2^-64 per leaf (seen failing: an EMA reset on
    resume, which leaves the losses alone)."""
    ckpt = Checkpointer(str(workdir), read_only=True)
    out = ckpt.manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore(),
                                                             meta=ocp.args.JsonRestore()))
    parts = {}
    for leaf, checksum in out["meta"]["checksums"].items():
        part, _, rest = leaf.partition("/")
        parts.setdefault(part, {})[rest] = tuple(checksum)
    return parts, out["data"]


def _stopped_copy(ref, run, at: int) -> None:
    """`run` as a run of `ref`'s config stopped after step `at` leaves its workdir."""
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(ref / "checkpoints" / str(at), run / "checkpoints" / str(at))
    shutil.copy(ref / "config.json", run / "config.json")
    rows = [line for line in (ref / "metrics.jsonl").read_text().splitlines()
            if json.loads(line).get("step", 0) <= at]
    (run / "metrics.jsonl").write_text("".join(r + "\n" for r in rows))
