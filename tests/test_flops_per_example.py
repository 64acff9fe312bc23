"""Model FLOPs per example (the MFU numerator, genjax/step_log.py) against an independent
count: the matrix-multiply FLOPs in the jaxpr of each family's jitted train step on its tiny
config (2 M N K per dot_general; a scan's body times its length; a while loop, i.e. decoding,
not counted). The 6N-per-token rule is exact for dots, so the two agree to rounding for the
families that decode nothing."""
import jax
import numpy as np
import pytest
from jax.extend import core as jcore

from genjax import assemble
from tests.test_families import build, random_batch


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for x in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(x, jcore.ClosedJaxpr):
                yield x.jaxpr
            elif isinstance(x, jcore.Jaxpr):
                yield x


def dot_flops(jaxpr) -> int:
    """2 M N K summed over the dot_generals of `jaxpr` and the jaxprs inside it (module doc)."""
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs, out = eqn.invars[0].aval, eqn.outvars[0].aval
            total += 2 * int(np.prod([lhs.shape[i] for i in contract])) * int(np.prod(out.shape))
        elif name == "scan":
            total += eqn.params["length"] * sum(dot_flops(j) for j in _sub_jaxprs(eqn))
        elif name == "cond":
            total += max(dot_flops(b.jaxpr) for b in eqn.params["branches"])
        elif name != "while":
            total += sum(dot_flops(j) for j in _sub_jaxprs(eqn))
    return total


def step_dot_flops(spec: str):
    """(dot FLOPs of one train step's jaxpr, flops_per_example x batch_size, parts)."""
    parts = build(spec)
    batch = assemble.shard_batch(parts, random_batch(parts))
    jaxpr = jax.make_jaxpr(parts.train_step)(parts.init_state(), batch).jaxpr
    want = parts.family.flops_per_example(parts.config) * parts.config.batch_size
    return dot_flops(jaxpr), want, parts


@pytest.mark.parametrize("spec", ["lm", "dpo", "reward", "distill"])
def test_flops_per_example_equal_the_dot_flops_of_the_step(spec):
    """lm: 6N + attention per token; dpo: a pair's two completions through the policy
    (forward and backward) and the reference (forward); reward: a pair's two sequences;
    distill: the student trained and the teacher's forward."""
    got, want, _ = step_dot_flops(spec)
    assert got == pytest.approx(want, rel=1e-3)


@pytest.mark.parametrize("spec", ["rl", "rl+reward_model"])
def test_rl_flops_count_every_rollout_and_leave_out_only_decoding(spec):
    """rl.samples rollouts per prompt, each through the policy (forward and backward), the
    reference and the reward model (forward). The step's other dots are the decoder's
    prefill (outside its loop; decoding is not counted): the P = max_len - max_new_tokens
    prompt tokens of every rollout through the layers' kernels, 2 FLOPs per weight per
    token (the layers' kernel sizes summed from the params), plus the last position's
    logits and attention (under 1%)."""
    got, want, parts = step_dot_flops(spec)
    c = parts.config
    layers = sum(x.size for path, x in jax.tree_util.tree_flatten_with_path(
        parts.abstract_state.params)[0] if "kernel" in jax.tree_util.keystr(path))
    rollouts = int(c.batch_size) * int(c.rl.samples)
    prefill = rollouts * (int(c.model.max_len) - int(c.rl.max_new_tokens)) * 2 * layers
    assert got == pytest.approx(want + prefill, rel=1e-2), (got, want, prefill)
