r"""Fine-tune the `cpu` class-conditional diffusion run on one Fashion-MNIST class: full vs
LoRA r=8.

  python experiments/2026-12-01_finetune/diffusion_lora.py --source=runs/diffusion_fmnist_cpu \
      --class_name=Sneaker --steps=300 --num_samples=500

Measured on the source run (before) and on each fine-tuned run (after): `num_samples`
samples with guidance 0 (the unconditional model: its own class mix), the share the
evaluators' feature net (configs/fmnist_classifier.py:<feature preset>, trained on every
class) assigns to the class, and fid_fmnist against that class's TEST images. Floor: the
first `num_samples` training images of the class against the same test images. Each
setting is an ordinary run (`genjax.train --config.init_from=SOURCE
--config.data.classes=(CLASS,)`: every split holds that class only), so it resumes like
any other. Writes --out (JSON) and the same path with .md (the table).
--preset=tiny: the tiny configs and feature net (tests; numbers meaningless).
"""
import argparse
import json
import os

from finetune_common import state_sizes, table, train  # this folder (sys.path[0])

PRESETS = {  # config of the fine-tuning runs, feature net preset, sampling batch
    "cpu": {"config": "configs/diffusion_fmnist.py:cpu", "feature_preset": "cpu",
            "batch_size": 250, "train_args": ["--config.log_every_steps=50"]},
    "tiny": {"config": "configs/diffusion_fmnist.py:tiny", "feature_preset": "tiny",
             "batch_size": 8, "train_args": ["--config.final_eval_batches=1",
                                             "--config.sample.grid_samples=0"]},
}
# The LM demo's recipe (measure.py): LoRA without EMA (EMA(A)EMA(B) is not EMA(AB)) at 10x
# the full fine-tune's learning rate; here 1/4 of the cpu preset's 2e-3 for full. `full`
# keeps no EMA either, so that both are scored on their trained weights: the preset's EMA
# (decay 0.995, `full_ema`) still carries 0.995^300 = 22% of the source after 300 steps.
SETTINGS = {
    "full": ["--config.optim.lr=5e-4", "--config.optim.ema_decay=0"],
    "full_ema": ["--config.optim.lr=5e-4"],
    "lora_r8": ["--config.lora.rank=8", "--config.lora.alpha=16", "--config.optim.ema_decay=0",
                "--config.optim.lr=5e-3"],
}


def class_data_cfg(config, class_name: str):
    """The run's config.data restricted to `class_name` (also for runs saved before
    config.data.classes existed)."""
    from ml_collections import ConfigDict
    from genjax import config_lib
    return ConfigDict({**config_lib.to_dict(config.data), "classes": (class_name,)})


def sample_unconditional(loaded, n: int, batch_size: int, seed: int = 0):
    """float32[n, H, W, C]: the run's sampler with guidance 0 (the null class)."""
    import jax
    import numpy as np
    if "guidance" not in getattr(loaded.family, "sample_options", ()):
        raise SystemExit(f"{loaded.config.family}: its sampler takes no guidance")
    key, b = jax.random.PRNGKey(seed), max(1, min(int(batch_size), int(n)))
    out = [np.asarray(jax.device_get(loaded.family.sample_images(
        loaded.model, loaded.params, loaded.config, jax.random.fold_in(key, i), b,
        guidance=0.0)), np.float32) for i in range(-(-n // b))]
    return np.concatenate(out)[:n]


def scores(net, f_NxD, real_f, class_id: int) -> dict:
    """Class share (argmax of the feature net), fid_fmnist vs `real_f`, the class mix."""
    import numpy as np
    from genjax.evaluators.image_quality import fid_from_features
    pred = np.argmax(net.probs_from_features(f_NxD), -1)
    mix = np.bincount(pred, minlength=len(net.class_names)) / len(pred)
    return {"class_share": float(np.mean(pred == class_id)),
            "fid_fmnist": fid_from_features(f_NxD, real_f), "num_samples": len(f_NxD),
            "num_real": len(real_f), "class_mix": dict(zip(net.class_names, mix.tolist()))}


def measure(workdir: str, class_name: str, n: int, preset: dict, floor: bool = False) -> dict:
    """scores() of `n` guidance-0 samples of the run in `workdir` (EMA params where it keeps
    them, else its trained ones; LoRA runs: merged), against every test image of the class;
    floor: also the class's first `n` training images in place of samples (result["floor"])."""
    from genjax import inference
    from genjax import train as train_lib
    from genjax.data.image_loader import ImageData
    from genjax.evaluators.feature_net import load_feature_net
    loaded = inference.load(workdir, which="ema")
    data_cfg = class_data_cfg(loaded.config, class_name)
    data = ImageData(data_cfg, global_batch_size=1, seed=0)  # the class in every split
    (class_id,) = data.classes
    net = load_feature_net(data_cfg, preset=preset["feature_preset"], train_fn=train_lib.train)
    real_f, _ = net.real_features(data, "test")
    fake_f = net.features(sample_unconditional(loaded, n, preset["batch_size"]))
    out = {"which": loaded.which, "step": int(loaded.step),
           **scores(net, fake_f, real_f, class_id)}
    if floor:
        out["floor"] = scores(net, net.real_features(data, "train", n)[0], real_f, class_id)
    return out


def fine_tune(name: str, args, preset: dict) -> dict:
    workdir = os.path.join(args.root, name)
    seconds = train(preset["config"], workdir, os.path.abspath(args.source), [
        f"--config.data.classes=({args.class_name},)", f"--config.total_steps={args.steps}",
        "--config.eval_every_steps=0", f"--config.optim.warmup_steps={min(30, args.steps // 4)}",
        f"--config.ckpt_every_steps={args.steps}", *preset["train_args"], *SETTINGS[name]])
    return {"seconds": seconds, **state_sizes(workdir),
            **measure(workdir, args.class_name, args.num_samples, preset)}


def write(results: dict, out: str) -> str:
    """results.json at `out`, the markdown table next to it (.md); returns the table."""
    c = results["class_name"]
    rows = []
    for name, r in [("source run, no fine-tuning", results["before"]),
                    *results["settings"].items(),
                    (f"real {c} train images (floor)", results["before"]["floor"])]:
        sizes = ([f"{r['trainable_params']:,} ({r['trainable_share']:.1%})",
                  f"{r['optimizer_bytes'] / 1e6:.2f} MB"] if "optimizer_bytes" in r
                 else ["—", "—"])
        rows.append([name, f"{r['class_share']:.3f}", f"{r['fid_fmnist']:.2f}", *sizes])
    md = table([f"{c}, {results['num_samples']} samples (guidance 0)", f"share {c}",
                f"fid_fmnist vs {c} test", "trainable params", "optimizer state"], rows)
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(md)
    return md


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--source", required=True, help="a trained class-conditional diffusion run")
    p.add_argument("--class_name", default="Sneaker")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--num_samples", type=int, default=500)
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help=f"comma-separated, of {list(SETTINGS)}")
    p.add_argument("--root", default="runs/finetune_diffusion")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "diffusion_lora.json"))
    args = p.parse_args()
    names = [s for s in args.settings.split(",") if s]
    if not names or set(names) - set(SETTINGS):
        p.error(f"--settings={args.settings!r}: choose from {list(SETTINGS)}")
    preset = PRESETS[args.preset]
    os.makedirs(args.root, exist_ok=True)
    results = {"source": os.path.abspath(args.source), "class_name": args.class_name,
               "steps": args.steps, "num_samples": args.num_samples, "preset": args.preset,
               "before": measure(args.source, args.class_name, args.num_samples, preset,
                                 floor=True), "settings": {}}
    print("before", results["before"], flush=True)
    for name in names:
        results["settings"][name] = fine_tune(name, args, preset)
        print(name, results["settings"][name], flush=True)
    print(write(results, args.out), end="")


if __name__ == "__main__":
    main()
