r"""What XLA:CPU's gradient all-reduce costs by number of buffers: the `cpu` LM's 812,160
float32 gradients summed over 2 devices as 1, 4, 12, 35 (the model's leaves) or 70 buffers.

  XLA_FLAGS=--xla_force_host_platform_device_count=2 \
      python -m experiments.bench.cpu_allreduce --out=allreduce.json

XLA combines a step's all-reduces into one over a tuple of buffers, and the in-process CPU
collective then meets the other device once per buffer, so the time grows with the count
of buffers, not with bytes. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from experiments.bench import report


def time_psum(num_buffers: int, total: int, repeats: int) -> float:
    """ms per call of a jitted psum of `num_buffers` float32 buffers (`total` elements)."""
    n = jax.device_count()
    mesh = jax.make_mesh((n,), ("d",))
    xs = [jax.device_put(jnp.ones((n, total // num_buffers)), NamedSharding(mesh, P("d")))
          for _ in range(num_buffers)]
    f = jax.jit(jax.shard_map(lambda *a: jax.lax.psum(a, "d"), mesh=mesh,
                              in_specs=P("d"), out_specs=P("d")))
    jax.block_until_ready(f(*xs))
    t0 = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(f(*xs))
    return (time.perf_counter() - t0) / repeats * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--elements", type=int, default=812_160)
    p.add_argument("--buffers", default="1,4,12,35,70")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--out", default="cpu_allreduce.json")
    args = p.parse_args(argv)
    if jax.device_count() < 2:
        print("cpu_allreduce: needs >= 2 devices: set XLA_FLAGS="
              "--xla_force_host_platform_device_count=2", file=sys.stderr)
        return 2
    rows = [{"buffers": b, "ms": time_psum(b, args.elements, args.repeats)}
            for b in (int(x) for x in args.buffers.split(","))]
    print(f"{'buffers':>7} | {'ms':>6} | us per buffer")
    for r in rows:
        print(f"{r['buffers']:>7} | {r['ms']:6.2f} | {1e3 * r['ms'] / r['buffers']:.0f}")
    result = {"elements": args.elements, "devices": jax.device_count(),
              "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__,
              "rows": rows, "slope_us_per_buffer": float(1e3 * np.polyfit(
                  [r["buffers"] for r in rows], [r["ms"] for r in rows], 1)[0])}
    print(f"slope: {result['slope_us_per_buffer']:.0f} us per extra buffer")
    report.write_json(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
