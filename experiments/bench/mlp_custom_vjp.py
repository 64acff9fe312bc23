r"""The LM's MLP block (up, tanh-GELU, down) forward + backward on the CPU: JAX's own
backward vs a hand-written one (jax.custom_vjp) that hands each weight-gradient dot its
operands as they are. A measurement for the next step of the CPU-throughput goal
(README "CPU training throughput"), not code the model uses yet.

  python -m experiments.bench.mlp_custom_vjp --out=mlp_vjp.json

The `cpu` preset's shape by default (batch 6 per device x 64 tokens, d 128, hidden 512).
Prints ms per fwd+bwd for each and the largest gradient difference between them.
"""
from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp

from experiments.bench import report


def gelu(h):
    return jax.nn.gelu(h, approximate=True)


def mlp(x_BxTxD, w_up, w_down):
    return gelu(x_BxTxD @ w_up) @ w_down


@jax.custom_vjp
def mlp_hand(x_BxTxD, w_up, w_down):
    return mlp(x_BxTxD, w_up, w_down)


def _fwd(x, w_up, w_down):
    h = x.reshape(-1, x.shape[-1]) @ w_up
    return (gelu(h) @ w_down).reshape(x.shape[:-1] + w_down.shape[-1:]), (x, h, w_up, w_down)


def _bwd(res, dy):
    x, h, w_up, w_down = res
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
    a, gelu_vjp = jax.vjp(gelu, h)
    dh = gelu_vjp(dy2 @ w_down.T)[0]
    return (dh @ w_up.T).reshape(x.shape), x2.T @ dh, a.T @ dy2


mlp_hand.defvjp(_fwd, _bwd)


def time_grad(f, args, iters: int) -> tuple[float, tuple]:
    g = jax.jit(jax.grad(lambda *a: jnp.sum(f(*a) ** 2), argnums=(0, 1, 2)))
    out = jax.block_until_ready(g(*args))
    t0 = time.perf_counter()
    for _ in range(iters):
        out = g(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / iters * 1000, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--out", default="mlp_custom_vjp.json")
    args = p.parse_args(argv)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(k1, (args.batch, args.seq, args.d))
    w_up = jax.random.normal(k2, (args.d, args.hidden)) / args.d ** 0.5
    w_down = jax.random.normal(k3, (args.hidden, args.d)) / args.hidden ** 0.5
    ms_auto, g_auto = time_grad(mlp, (x, w_up, w_down), args.iters)
    ms_hand, g_hand = time_grad(mlp_hand, (x, w_up, w_down), args.iters)
    diff = max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(a)) + 1e-30))
               for a, b in zip(g_auto, g_hand))
    print(f"MLP {args.batch}x{args.seq} x {args.d}->{args.hidden}->{args.d}, fwd+bwd:")
    print(f"  jax autodiff   {ms_auto:6.2f} ms")
    print(f"  custom_vjp     {ms_hand:6.2f} ms  ({ms_auto / ms_hand:.2f}x)")
    print(f"  max relative gradient difference {diff:.1e}")
    report.write_json({**vars(args), "ms_autodiff": ms_auto, "ms_custom_vjp": ms_hand,
                       "max_rel_grad_diff": diff, "devices": jax.device_count(),
                       "jax": jax.__version__}, args.out)


if __name__ == "__main__":
    sys.exit(main())
