"""Several processes agree on one stop step after a SIGTERM (genjax/preemption.py), for
every order in which their step boundaries can interleave: at its boundary of step k a
process has read step k - 2's metrics, so the others have dispatched step k - 2, but may
not have reached their own boundary of it (up to two boundaries behind)."""
import random
from types import SimpleNamespace

import pytest

from genjax import preemption


class FakeStore:
    """jax.distributed's key-value store: set once, list a directory."""

    def __init__(self):
        self.kv = {}

    def key_value_set(self, key, value):
        if key in self.kv:
            raise RuntimeError(f"ALREADY_EXISTS: {key}")
        self.kv[key] = value

    def key_value_dir_get(self, prefix):
        return [(k, v) for k, v in self.kv.items() if k.startswith(prefix)]


def _processes(monkeypatch, n, total):
    store, me = FakeStore(), [0]
    monkeypatch.setattr(preemption, "jax", SimpleNamespace(process_index=lambda: me[0],
                                                           process_count=lambda: n))
    monkeypatch.setattr(preemption, "_client", lambda: store)
    loops = preemption._loops
    stops = []
    for _ in range(n):  # each process makes its first StopStep
        preemption._loops = loops
        stops.append(preemption.StopStep(total))
    return stops, me


def _run(stops, me, signalled_at, rng, total):
    """Boundaries in a random order allowed by the lockstep; the step each process stops
    at (total: it ran to the end)."""
    n = len(stops)
    boundary, stopped = [1] * n, [None] * n
    while any(s is None for s in stopped):
        ready = [p for p in range(n) if stopped[p] is None and
                 all(boundary[p] <= boundary[q] + 2 for q in range(n) if stopped[q] is None)]
        p = rng.choice(ready)
        me[0], k = p, boundary[p]
        if stops[p].should_stop(k, signalled=signalled_at[p] is not None and k >= signalled_at[p]):
            stopped[p] = k
        elif k == total:
            stops[p].finished(k)
            stopped[p] = total
        boundary[p] += 1
    return stopped


@pytest.mark.parametrize("n", [2, 3])
def test_every_interleaving_stops_every_process_at_one_step(monkeypatch, n):
    rng, total = random.Random(0), 30
    for trial in range(300):
        stops, me = _processes(monkeypatch, n, total)
        signalled_at = [rng.choice([None, rng.randint(1, total)]) for _ in range(n)]
        if all(s is None for s in signalled_at):
            signalled_at[0] = rng.randint(1, total)
        stopped = _run(stops, me, signalled_at, rng, total)
        assert len(set(stopped)) == 1, (trial, signalled_at, stopped)
        first = min(s for s in signalled_at if s is not None)
        assert stopped[0] == total or first < stopped[0] <= first + 2 * preemption.MARGIN


def test_a_second_loop_of_the_same_job_has_its_own_keys(monkeypatch):
    """train() called twice in one multi-process job: the first loop's posts neither
    collide with the second's nor decide its stop step."""
    stops, me = _processes(monkeypatch, 2, total=10)
    assert _run(stops, me, [3, None], random.Random(1), 10)[0] < 10
    again = [preemption.StopStep(10), None]
    preemption._loops -= 1
    again[1] = preemption.StopStep(10)
    assert _run(again, me, [None, None], random.Random(2), 10) == [10, 10]
