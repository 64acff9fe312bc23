r"""LM decode throughput (new tokens/s) with and without the KV cache, best-of-n gain, and
diffusion sampling throughput (images/s, DDIM).

  python -m experiments.bench.decode --preset=tiny                 # ~1 min on a CPU
  python -m experiments.bench.decode --preset=cpu --out=decode_cpu.json
  python -m experiments.bench.decode --preset=gpt2_124m --batch_sizes=1,64   # accelerator
  python -m experiments.bench.decode --batch_sizes= --bon_prompts=0 \
      --diffusion=configs/t2i_fmnist.py:cpu          # diffusion only
  python -m experiments.bench.decode --workdir=runs/lm_int8 --batch_sizes=1,8  # a run's LM

`--workdir`: a trained LM run instead of the preset's random params, plain or int8
(written by `python -m genjax.quantize`: its params stay int8 and every jitted decode
call dequantizes them, as genjax.sample does); the JSON records which, and the params'
bytes. With a workdir the diffusion part is skipped unless `--diffusion` names a config.

Random params of the preset's model (configs/lm_shakespeare.py; vocab 128 for the char
presets, 50304 for gpt2_124m), context = the preset's max_len: prompts of `prompt_len`
random tokens, then `new_tokens` greedy tokens (default: to the end of the context).
  with cache:    genjax.sampling.lm.decode's two jitted calls (prefill + while_loop).
  without cache: lm.generate_reference, one jitted fori_loop re-running the full forward
                 over the P + N buffer for every new token (the cost a decode without a
                 cache pays; static shapes, so it does not shrink for early tokens).
Both exclude compilation (compiled ahead, timed separately); tokens/s counts new tokens
only, prompt processing included in the time. Then best-of-n: mean over `bon_prompts`
prompts of the chosen candidate's log-likelihood per token (temperature 1, n = 1 vs 8);
with random params the gain is small but must be positive.
Diffusion (`--diffusion`, a config path with preset; "" = skip): random params of that
U-Net, `--diffusion_batch` images (default 256) by DDIM with `--diffusion_steps` (50) and the
config's sample.guidance (> 1 and != 1: two network passes per step, conditional and
null, in one batch of 2x), one jitted lax.scan, compiled ahead and timed separately.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench import offline_config, report


def build(preset: str):
    from flax import linen as nn

    from configs import lm_shakespeare
    from genjax.families import lm as lm_loss
    config = lm_shakespeare.get_config(preset)
    config.unlock()
    offline_config.fill_data_keys(config)
    model = lm_loss.make_model(config)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))
    return model, nn.meta.unbox(variables)["params"]


def load_workdir(workdir: str):
    """(model, params, info) of a trained LM run, plain or int8 (genjax.quantize)."""
    from genjax import families, inference, quantize
    from genjax.errors import UserError
    loaded = inference.load(workdir)
    if not families.has(loaded.family, "sample_text"):
        raise UserError(f"--workdir={workdir!r} is a {loaded.config.family!r} run: the decode "
                        "bench times language models (a family with sample_text)")
    info = {"workdir": workdir, "step": loaded.step, "family": loaded.config.family,
            "quantized": quantize.is_quantized_meta(loaded.meta),
            "param_bytes": quantize.nbytes(loaded.params)}
    return loaded.model, loaded.params, info


def _timed(fn, *args):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def bench_decode(model, params, B: int, P: int, N: int, cache: bool) -> dict:
    from genjax.sampling import lm
    rng = np.random.default_rng(B)
    prompts = jnp.asarray(rng.integers(0, model.vocab_size, (B, P)), jnp.int32)
    lengths = jnp.full((B,), P, jnp.int32)
    t0 = time.perf_counter()
    if cache:
        s = lm._sampling(model, 0.0, 0, 1.0, 0.0, 1.0, (), 0, None)  # greedy, no stop tokens
        args = (prompts, lengths, jax.random.PRNGKey(0), jnp.arange(B, dtype=jnp.int32))
        prefill = lm.prefill.lower(model, params, *args,
                                   num_slots=lm._num_slots(model, prompts, N)).compile()
        state = prefill(params, *args)
        chunk = lm.generate_chunk.lower(model, params, state, s, jnp.int32(N), chunk_size=N,
                                        switches=lm.switches(temperature=0.0)).compile()
        compile_s = time.perf_counter() - t0
        run = lambda: chunk(params, prefill(params, *args), s, jnp.int32(N))[0][0]  # noqa: E731
        prefill_s = min(_timed(prefill, params, *args) for _ in range(2))
    else:
        ref = lm._generate_reference.lower(model, params, prompts, lengths,
                                           max_new_tokens=N).compile()
        compile_s = time.perf_counter() - t0
        run = lambda: ref(params, prompts, lengths)  # noqa: E731
        prefill_s = None
    _timed(run)  # a first call's one-time costs (allocations, autotuning) are not decoding
    seconds = _timed(run)
    if seconds < 1.0:  # short runs: best of 3
        seconds = min([seconds] + [_timed(run) for _ in range(2)])
    return {"batch": B, "kv_cache": cache, "prompt_len": P, "new_tokens": N,
            "seconds": seconds, "tokens_per_s": B * N / seconds,
            "ms_per_step": 1000 * seconds / N, "prefill_ms": prefill_s and 1000 * prefill_s,
            "compile_s": compile_s}


def bench_best_of_n(model, params, num_prompts: int, P: int, N: int, ns=(1, 8)) -> dict:
    """Mean chosen log-likelihood (nats/token) of best-of-n over random prompts."""
    from genjax.sampling import best_of_n, lm
    rng = np.random.default_rng(1)
    chosen = {n: [] for n in ns}
    for i in range(num_prompts):
        prompt = rng.integers(0, model.vocab_size, (P,)).astype(np.int32)

        def generate_fn(n, seed):
            out = lm.generate(model, params, np.tile(prompt, (n, 1)), np.full((n,), P),
                              rng=jax.random.PRNGKey(seed), max_new_tokens=N,
                              temperature=1.0)
            return list(np.asarray(out))
        score_fn = best_of_n.lm_loglik(model, params, tokens_of=lambda c: (prompt, c))
        for n in ns:
            chosen[n].append(best_of_n.best_of_n(generate_fn, score_fn, n, seed=i)[0][1])
    return {f"best_of_{n}": float(np.mean(v)) for n, v in chosen.items()}


def bench_diffusion(spec: str, batch: int, steps: int) -> dict:
    """images/s of DDIM sampling for the config `spec` ("path.py:preset") with random params."""
    import importlib.util

    from genjax import sharding
    from genjax.families import diffusion as family
    path, _, preset = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(preset or None)
    config.unlock()
    offline_config.fill_data_keys(config)
    if family.conditioning(config) == "text":
        config.model.text.vocab_size = family.caption_tokenizer(config).vocab_size
    config.lock()
    model = family.make_model(config)
    example = family.example_batch(config, 1)
    params = jax.jit(lambda k: sharding.unbox(
        family.init_variables(model, k, example, config))["params"])(jax.random.PRNGKey(0))
    guidance = float(config.sample.guidance)
    cond = family.sample_labels(config, batch)
    # the sampler genjax.sample and the evaluators use (params on one device: no mesh)
    run = family.make_sampler(model, "ddim", steps, 0.0, guidance,
                              (batch, *family.image_shape(config)), str(config.model.schedule),
                              int(config.model.timesteps), str(config.model.parameterization),
                              str(config.model.var_type), family._null(config), None, ())
    t0 = time.perf_counter()
    compiled = run.lower(params, jax.random.PRNGKey(1), cond).compile()
    compile_s = time.perf_counter() - t0
    seconds = _timed(compiled, params, jax.random.PRNGKey(1), cond)
    passes = 1 if cond is None or guidance == 1.0 else 2
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
    return {"config": spec, "params": n_params, "batch": batch, "ddim_steps": steps,
            "guidance": guidance, "network_passes_per_step": passes,
            "conditioning": family.conditioning(config), "seconds": seconds,
            "images_per_s": batch / seconds, "compile_s": compile_s}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny", help="tiny | cpu | gpu | gpt2_124m | ...")
    p.add_argument("--workdir", default="", help="a trained LM run (plain or int8) instead "
                   "of the preset's random params")
    p.add_argument("--batch_sizes", default="1,64")
    p.add_argument("--prompt_len", type=int, default=0, help="0: max_len // 4")
    p.add_argument("--new_tokens", type=int, default=0, help="0: to the end of the context")
    p.add_argument("--no_reference", action="store_true", help="skip the no-cache runs")
    p.add_argument("--bon_prompts", type=int, default=4, help="best-of-n prompts (0 = skip)")
    p.add_argument("--diffusion", default=None,
                   help="diffusion config path:preset to time DDIM sampling ('' = skip; "
                   "default configs/diffusion_fmnist.py:cpu, skipped with --workdir)")
    p.add_argument("--diffusion_batch", type=int, default=256)
    p.add_argument("--diffusion_steps", type=int, default=50)
    p.add_argument("--out", default="decode_bench.json")
    args = p.parse_args(argv)

    if args.diffusion is None:
        args.diffusion = "" if args.workdir else "configs/diffusion_fmnist.py:cpu"
    if args.workdir:
        model, params, source = load_workdir(args.workdir)
    else:
        (model, params), source = build(args.preset), {"preset": args.preset}
    P = args.prompt_len or model.max_len // 4
    N = args.new_tokens or model.max_len - P
    rows = []
    for B in (int(b) for b in args.batch_sizes.split(",") if b):
        for cache in (True, False) if not args.no_reference else (True,):
            rows.append(bench_decode(model, params, B, P, N, cache))
            r = rows[-1]
            print(f"batch {B:>4} | {'KV cache' if cache else 'no cache':<8} | "
                  f"{r['tokens_per_s']:>12,.0f} tok/s | {r['ms_per_step']:>8.2f} ms/step | "
                  f"compile {r['compile_s']:.1f} s", flush=True)
    bon = bench_best_of_n(model, params, args.bon_prompts, min(P, 16), min(N, 16)) \
        if args.bon_prompts else {}
    diff = bench_diffusion(args.diffusion, args.diffusion_batch, args.diffusion_steps) \
        if args.diffusion else None
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
    name = args.workdir or args.preset
    result = {"preset": name, **source, "params": n_params, "vocab": model.vocab_size,
              "max_len": model.max_len, "dtype": str(jnp.dtype(model.dtype)),
              "device": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
              "rows": rows, "best_of_n_loglik": bon, "diffusion": diff,
              "jax": jax.__version__, "python": platform.python_version()}
    kind = " (int8 weights)" if source.get("quantized") else ""
    print(f"\n{name}{kind}: {n_params:,} params, vocab {model.vocab_size}, context "
          f"{model.max_len}, prompt {P} + {N} new tokens, {result['dtype']}, {result['device']}")
    print(f"{'batch':>5} | {'cache':<5} | {'new tok/s':>12} | {'ms/step':>8} | {'speedup':>7}")
    for r in rows:
        base = [x for x in rows if x["batch"] == r["batch"] and not x["kv_cache"]]
        speedup = f"{base[0]['seconds'] / r['seconds']:.1f}x" if base else "-"
        print(f"{r['batch']:>5} | {'yes' if r['kv_cache'] else 'no':<5} | "
              f"{r['tokens_per_s']:>12,.0f} | {r['ms_per_step']:>8.2f} | {speedup:>7}")
    if bon:
        print("best-of-n, mean chosen log-likelihood (nats/token): " +
              ", ".join(f"{k.replace('best_of_', 'n=')}: {v:.4f}" for k, v in bon.items()) +
              f" (gain {bon['best_of_8'] - bon['best_of_1']:+.4f})")
    if diff:
        print(f"diffusion {diff['config']} ({diff['params']:,} params, {diff['conditioning']}): "
              f"DDIM {diff['ddim_steps']} steps, batch {diff['batch']}, guidance "
              f"{diff['guidance']:g} ({diff['network_passes_per_step']} passes/step): "
              f"{diff['images_per_s']:,.1f} images/s ({diff['seconds']:.1f} s, compile "
              f"{diff['compile_s']:.1f} s)")
    report.write_json(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
