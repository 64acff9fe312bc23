"""Shared specification of every family: the same step, jitted or not, on any mesh (the
same loop, interrupted or not: tests/test_families_resume.py).

Golden values pin the first step's loss of each family's `tiny` config on a fixed random
batch (one device; un-jitted for the families with a model of their own, tests/families.py:
UNJITTED, jitted for the others and the variants). Update them only when the model, loss or
initialisation changes on purpose (say so in the commit); a change from refactoring alone
is a bug.
"""
import functools

import jax
import numpy as np
import pytest

from genjax import assemble, sharding
from tests.families import SPECS, UNJITTED, VARIANTS, spec_parts, tiny_config

# family -> golden first-step loss of its tiny config, made on CPU with these versions
# (constraints.txt pins them for `make test`). Regenerate: python -m tests.test_families
GOLDEN_LOSS = {"lm": 4.174229, "diffusion": 0.996686, "vae": 6.306058, "gan": 1.919613,
               "classifier": 3.378964,
               # ln 2, independent answers: DPO policy = reference at step 0; a fresh
               # reward head scores 0
               "dpo": 0.693147, "reward": 0.693147,
               # rl: -(gold reward of the step-0 rollouts): 27 of 64 tokens
               "diffusion_dpo": 0.693147, "rl": -0.421875,
               "distill": 2.091914, "diffusion_distill": 0.028792}
# A variant's first step computes its family's loss (LoRA: B = 0 is the base model).
GOLDEN_LOSS.update({name: GOLDEN_LOSS[family] for name, (family, _) in VARIANTS.items()})
# Guidance distillation's step 0: the student is the teacher's x_c (zero-init embedding of
# g), so the loss is mean max(1, SNR_t) (g - 1)^2 |x_c - x_u|^2, derived independently from
# two teacher calls in tests/test_guidance_distill.py (same key and batch as here).
GOLDEN_LOSS["diffusion_distill+guidance"] = 0.600323
# Half the rows continued by the student's samples: a pinned value (the formula is checked
# against float64 numpy on independently decoded samples in tests/test_distill_on_policy.py).
GOLDEN_LOSS["distill+on_policy"] = 2.086005
# RL on a fresh reward model with a random head: -(its mean score of the step-0 rollouts),
# the KL being 0 at step 0; that score is reward.pair_rewards' (tests/test_rl_reward_model.py).
GOLDEN_LOSS["rl+reward_model"] = -0.011096
GOLDEN_MADE_WITH = {"jax": "0.10.2", "jaxlib": "0.10.2"}
REGENERATE = "python -m tests.test_families"
# family -> (accuracy metric, the margin it thresholds). At step 0 the policy is its
# reference, so every margin is 0 up to rounding and "margin > 0" is decided by how each
# compiled program rounds (seen: 0 un-jitted, 0.125 jitted, on an AVX2 machine); the test
# checks the margin is such a tie and compares the margin, not the coin flip.
TIED_AT_STEP_0 = {"dpo": ("reward_accuracy", "reward_margin"),
                  "diffusion_dpo": ("accuracy", "inner")}


def tied_at_step_0(spec: str) -> tuple:
    """(accuracy metric, margin) of TIED_AT_STEP_0 for a family or its variant, or Nones."""
    return TIED_AT_STEP_0.get(spec_parts(spec)[0], (None, None))


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


@pytest.mark.parametrize("family", UNJITTED)
def test_one_unjitted_step_gives_the_golden_loss_and_equals_the_jitted_step(family):
    """Each model once: un-jitted, every primitive is compiled on its own (~0.04 s each on
    2 cores, hundreds per step), so the families that train one of these models under
    their own loss, and the variants, check their golden loss on the jitted step only
    (next test)."""
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


@pytest.mark.parametrize("spec", tuple(s for s in SPECS if s not in UNJITTED))
def test_a_first_jitted_step_gives_its_golden_loss(spec):
    _, metrics = jitted_step_on_one_device(spec)
    np.testing.assert_allclose(float(metrics["loss"]), GOLDEN_LOSS[spec], rtol=1e-4,
                               err_msg=golden_changed_message(spec))
    tied, margin = tied_at_step_0(spec)
    if tied:
        assert abs(float(metrics[margin])) < 1e-5 and 0.0 <= float(metrics[tied]) <= 1.0, metrics


@pytest.mark.parametrize("family", SPECS)
def test_eight_devices_equal_one(family):
    state, m1 = jitted_step_on_one_device(family)
    p1 = state.params
    parts = build(family, dict(data=2, fsdp=2, tensor=2))
    state, metrics = parts.train_step(parts.init_state(),
                                      assemble.shard_batch(parts, random_batch(parts)))
    p8, m8 = jax.device_get((state.params, metrics))
    tied, margin = tied_at_step_0(family)
    if tied:  # a tie at step 0 on both meshes; which side it rounds to is a coin flip
        assert abs(float(m8[margin])) < 1e-5 and 0.0 <= float(m8[tied]) <= 1.0, m8
    for k in m1:
        if k != tied:
            np.testing.assert_allclose(float(m1[k]), float(m8[k]), rtol=1e-5, atol=1e-6,
                                       err_msg=k)
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p8)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


if __name__ == "__main__":  # prints the goldens for the installed versions (CPU)
    import tests.conftest  # noqa: F401  (the test session's environment: CPU, 8 devices)
    losses = {f: round(float(eager_first_step(f)[1]["loss"]), 6) for f in sorted(GOLDEN_LOSS)}
    print(f"GOLDEN_LOSS = {losses!r}")
    print(f"GOLDEN_MADE_WITH = {versions()!r}")
