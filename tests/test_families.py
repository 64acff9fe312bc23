"""Shared specification of every family: the same step, jitted or not, on any mesh, and
the same loop, interrupted or not.

Golden values pin the first step's loss of each family's `tiny` config on a fixed random
batch (un-jitted, one device). Update them only when the model, loss or initialisation
changes on purpose (say so in the commit); a change from refactoring alone is a bug.
"""
import functools
import os

import jax
import numpy as np
import pytest

from genjax import assemble, sharding, train
from genjax.checkpoint import Checkpointer
from tests.families import SPECS, VARIANTS, run_config, tiny_config
from tests.subproc import losses_by_step

# family -> golden first-step loss of its tiny config, made on CPU with these versions
# (constraints.txt pins them for `make test`). Regenerate: python -m tests.test_families
GOLDEN_LOSS = {"lm": 4.174229, "diffusion": 0.996686, "vae": 6.306058, "gan": 1.919613,
               "classifier": 3.378964,
               # ln 2, independent answers: DPO policy = reference at step 0; a fresh
               # reward head scores 0
               "dpo": 0.693147, "reward": 0.693147,
               "diffusion_dpo": 0.693147, "rl": -0.421875,  # -(gold reward of the step-0 rollouts): 27 of 64 tokens
               "distill": 2.091914, "diffusion_distill": 0.028792}
# A variant's first step computes its family's loss (LoRA: B = 0 is the base model).
GOLDEN_LOSS.update({name: GOLDEN_LOSS[family] for name, (family, _) in VARIANTS.items()})
# Guidance distillation's step 0: the student is the teacher's x_c (zero-init embedding of
# g), so the loss is mean max(1, SNR_t) (g - 1)^2 |x_c - x_u|^2, derived independently from
# two teacher calls in tests/test_guidance_distill.py (same key and batch as here).
GOLDEN_LOSS["diffusion_distill+guidance"] = 0.515012
# Half the rows continued by the student's samples: a pinned value (the formula is checked
# against float64 numpy on independently decoded samples in tests/test_distill_on_policy.py).
GOLDEN_LOSS["distill+on_policy"] = 2.086005
# RL on a fresh reward model with a random head: -(its mean score of the step-0 rollouts),
# the KL being 0 at step 0; that score is reward.pair_rewards' (tests/test_rl_reward_model.py).
GOLDEN_LOSS["rl+reward_model"] = -0.011096
GOLDEN_MADE_WITH = {"jax": "0.10.2", "jaxlib": "0.10.2"}
REGENERATE = "python -m tests.test_families"


def versions() -> dict:
    import jaxlib
    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}


def golden_changed_message(family: str) -> str:
    """What the golden test says when the loss moved: by a change of code, or of versions."""
    now = versions()
    how = (f"the versions differ (now {now}): if no model, loss or initialisation "
           f"changed, regenerate GOLDEN_LOSS and GOLDEN_MADE_WITH with `{REGENERATE}`"
           if now != GOLDEN_MADE_WITH else "same versions: a code change moved it")
    return (f"golden first-step loss of {family!r} changed (made with {GOLDEN_MADE_WITH}; "
            f"{how}; see the module docstring)")




def random_batch(parts, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    example = parts.family.example_batch(parts.config, int(parts.config.batch_size))
    out = {}
    for key, x in example.items():
        if key == "tokens":
            out[key] = rng.integers(0, parts.config.model.vocab_size, x.shape, dtype=np.int32)
        elif key == "label":
            out[key] = rng.integers(0, 10, x.shape, dtype=np.int32)
        elif np.issubdtype(x.dtype, np.floating):
            out[key] = rng.uniform(-1, 1, x.shape).astype(x.dtype)
        else:
            out[key] = np.zeros_like(x)
    return out


def build(family, mesh=None):
    config = tiny_config(family, mesh)
    return assemble.assemble(config, sharding.make_mesh(config.mesh))


def eager_first_step(family: str):
    """(state, metrics) after one un-jitted step of the tiny config on random_batch."""
    parts = build(family)
    batch = assemble.shard_batch(parts, random_batch(parts))
    return assemble.unjitted_train_step(parts)(jax.device_get(parts.init_state()),
                                               jax.device_get(batch))


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(
        np.array_equal(np.asarray(jax.device_get(x)), np.asarray(jax.device_get(y)))
        for x, y in zip(la, lb))


@functools.cache
def jitted_step_on_one_device(family):
    """(state, metrics) on the host after one jitted step of the tiny config on one device
    from the fresh state on random_batch: compiled once for the two tests that need it."""
    parts = build(family)
    out = parts.train_step(parts.init_state(), assemble.shard_batch(parts, random_batch(parts)))
    return jax.device_get(out)


@pytest.mark.parametrize("family", SPECS)
def test_one_unjitted_step_gives_the_golden_loss_and_equals_the_jitted_step(family):
    eager_state, eager_metrics = eager_first_step(family)
    jit_state, jit_metrics = jitted_step_on_one_device(family)
    np.testing.assert_allclose(float(eager_metrics["loss"]), GOLDEN_LOSS[family], rtol=1e-4,
                               err_msg=golden_changed_message(family))
    for k in eager_metrics:
        np.testing.assert_allclose(float(eager_metrics[k]), float(jit_metrics[k]),
                                   rtol=1e-4, atol=1e-5, err_msg=k)
    assert jax.tree_util.tree_structure(eager_state) == jax.tree_util.tree_structure(jit_state)
    for a, b in zip(jax.tree_util.tree_leaves(eager_state), jax.tree_util.tree_leaves(jit_state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", SPECS)
def test_eight_devices_equal_one(family):
    state, m1 = jitted_step_on_one_device(family)
    p1 = state.params
    parts = build(family, dict(data=2, fsdp=2, tensor=2))
    state, metrics = parts.train_step(parts.init_state(),
                                      assemble.shard_batch(parts, random_batch(parts)))
    p8, m8 = jax.device_get((state.params, metrics))
    for k in m1:
        np.testing.assert_allclose(float(m1[k]), float(m8[k]), rtol=1e-5, atol=1e-6, err_msg=k)
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p8)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", SPECS)
def test_interrupted_run_resumes_bit_for_bit(family, tiny_run, tmp_path):
    """Stop after 3 of 6 steps, run again: every step's loss and the whole final state
    (params, optimizer, EMA, model state, RNG, data position) equal an uninterrupted run
    (tiny_run: the session's short run of the family, tests/families.py)."""
    config = run_config(family)
    ref, run = tiny_run(family), tmp_path / "run"
    train.train(config.copy_and_resolve_references(), str(run), stop_after=3)
    assert sorted(os.listdir(run / "checkpoints")) == ["3"]
    train.train(config.copy_and_resolve_references(), str(run))
    want, got = losses_by_step(ref), losses_by_step(run)
    assert sorted(want) == list(range(1, 7)) and got == want

    parts = assemble.assemble(_resolved(ref), sharding.make_mesh(config.mesh))
    states = [Checkpointer(str(d), read_only=True).restore(6, parts.abstract_state)
              for d in (ref, run)]
    (s_ref, data_ref, _), (s_run, data_run, _) = states
    assert jax.tree_util.tree_leaves(s_ref.ema_params) or not config.optim.ema_decay, \
        "EMA is part of the state"
    assert leaves_equal(s_ref, s_run)
    assert data_ref == data_run


def _resolved(workdir):
    """The config a run resolved (vocab size, channels...) from its config.json."""
    import json
    from genjax import config_lib
    c = config_lib.from_dict(json.loads((workdir / "config.json").read_text()))
    c.lock()
    return c


if __name__ == "__main__":  # prints the goldens for the installed versions (CPU)
    import tests.conftest  # noqa: F401  (the test session's environment: CPU, 8 devices)
    losses = {f: round(float(eager_first_step(f)[1]["loss"]), 6) for f in sorted(GOLDEN_LOSS)}
    print(f"GOLDEN_LOSS = {losses!r}")
    print(f"GOLDEN_MADE_WITH = {versions()!r}")
