r"""Convert a checkpoint between unscanned and scanned layer layouts (model.scan_layers).

  python -m genjax.scan_convert --workdir=runs/lm --out=runs/lm_scanned [--step=N]

Restores step N (default: the latest) of --workdir, stacks (or unstacks) the layers of
its params, optimizer moments, EMA and the frozen copies of the same model (a DPO
reference, a LoRA base; LoRA adapters too) (genjax.models.scan_convert, bit for bit), and
writes it as step N of --out with model.scan_layers flipped in its saved config. Frozen
models of their own config (a distillation teacher, an RL reward model) keep their layout,
as their source runs give it. The data position is kept, so `python -m genjax.train
--workdir=<out> --config... --config.model.scan_layers=<new>` resumes exactly where the
old run stopped.
"""
from __future__ import annotations


from genjax import assemble, config_lib, inference, quantize, sharding
from genjax import workdir as workdir_lib
from genjax.errors import UserError
from genjax.models import scan_convert


def convert_checkpoint(workdir: str, out: str, step: int | None = None) -> int:
    """Writes the converted step to `out` (a new or empty folder); returns the step."""
    workdir_lib.refuse_nonempty(out)
    parts, state, data_state, meta, step = inference.restore(workdir, step)
    quantize.refuse_int8(meta, workdir, "are not converted",
                         "convert the float run {run} and quantize that")
    config = config_lib.from_saved(meta["config"])  # as saved (its mesh), not as restored
    if "scan_layers" not in config.model:
        raise UserError(f"the checkpoint in {workdir!r} has no model.scan_layers setting "
                        f"(family {meta.get('family')!r}): nothing to convert")
    config.model.scan_layers = not config.model.scan_layers
    # The new config's state says which params dicts change layout (the trained model's).
    flipped = config_lib.ConfigDict(config_lib.to_dict(parts.config))
    flipped.model.scan_layers = config.model.scan_layers
    target = assemble.assemble(flipped, sharding.make_mesh(flipped.mesh)).abstract_state
    # save() writes the new step's checksums and metrics over the source's
    workdir_lib.write_run(out, step, scan_convert.convert_like(state, target), data_state,
                          meta, config_lib.to_dict(config))
    return step


def main(argv) -> None:
    from absl import flags
    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir or not FLAGS.out:
        raise UserError("--workdir and --out are required")
    step = convert_checkpoint(FLAGS.workdir, FLAGS.out, FLAGS.step)
    print(f"converted step {step}: {FLAGS.workdir} -> {FLAGS.out}", flush=True)


if __name__ == "__main__":
    from absl import flags
    flags.DEFINE_string("workdir", "", "run directory holding checkpoints/")
    flags.DEFINE_string("out", "", "new run directory for the converted checkpoint")
    flags.DEFINE_integer("step", None, "step to convert (default: the latest)")
    from genjax import cli
    cli.run(main)
