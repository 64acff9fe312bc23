"""What every bench ends with: a two-column table on stdout and its figures as JSON."""
from __future__ import annotations

import json
import os
import platform


def print_rows(rows: list[tuple[str, object]]) -> None:
    """`name | value` lines, names left-aligned to the longest."""
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}} | {v}")


def host(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The machine a figure was measured on: CPU model, cores and widest x86 vector ISA
    (VMs of one size differ 2-4x in this project's CPU benches between AVX-512 and AVX2
    hosts, so every JSON says which it was)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    isa = next((name for flag, name in (("avx512f", "avx512"), ("avx2", "avx2"))
                if flag in flags), None)
    return {"host_cpu": model, "host_cores": os.cpu_count(), "host_isa": isa}


def write_json(result: dict, path: str) -> None:
    """`result` plus `host()` (its own keys win) as indented JSON at `path`."""
    with open(path, "w") as f:
        json.dump({**host(), **result}, f, indent=2)
    print(f"wrote {path}")
