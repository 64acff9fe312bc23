"""One stop step for every process after any of them is told to stop (SIGTERM).

A single process stops at the step boundary after its signal. Several processes must
checkpoint the same step (orbax saves collectively) and leave the loop together: one that
stopped alone would leave the others waiting in the next step's collective forever, and
none may wait for another's answer either (that one may need this one's next step to get
to its own boundary). So, through jax.distributed's key-value store, without blocking:
  * the signalled process posts a request;
  * at each step boundary every process looks for one, and the first time it sees it
    posts the step it is at (a process that ends the loop posts its last step too);
  * once all have posted, each stops at max(posts) + 3, or runs to the end if that is
    past total_steps.
No process can be past that step when it sees the last post. At its boundary of step k a
process has read the metrics of step k - 2 (k - 1's are read after the check), so every
other process has dispatched step k - 2, but maybe not reached its own boundary of it: a
process can be two boundaries past another's, so it sees that one's post (made at its
boundary m, having dispatched m) at its boundary m + 3 at the latest.
One or two store reads per process per step boundary; none in a single process. Each
loop of the job (train may be called more than once) has its own keys.
"""
from __future__ import annotations

import jax

MARGIN = 3  # steps past the last post (see above)
_loops = 0  # StopSteps made in this process: every process makes them in the same order


def _client():
    """jax.distributed's client (None when the run is one process)."""
    if jax.process_count() == 1:
        return None
    from jax._src import distributed
    return distributed.global_state.client


class StopStep:
    """`should_stop(step, signalled)` is True at the same step on every process."""

    def __init__(self, total_steps: int):
        global _loops
        _loops += 1
        self._request = f"genjax/preempt/{_loops}/request/"
        self._at = f"genjax/preempt/{_loops}/at/"
        self.client, self.total = _client(), int(total_steps)
        self.stop_at: int | None = None
        self._posted = False  # this process's step is in the store

    def should_stop(self, step: int, signalled: bool) -> bool:
        if self.client is None:
            return signalled
        if not self._posted:
            if signalled:
                self.client.key_value_set(f"{self._request}{jax.process_index()}", "1")
            if signalled or self.client.key_value_dir_get(self._request):
                self._post(step)
        if self._posted and self.stop_at is None:
            posts = self.client.key_value_dir_get(self._at)
            if len(posts) == jax.process_count():
                self.stop_at = max(int(v) for _, v in posts) + MARGIN
        return self.stop_at is not None and self.stop_at < self.total and step >= self.stop_at

    def finished(self, step: int) -> None:
        """The loop ended at `step`: a stop agreed on now resolves to the end of the run."""
        if self.client is not None and not self._posted:
            self._post(step)

    def _post(self, step: int) -> None:
        self.client.key_value_set(f"{self._at}{jax.process_index()}", str(int(step)))
        self._posted = True
