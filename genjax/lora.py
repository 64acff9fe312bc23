r"""LoRA tools: merge a LoRA run's adapters into an ordinary checkpoint.

  python -m genjax.lora merge --workdir=W --out=W2

W2 then holds one step (W's latest) of the same family with W + (alpha / rank) * A @ B
as its params and lora.rank = 0 in its config: `genjax.sample`, `genjax.evaluate` and
`config.init_from` read it like any run. (The adapters themselves: genjax/families/lora.py.)
"""
from __future__ import annotations

import os

import jax

from genjax import assemble as assemble_lib
from genjax import cli, config_lib, families, inference, runtime
from genjax import workdir as workdir_lib
from genjax.errors import UserError
from genjax.families import lora as lora_lib


def merge_workdir(workdir: str, out: str) -> int:
    """Writes the merged checkpoint of `workdir`'s latest step into `out`; returns the step."""
    workdir_lib.refuse_nonempty(out)
    parts, state, data_state, meta, step = inference.restore(workdir)
    config = parts.config
    if not lora_lib.enabled(config):
        raise UserError(f"{workdir!r} is not a LoRA run (config.lora.rank is 0): nothing to merge")
    params, model_state = families.inference_params(parts.family, state.params, state.model_state)

    merged_config = config.copy_and_resolve_references()
    merged_config.unlock()
    merged_config.lora.rank = 0
    merged_config.lock()
    merged = assemble_lib.assemble(merged_config, parts.mesh)
    new_state = merged.init_state().replace(step=state.step, params=params,
                                            model_state=model_state)
    workdir_lib.write_run(out, step, new_state, data_state,
                          dict(meta, merged_from=os.path.abspath(workdir)),
                          config_lib.to_dict(merged_config))
    return step


def main(argv) -> None:
    from absl import flags
    FLAGS = flags.FLAGS
    if len(argv) != 2 or argv[1] != "merge":
        raise UserError("usage: python -m genjax.lora merge --workdir=W --out=W2")
    runtime.setup_logging()
    step = merge_workdir(FLAGS.workdir, FLAGS.out)
    if jax.process_index() == 0:
        print(f"merged step {step} of {FLAGS.workdir} into {FLAGS.out}", flush=True)


def define_flags():
    from absl import flags
    flags.DEFINE_string("workdir", None, "the LoRA run", required=True)
    flags.DEFINE_string("out", None, "a new folder for the merged checkpoint", required=True)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
