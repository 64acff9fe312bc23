r"""Sample from a trained workdir.

  python -m genjax.sample --workdir=W --prompt="ROMEO:" --num_samples=3 \
      --max_new_tokens=300 --temperature=0.8 --top_k=40 --top_p=0.95 --seed=0
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


def main(argv) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    runtime.setup_logging()
    loaded = inference.load(FLAGS.workdir, which=FLAGS.params)
    if loaded.config.family == "lm":
        sample_lm(loaded)
    else:
        raise UserError(f"sampling for family {loaded.config.family!r} is not available yet")


if __name__ == "__main__":
    define_flags()
    config_lib.run_cli(main)
