r"""Sample from a trained workdir (the family comes from its checkpoint).

  python -m genjax.sample --workdir=W --prompt="ROMEO:" --num_samples=3 \
      --max_new_tokens=300 --temperature=0.8 --top_k=40 --top_p=0.95 --seed=0
  python -m genjax.sample --workdir=W --num_samples=64 --label=sneaker --guidance=3 \
      --steps=50 --out=grid.png          # diffusion | vae | gan
"""
from __future__ import annotations

from absl import flags

from genjax import config_lib, inference, runtime
from genjax.config_lib import UserError

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("workdir", None, "trained run directory", required=True)
    flags.DEFINE_string("prompt", None, "text prompt (LM); default: the config's sample.prompt")
    flags.DEFINE_integer("num_samples", None, "samples to draw")
    flags.DEFINE_integer("max_new_tokens", None, "tokens to generate per sample")
    flags.DEFINE_float("temperature", None, "0 = greedy")
    flags.DEFINE_integer("top_k", None, "keep the k most likely tokens (0 = off)")
    flags.DEFINE_float("top_p", None, "nucleus sampling mass in (0, 1]")
    flags.DEFINE_integer("seed", 0, "sampling seed")
    flags.DEFINE_enum("params", "ema", ["ema", "raw"], "EMA params if the run kept them")
    flags.DEFINE_string("label", None, "image families: class name or index (default: all)")
    flags.DEFINE_float("guidance", None, "diffusion: classifier-free guidance scale")
    flags.DEFINE_integer("steps", None, "diffusion: sampler steps")
    flags.DEFINE_string("out", None, "image families: PNG path (default W/samples.png)")


def _pick(flag_value, default):
    return default if flag_value is None else flag_value


def sample_lm(loaded) -> list[str]:
    from genjax.data.tokenizer import tokenizer_from_json
    from genjax.sampling.text import TextRequest, generate_text
    s = loaded.config.sample
    req = TextRequest(
        prompt=_pick(FLAGS.prompt, s.prompt), num_samples=_pick(FLAGS.num_samples, s.num_samples),
        max_new_tokens=_pick(FLAGS.max_new_tokens, s.max_new_tokens),
        temperature=_pick(FLAGS.temperature, s.temperature), top_k=_pick(FLAGS.top_k, s.top_k),
        top_p=_pick(FLAGS.top_p, s.top_p), seed=FLAGS.seed)
    req.validate()  # before any loading work is wasted on a bad request
    tokenizer = tokenizer_from_json(loaded.meta["data"]["tokenizer"])
    texts = generate_text(loaded.model, loaded.params, tokenizer, req)
    for i, text in enumerate(texts):
        print(f"----- sample {i + 1}/{len(texts)} (step {loaded.step}) -----")
        print(req.prompt + text, flush=True)
    return texts


def resolve_label(label: str | None, class_names: list[str]) -> int | None:
    """'sneaker', 'Sneaker' or '7' -> 7; None -> None (every class in turn)."""
    if label is None or label == "":
        return None
    if label.isdigit():
        index = int(label)
        if not 0 <= index < len(class_names):
            raise UserError(f"--label={label}: index out of range 0..{len(class_names) - 1}")
        return index
    norm = {name.lower().replace("/", " ").replace("-", " "): i
            for i, name in enumerate(class_names)}
    key = label.lower().replace("/", " ").replace("-", " ").replace("_", " ")
    for name, i in norm.items():
        if key == name or key in name.split():
            return i
    raise UserError(f"--label={label!r}: not a class; choose one of {class_names}")


def sample_images(loaded) -> str:
    import jax
    from genjax.image_grid import save_grid
    class_names = list(loaded.meta.get("data", {}).get("class_names", []))
    label = resolve_label(FLAGS.label, class_names)
    n = FLAGS.num_samples or 64
    images = loaded.family.sample_images(
        loaded.model, loaded.params, loaded.config, jax.random.PRNGKey(FLAGS.seed), n,
        label=label, guidance=FLAGS.guidance, steps=FLAGS.steps)
    out = FLAGS.out or f"{FLAGS.workdir}/samples.png"
    save_grid(jax.device_get(images), out)
    what = "all classes" if label is None else class_names[label]
    print(f"wrote {n} samples ({what}, step {loaded.step}) to {out}", flush=True)
    return out


def main(argv) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    runtime.setup_logging()
    loaded = inference.load(FLAGS.workdir, which=FLAGS.params)
    if loaded.config.family == "lm":
        sample_lm(loaded)
    elif hasattr(loaded.family, "sample_images"):
        sample_images(loaded)
    else:
        raise UserError(f"family {loaded.config.family!r} has no sampler")


if __name__ == "__main__":
    define_flags()
    config_lib.run_cli(main)
