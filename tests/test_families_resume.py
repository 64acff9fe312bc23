"""Shared specification of every family, continued (tests/test_families.py: the same
step): the same loop, interrupted or not. A file of its own so that pytest-xdist, which
hands out whole files, can run it beside the step's specification."""
import json
import os
import shutil

import jax
import pytest

from genjax import assemble, config_lib, sharding, train
from genjax.checkpoint import Checkpointer
from tests.families import SPECS, run_config
from tests.subproc import losses_by_step
from tests.test_families import leaves_equal


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

    parts = assemble.assemble(_resolved(ref), sharding.make_mesh(config.mesh))
    states = [Checkpointer(str(d), read_only=True).restore(6, parts.abstract_state)
              for d in (ref, run)]
    (s_ref, data_ref, _), (s_run, data_run, _) = states
    assert jax.tree_util.tree_leaves(s_ref.ema_params) or not config.optim.ema_decay, \
        "EMA is part of the state"
    assert leaves_equal(s_ref, s_run)
    assert data_ref == data_run


def _stopped_copy(ref, run, at: int) -> None:
    """`run` as a run of `ref`'s config stopped after step `at` leaves its workdir."""
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(ref / "checkpoints" / str(at), run / "checkpoints" / str(at))
    shutil.copy(ref / "config.json", run / "config.json")
    rows = [line for line in (ref / "metrics.jsonl").read_text().splitlines()
            if json.loads(line).get("step", 0) <= at]
    (run / "metrics.jsonl").write_text("".join(r + "\n" for r in rows))


def _resolved(workdir):
    """The config a run resolved (vocab size, channels...) from its config.json."""
    c = config_lib.from_dict(json.loads((workdir / "config.json").read_text()))
    c.lock()
    return c
