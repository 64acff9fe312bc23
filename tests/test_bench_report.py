"""Every bench JSON says which machine measured it (CPU model, cores, vector ISA): the
same 2-core VM size has run this project's CPU benches 2-4x apart (AVX-512 vs AVX2)."""
import json
import os

from experiments.bench import report

CPUINFO = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse2 fma avx2 bmi2
"""


def test_host_reads_model_and_widest_isa(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    assert report.host(str(path)) == {"host_cpu": "AMD EPYC", "host_cores": os.cpu_count(),
                                      "host_isa": "avx2"}
    path.write_text(CPUINFO.replace("avx2", "avx2 avx512f avx512bw"))
    assert report.host(str(path))["host_isa"] == "avx512"


def test_host_without_cpuinfo_still_names_the_machine(tmp_path):
    h = report.host(str(tmp_path / "missing"))
    assert h["host_isa"] is None and h["host_cores"] == os.cpu_count() and h["host_cpu"]


def test_write_json_adds_the_host_and_keeps_the_figures(tmp_path):
    out = tmp_path / "bench.json"
    report.write_json({"tokens_per_s": 123.0, "host_cores": 99}, str(out))
    data = json.loads(out.read_text())
    assert data["tokens_per_s"] == 123.0 and data["host_cores"] == 99  # its own keys win
    assert set(report.host()) <= set(data)
