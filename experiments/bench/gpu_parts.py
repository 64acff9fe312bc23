r"""The four parts of experiments/bench/gpu_suite.py, one per process:

  python -m experiments.bench.gpu_parts PART OUT.json '{"smoke": false, ...}'

  lm         gpt2_124m training step at 12 x 1024, bf16 (lm_throughput.run): tokens/s, MFU,
             against nanoGPT's torch.compile figure on an H100 (433k tokens/s)
  decode     gpt2_124m greedy decode with the KV cache, batch 1 and 64, 1,024-token context
             (256-token prompt + 768 new tokens; decode.bench_decode): new tokens/s
  unet       the diffusion `gpu` preset's U-Net (38.3M params) training step at 32x32,
             batch 128, bf16, on random images (lm_throughput.time_train_step): images/s
  diffusion  `genjax.train` of configs/diffusion_fmnist.py:gpu as it is, stopped by SIGTERM
             `diffusion_seconds` after its first step (a checkpoint, exit 143), then
             `genjax.evaluate --only=likelihood`: test vlb_bpd (bits/dim)
Smoke (`"smoke": true`): the `tiny` presets on the CPU, same code paths.
Each part prints progress and writes its figures as JSON to OUT.json.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NANOGPT_H100_TOKENS_PER_S = 433e3  # nanoGPT, GPT-2 124M, torch.compile, 12 x 1024, bf16
LM_GOAL_RATIO = 1.2                # ours / nanoGPT's
DECODE_GOALS = {1: 3_000, 64: 100_000}  # new tokens/s at batch 1 and 64
DIFFUSION_CONFIG = "configs/diffusion_fmnist.py"


def part_lm(opts: dict) -> dict:
    from experiments.bench import lm_throughput
    smoke = opts["smoke"]
    r = lm_throughput.run("tiny" if smoke else "gpt2_124m", None if smoke else 12,
                          opts["lm_steps"], opts["warmup"], opts["lm_set"])
    ratio = r["tokens_per_s"] / NANOGPT_H100_TOKENS_PER_S
    return {**r, "reference": "nanoGPT GPT-2 124M, torch.compile, H100, 12 x 1024 bf16",
            "reference_tokens_per_s": NANOGPT_H100_TOKENS_PER_S, "ratio_to_reference": ratio,
            "goal_ratio": LM_GOAL_RATIO, "meets_goal": ratio >= LM_GOAL_RATIO}


def part_decode(opts: dict) -> dict:
    import jax

    from experiments.bench import decode
    model, params = decode.build("tiny" if opts["smoke"] else "gpt2_124m")
    P = model.max_len // 4
    N = model.max_len - P
    rows = []
    for B, goal in DECODE_GOALS.items():
        row = decode.bench_decode(model, params, B, P, N, cache=True)
        rows.append({**row, "goal_tokens_per_s": goal, "meets_goal": row["tokens_per_s"] >= goal})
        print(f"decode batch {B}: {row['tokens_per_s']:,.0f} new tokens/s "
              f"(compile {row['compile_s']:.1f} s)", flush=True)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
    return {"params": n_params, "context": model.max_len, "prompt_len": P, "new_tokens": N,
            "dtype": str(np.dtype(model.dtype)), "rows": rows}


def part_unet(opts: dict) -> dict:
    import importlib.util

    from experiments.bench import lm_throughput, offline_config
    from genjax.families import diffusion as family
    spec = importlib.util.spec_from_file_location("diffusion_config",
                                                  os.path.join(ROOT, DIFFUSION_CONFIG))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    preset = "tiny" if opts["smoke"] else "gpu"
    config = module.get_config(preset)
    config.unlock()
    offline_config.fill_data_keys(config)
    lm_throughput.apply_overrides(config, opts["unet_set"])
    config.lock()
    rng = np.random.default_rng(0)
    batch = family.example_batch(config, int(config.batch_size))
    batch["image"] = rng.uniform(-1, 1, batch["image"].shape).astype(np.float32)
    batch["label"] = rng.integers(0, 10, batch["label"].shape).astype(np.int32)
    r = lm_throughput.time_train_step(config, batch, opts["unet_steps"], opts["warmup"])
    return {"config": f"{DIFFUSION_CONFIG}:{preset}", **r,
            "image_shape": list(batch["image"].shape[1:]),
            "images_per_s": int(config.batch_size) / (r["step_ms"] / 1000)}


def _pump(pipe, lines: queue.Queue) -> None:
    for line in pipe:
        lines.put(line)
    lines.put(None)


def stream(cmd: list[str], prefix: str, *, env: dict | None = None,
           timeout_s: float | None = None, own_group: bool = False,
           stop_after_first_step_s: float | None = None,
           stop_at_unix: float | None = None) -> dict:
    """Runs `cmd` from the repository root, echoing its output with `prefix`. SIGTERM once
    `stop_after_first_step_s` seconds have passed since its first step (genjax.train's
    "compiled and ran in" line), or at wall-clock time `stop_at_unix`, whichever is first;
    SIGKILL to its process group (`own_group`: a new one, so its children go too) after
    `timeout_s`. Returns rc (None: timed out), times, last lines."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=own_group)
    lines: queue.Queue = queue.Queue()  # filled by a thread, so timeouts fire while quiet
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    t0, t_first, stopped, killed, tail = time.perf_counter(), None, False, False, []
    t_stop = None
    while True:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            line = ""
        if line is None:
            break
        if line:
            print(f"[{prefix}] {line}", end="", flush=True)
            tail = (tail + [line.rstrip()])[-40:]
            if t_first is None and "compiled and ran in" in line:
                t_first = time.perf_counter()
        now = time.perf_counter()
        due = (stop_after_first_step_s is not None and t_first is not None
               and now - t_first > stop_after_first_step_s)
        if not stopped and (due or (stop_at_unix is not None and time.time() >= stop_at_unix)):
            proc.send_signal(signal.SIGTERM)  # genjax.train: checkpoint, then exit 143
            stopped, t_stop = True, now
        if timeout_s is not None and not killed and now - t0 > timeout_s:
            os.killpg(proc.pid, signal.SIGKILL) if own_group else proc.kill()
            killed = True
    rc, t_end = proc.wait(), time.perf_counter()
    return {"rc": None if killed else rc, "wall_s": t_end - t0, "stopped_by_sigterm": stopped,
            "tail": tail, "after_first_step_s": None if t_first is None else t_end - t_first,
            "first_step_to_sigterm_s": (None if t_first is None or t_stop is None
                                        else max(t_stop - t_first, 0.0))}


def _metrics_rows(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def part_diffusion(opts: dict) -> dict:
    preset = "tiny" if opts["smoke"] else "gpu"
    seconds = float(opts["diffusion_seconds"])
    workdir = os.path.join(opts["workroot"], f"diffusion_{preset}")
    # The preset as it is (its LR schedule and total_steps), stopped by SIGTERM (genjax.train
    # checkpoints at the next step and exits 143) `seconds` after its first step; no
    # periodic eval or sample grid inside the timed span. Same train step as the unet part,
    # so a persistent compilation cache serves it.
    train_cmd = [sys.executable, "-m", "genjax.train", f"--config={DIFFUSION_CONFIG}:{preset}",
                 f"--workdir={workdir}", "--config.eval_every_steps=0",
                 "--config.final_eval_batches=1", "--config.sample.grid_samples=0",
                 *(f"--config.{kv}" for kv in opts["diffusion_set"])]
    print(" ".join(train_cmd[1:]), flush=True)
    train = stream(train_cmd, "train", stop_after_first_step_s=seconds,
                   stop_at_unix=opts.get("diffusion_stop_unix"))
    if train["rc"] not in (0, 143):
        raise RuntimeError(f"genjax.train exited with {train['rc']}: " + "\n".join(train["tail"]))
    eval_cmd = [sys.executable, "-m", "genjax.evaluate", f"--workdir={workdir}",
                "--only=likelihood", f"--params={opts['diffusion_params']}"]
    print(" ".join(eval_cmd[1:]), flush=True)
    ev = stream(eval_cmd, "evaluate")
    if ev["rc"] != 0:
        raise RuntimeError(f"genjax.evaluate exited with {ev['rc']}: " + "\n".join(ev["tail"]))
    with open(os.path.join(workdir, "eval", "report.json")) as f:
        report = json.load(f)
    metrics = report["evaluators"]["likelihood"]["metrics"]
    rows = _metrics_rows(workdir)
    rates = [v for r in rows for k, v in r.items() if k.endswith("_per_s")]
    return {"config": f"{DIFFUSION_CONFIG}:{preset}", "train_seconds_limit": seconds,
            "steps_done": report["run"]["step"], "completed": train["rc"] == 0,
            "stopped_by_sigterm": train["stopped_by_sigterm"], "train_wall_s": train["wall_s"],
            "after_first_step_s": train["after_first_step_s"],  # + the save and exit
            "trained_s": (train["first_step_to_sigterm_s"] if train["stopped_by_sigterm"]
                          else train["after_first_step_s"]),
            "loop_images_per_s_median": float(np.median(rates)) if rates else None,
            "last_logged_loss": rows[-1].get("loss") if rows else None,
            "params_evaluated": report["run"]["which"],
            "test_vlb_bpd": metrics.get("test/vlb_bpd"), "likelihood": metrics,
            "eval_wall_s": ev["wall_s"],
            "commands": [" ".join(train_cmd[1:]), " ".join(eval_cmd[1:])]}


PARTS = {"lm": part_lm, "decode": part_decode, "unet": part_unet, "diffusion": part_diffusion}


def main(argv) -> int:
    name, out, opts = argv[1], argv[2], json.loads(argv[3])
    result = PARTS[name](opts)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
