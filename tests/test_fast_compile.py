"""The test session's compiler flags (tests/subproc.py: FAST_COMPILE): XLA aborts the
process on a flag its jaxlib does not know, so the suite keeps only the flags this jaxlib
accepts and runs on any jaxlib."""
import os

from tests import subproc


def test_a_flag_this_jaxlib_does_not_know_is_left_out_and_the_others_kept():
    known, unknown = "--xla_backend_optimization_level=0", "--xla_cpu_no_such_flag_in_any_jaxlib=1"
    assert subproc.accepted_flags((known, unknown)) == [known]


def test_the_session_compiles_with_the_accepted_flags():
    assert set(subproc.FAST_COMPILE.split()) <= set(subproc.FAST_COMPILE_WANTED)
    assert subproc.FAST_COMPILE in os.environ["XLA_FLAGS"]
