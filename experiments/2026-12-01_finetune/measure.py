r"""Fine-tune the `cpu` Shakespeare LM on one held-out play: full vs LoRA r=8.

  python experiments/2026-12-01_finetune/measure.py --source=runs/lm_shakespeare_cpu \
      --play=macbeth --steps=300 --out=experiments/2026-12-01_finetune/results.json

The play (a TEST play: never trained on) is written to a text file and split 90/10 by
position (`data.name=text`); its tokens use the source run's tokenizer. Reported per
setting: that play's validation loss (nats/char) before and after, the trainable share of
the parameters and the optimizer-state bytes. Each setting is an ordinary run
(`genjax.train --config.init_from=SOURCE`), so it resumes like any other.
"""
import argparse
import json
import os

from finetune_common import state_sizes, train  # this folder (the script's sys.path[0])

SETTINGS = {
    "before": ["--config.total_steps=1", "--config.optim.lr=0.0", "--config.optim.warmup_steps=0"],
    "full": [],
    "lora_r8": ["--config.lora.rank=8", "--config.lora.alpha=16", "--config.optim.ema_decay=0",
                "--config.optim.lr=3e-3"],
}


def play_file(play: str, path: str) -> str:
    from genjax.data import shakespeare
    plays, _ = shakespeare.load_plays()
    for split in plays.values():
        for name, text in split:
            if name == play:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
                return path
    raise SystemExit(f"no play {play!r}")


def run(name: str, source: str, text: str, steps: int, root: str) -> dict:
    workdir = os.path.join(root, name)
    seconds = train("configs/lm_shakespeare.py:cpu", workdir, source, [
        "--config.data.name=text", f"--config.data.text_file={text}",
        f"--config.total_steps={steps}", "--config.eval_every_steps=0",
        "--config.optim.warmup_steps=30", "--config.optim.lr=3e-4",
        "--config.log_every_steps=50", *SETTINGS[name]])
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        final = json.load(f)
    return {"val_nats_per_char": final["loss"], "bits_per_char": final["bits_per_char"],
            "seconds": seconds, **state_sizes(workdir)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--source", required=True)
    p.add_argument("--play", default="macbeth")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--root", default="runs/finetune")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results.json"))
    args = p.parse_args()
    os.makedirs(args.root, exist_ok=True)
    text = play_file(args.play, os.path.abspath(os.path.join(args.root, f"{args.play}.txt")))
    results = {"source": os.path.abspath(args.source), "play": args.play, "steps": args.steps,
               "settings": {}}
    for name in SETTINGS:
        results["settings"][name] = run(name, os.path.abspath(args.source), text, args.steps,
                                        args.root)
        print(name, results["settings"][name], flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print("| setting | val nats/char | trainable share | optimizer bytes |")
    print("|---|---:|---:|---:|")
    for name, r in results["settings"].items():
        print(f"| {name} | {r['val_nats_per_char']:.3f} | {r['trainable_share']:.2%} | "
              f"{r['optimizer_bytes']:,} |")


if __name__ == "__main__":
    main()
