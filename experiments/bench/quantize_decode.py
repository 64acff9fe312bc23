r"""int8 weight-only vs fp32: parameter bytes, KV-cache decode tokens/s, greedy agreement.

  python -m experiments.bench.quantize_decode                       # cpu + gpt2_124m shapes
  python -m experiments.bench.quantize_decode --presets=cpu --batch_sizes=1,16

Random params of each preset's Transformer (configs/lm_shakespeare.py; vocab 128 for the
char presets, 50304 for gpt2_124m), computed in --dtype (default float32: the CPU has no
fast bf16). int8 = genjax/quantize.py: per-output-channel absmax int8 weights, embeddings
per row, dequantized inside the jitted prefill and decode loop (QuantizedModel). Decode:
`prompt_len` random prompt tokens + `new_tokens` greedy tokens with genjax.sampling.lm's
two jitted calls, compiled ahead (compile time excluded), best of 3 timed runs. Greedy
agreement: the fraction of new tokens int8 decodes identically to fp32 (random weights:
near-ties are common, so this is a lower bound on a trained model's agreement).
Writes experiments/bench/results/quantize_decode_<device>.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench import report


def build(preset: str, dtype: str):
    from flax import linen as nn
    from flax import traverse_util

    from configs import lm_shakespeare
    from genjax import quantize
    from genjax.families import lm as lm_family
    config = lm_shakespeare.get_config(preset)
    config.unlock()
    config.model.vocab_size = config.model.vocab_size or 128
    config.compute_dtype = dtype
    model = lm_family.make_model(config)
    boxed = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))
    params = nn.meta.unbox(boxed)["params"]
    names = {p: tuple(x.names) if isinstance(x, nn.Partitioned) else None
             for p, x in traverse_util.flatten_dict(boxed["params"]).items()}
    return model, params, jax.jit(lambda p: quantize.quantize_params(p, names))(params)


def _best_of_3(fn):
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def bench(model, params, B: int, P: int, N: int) -> tuple[dict, np.ndarray]:
    from genjax.sampling import lm
    rng = np.random.default_rng(B)
    prompts = jnp.asarray(rng.integers(0, model.vocab_size, (B, P)), jnp.int32)
    args = (prompts, jnp.full((B,), P, jnp.int32), jax.random.PRNGKey(0),
            jnp.arange(B, dtype=jnp.int32))
    s = lm._sampling(model, 0.0, 0, 1.0, 0.0, 1.0, (), 0, None)  # greedy
    t0 = time.perf_counter()
    prefill = lm.prefill.lower(model, params, *args, num_slots=P + N).compile()
    state = prefill(params, *args)
    chunk = lm.generate_chunk.lower(model, params, state, s, jnp.int32(N), chunk_size=N,
                                    switches=lm.switches(temperature=0.0)).compile()
    compile_s = time.perf_counter() - t0
    run = lambda: chunk(params, prefill(params, *args), s, jnp.int32(N))[0]  # noqa: E731
    seconds = _best_of_3(run)
    return ({"batch": B, "prompt_len": P, "new_tokens": N, "seconds": seconds,
             "tokens_per_s": B * N / seconds, "compile_s": compile_s},
            np.asarray(run()))


def main(argv=None):
    from genjax import quantize
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="cpu,gpt2_124m")
    p.add_argument("--batch_sizes", default="1,8")
    p.add_argument("--prompt_len", type=int, default=16)
    p.add_argument("--new_tokens", type=int, default=48)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
    rows = []
    for preset in args.presets.split(","):
        model, params, qparams = build(preset, args.dtype)
        fp32_bytes, int8_bytes = quantize.nbytes(params), quantize.nbytes(qparams)
        for B in (int(b) for b in args.batch_sizes.split(",") if b):
            f, tok_f = bench(model, params, B, args.prompt_len, args.new_tokens)
            q, tok_q = bench(quantize.QuantizedModel(model), qparams, B, args.prompt_len,
                             args.new_tokens)
            rows.append({"preset": preset, "batch": B, "fp32_param_bytes": fp32_bytes,
                         "int8_param_bytes": int8_bytes, "fp32": f, "int8": q,
                         "greedy_agreement": float(np.mean(tok_f == tok_q))})
            r = rows[-1]
            print(f"{preset:>10} | batch {B:>3} | params {fp32_bytes / 2**20:8.1f} MiB -> "
                  f"{int8_bytes / 2**20:7.1f} MiB ({fp32_bytes / int8_bytes:.2f}x) | "
                  f"tok/s fp32 {f['tokens_per_s']:9,.0f} int8 {q['tokens_per_s']:9,.0f} | "
                  f"greedy agree {r['greedy_agreement']:.3f}", flush=True)
    result = {"device": device, "dtype": args.dtype, "rows": rows, "jax": jax.__version__,
              "python": platform.python_version()}
    out = args.out or os.path.join(os.path.dirname(__file__), "results",
                                   f"quantize_decode_{jax.devices()[0].platform}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    report.write_json(result, out)


if __name__ == "__main__":
    main()
