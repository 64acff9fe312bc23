"""experiments/bench/lm_step_profile.py finds the thunks that run matmuls in compiled HLO:
the roofline it prints (matmul GFLOP/s, step time outside matmuls) rests on that set."""
import re

import jax
import jax.numpy as jnp

from experiments.bench.lm_step_profile import matmul_instructions

HLO = """HloModule m

%inner (p0: f32[4,4], p1: f32[4,4]) -> f32[4,4] {
  %p0 = f32[4,4]{1,0} parameter(0)
  %p1 = f32[4,4]{1,0} parameter(1)
  ROOT %dot.7 = f32[4,4]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%outer (q0: f32[4,4], q1: f32[4,4]) -> f32[4,4] {
  %q0 = f32[4,4]{1,0} parameter(0)
  %q1 = f32[4,4]{1,0} parameter(1)
  ROOT %nested = f32[4,4]{1,0} fusion(%q0, %q1), kind=kOutput, calls=%inner
}

%elementwise (r0: f32[4,4]) -> f32[4,4] {
  %r0 = f32[4,4]{1,0} parameter(0)
  ROOT %tanh.1 = f32[4,4]{1,0} tanh(%r0)
}

ENTRY %main (a: f32[4,4], b: f32[4,4]) -> f32[4,4] {
  %a = f32[4,4]{1,0} parameter(0)
  %b = f32[4,4]{1,0} parameter(1)
  %ynn_fusion.3 = f32[4,4]{1,0} fusion(%a, %b), kind=kCustom, calls=%outer
  %tanh_fusion = f32[4,4]{1,0} fusion(%ynn_fusion.3), kind=kLoop, calls=%elementwise
  ROOT %dot.2 = f32[4,4]{1,0} dot(%tanh_fusion, %b), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}
"""


def _entry_names(hlo: str) -> set[str]:
    entry = hlo[hlo.index("ENTRY"):]
    return set(re.findall(r"^\s*(?:ROOT )?%([\w.\-]+) = ", entry, re.M))


def test_a_fusion_is_a_matmul_when_a_computation_it_calls_holds_a_dot():
    found = matmul_instructions(HLO) & _entry_names(HLO)
    assert found == {"ynn_fusion.3", "dot.2"}  # not the tanh fusion nor the parameters


def test_compiled_step_with_two_dots_has_two_matmul_thunks():
    def f(a, b, c):
        return jnp.tanh(a @ b) @ c + 1.0

    x = jnp.ones((64, 64), jnp.float32)
    hlo = jax.jit(f).lower(x, x, x).compile().as_text()
    assert len(matmul_instructions(hlo) & _entry_names(hlo)) == 2
