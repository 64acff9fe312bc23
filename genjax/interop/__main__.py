r"""Import or export Hugging Face GPT-2 weights (no torch needed).

  python -m genjax.interop import-gpt2 --from=DIR --workdir=W [--config=FILE.py:preset]
  python -m genjax.sample --workdir=W --prompt="Hello," --max_new_tokens=40
  python -m genjax.interop export-gpt2 --workdir=W --out=DIR2 [--params=ema|raw]

DIR: config.json, model.safetensors and tokenizer.json (or vocab.json + merges.txt).
import-gpt2 writes checkpoint step 0 into a new W; --config (default
configs/lm_shakespeare.py:gpt2) supplies every key config.json does not (sampling,
optimizer, evaluators). Bad input -> one `error:` line, exit 2, nothing written.
"""
from __future__ import annotations

from absl import flags

from genjax import cli, runtime
from genjax.errors import UserError

FLAGS = flags.FLAGS
COMMANDS = ("import-gpt2", "export-gpt2")


def define_flags():
    flags.DEFINE_string("from", None, "import-gpt2: Hugging Face GPT-2 folder")
    flags.DEFINE_string("workdir", None, "import-gpt2: new run directory; export-gpt2: "
                        "the run to export (latest checkpoint)")
    flags.DEFINE_string("out", None, "export-gpt2: new folder for config.json, "
                        "model.safetensors, tokenizer.json")
    flags.DEFINE_string("config", None, "import-gpt2: base config FILE.py[:preset] "
                        "(default configs/lm_shakespeare.py:gpt2)")
    flags.DEFINE_enum("params", "ema", ["ema", "raw"], "export-gpt2: EMA params if kept")


def _need(*names):
    missing = [f"--{n}" for n in names if not FLAGS[n].value]
    if missing:
        raise UserError(f"{' and '.join(missing)} required")


def _refuse(command: str, *names):
    """Flags of the other command, given to this one: an error, never ignored."""
    given = [f"--{n}" for n in names if FLAGS[n].present]
    if given:
        raise UserError(f"{command} does not take {', '.join(given)}")


def main(argv) -> None:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise UserError(f"usage: python -m genjax.interop {{{'|'.join(COMMANDS)}}} --flags "
                        f"(got {argv[1:]})")
    from genjax.interop import gpt2_workdir
    runtime.setup_logging()
    if argv[1] == "import-gpt2":
        _need("from", "workdir")
        _refuse("import-gpt2", "out", "params")
        base = gpt2_workdir.load_config_file(FLAGS.config) if FLAGS.config else None
        summary = gpt2_workdir.import_gpt2(FLAGS["from"].value, FLAGS.workdir, base)
        m = summary["model"]
        print(f"imported GPT-2 ({summary['params']:,} params: {m['num_layers']} layers x "
              f"{m['embed_dim']}, vocab {m['vocab_size']}, context {m['max_len']}; tokenizer "
              f"{summary['tokenizer']} tokens) into {FLAGS.workdir} as step 0", flush=True)
    else:
        _need("workdir", "out")
        _refuse("export-gpt2", "from", "config")
        written = gpt2_workdir.export_gpt2(FLAGS.workdir, FLAGS.out, which=FLAGS.params)
        print("wrote " + ", ".join(written), flush=True)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
