r"""Data loader throughput next to what the `cpu` presets consume.

  python -m experiments.bench.data_throughput
  python -m experiments.bench.data_throughput --batches=100 --out=data_bench.json

LM: `LMData.train_iterator()` on Shakespeare (built on first use) with the batch_size and
max_len of configs/lm_shakespeare.py:cpu, once per tokenizer (char, bpe). The cpu preset's
demand is batch_size * max_len tokens per step at total_steps / (--cpu_minutes * 60) steps/s
(its docstring: ~5 minutes). Images: `ImageData.train_iterator()` on Fashion-MNIST with
configs/diffusion_fmnist.py's data settings at batch 128, against 128 images x 10 steps/s;
skipped when the IDX files are absent. The first batch (threads starting, tokenizing the
split) is reported separately as setup_s and not counted in the rates.
Prints a table, then the JSON (also written to --out when given).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

from experiments.bench import report

IMAGE_BATCH, IMAGE_STEPS_PER_S = 128, 10.0  # assumed image-family cpu demand


def _time(make_iterator, batches: int) -> tuple[float, float, dict]:
    """(setup seconds incl. the first batch, seconds for `batches` more, the last batch)."""
    t0 = time.perf_counter()
    it = make_iterator()
    batch = next(it)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
    return setup, time.perf_counter() - t0, batch


def bench_lm(tokenizer: str, batches: int, cpu_minutes: float) -> dict:
    from configs import lm_shakespeare
    from genjax.data.lm_loader import LMData
    config = lm_shakespeare.get_config("cpu")
    config.unlock()
    config.data.tokenizer = tokenizer
    batch, seq = int(config.batch_size), int(config.model.max_len)
    t0 = time.perf_counter()
    data = LMData(config.data, seq_len=seq, global_batch_size=batch, seed=0)
    open_s = time.perf_counter() - t0
    setup, dt, last = _time(data.train_iterator, batches)
    assert last["tokens"].shape == (batch, seq + 1)
    examples_per_s = batches * batch / dt
    demand_steps = config.total_steps / (60.0 * cpu_minutes)
    return {"loader": f"lm/{tokenizer}", "dataset": data.builder.info.full_name,
            "batch": batch, "seq_len": seq, "vocab_size": data.tokenizer.vocab_size,
            "chars_per_token": data.eval_kwargs("train")["chars_per_token"],
            "open_s": open_s, "setup_s": setup, "examples_per_s": examples_per_s,
            "tokens_per_s": examples_per_s * seq,
            "cpu_preset_examples_per_s": batch * demand_steps,
            "cpu_preset_tokens_per_s": batch * seq * demand_steps,
            "headroom": examples_per_s / (batch * demand_steps)}


def bench_images(batches: int) -> dict | None:
    from configs import diffusion_fmnist
    from genjax.data import image_builders
    from genjax.data.image_loader import ImageData
    try:
        image_builders.find_fashion_mnist()
    except FileNotFoundError as e:
        print(f"images skipped: {e}", file=sys.stderr)
        return None
    config = diffusion_fmnist.get_config("cpu")
    t0 = time.perf_counter()
    data = ImageData(config.data, global_batch_size=IMAGE_BATCH, seed=0)
    open_s = time.perf_counter() - t0
    setup, dt, last = _time(data.train_iterator, batches)
    images_per_s = batches * IMAGE_BATCH / dt
    return {"loader": "images/fashion_mnist", "dataset": data.dataset, "batch": IMAGE_BATCH,
            "image_shape": list(last["image"].shape[1:]), "open_s": open_s, "setup_s": setup,
            "examples_per_s": images_per_s,
            "cpu_preset_examples_per_s": IMAGE_BATCH * IMAGE_STEPS_PER_S,
            "headroom": images_per_s / (IMAGE_BATCH * IMAGE_STEPS_PER_S)}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=50, help="timed batches per loader")
    p.add_argument("--cpu_minutes", type=float, default=5.0,
                   help="wall time of the LM cpu preset (configs/lm_shakespeare.py)")
    p.add_argument("--tokenizers", default="char,bpe")
    p.add_argument("--no_images", action="store_true")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    rows = [bench_lm(t, args.batches, args.cpu_minutes) for t in args.tokenizers.split(",") if t]
    if not args.no_images:
        rows += [r for r in [bench_images(args.batches)] if r]
    print(f"{'loader':<22}{'batch':>6}{'setup s':>9}{'examples/s':>12}{'tokens/s':>11}"
          f"{'cpu needs ex/s':>16}{'headroom':>10}")
    for r in rows:
        tokens = f"{r['tokens_per_s']:.0f}" if "tokens_per_s" in r else "-"
        print(f"{r['loader']:<22}{r['batch']:>6}{r['setup_s']:>9.2f}{r['examples_per_s']:>12.0f}"
              f"{tokens:>11}{r['cpu_preset_examples_per_s']:>16.0f}{r['headroom']:>9.0f}x")
    result = {"rows": rows, "batches": args.batches, "python": platform.python_version()}
    print(json.dumps(result, indent=1))
    if args.out:
        report.write_json(result, args.out)
    return rows


if __name__ == "__main__":
    main()
