r"""Ahead-of-time pod check: compile the sharded train step for a TPU slice, without TPUs.

  pip install -e '.[tpu-aot]'     # libtpu: XLA's TPU compiler; no TPU needed to compile
  python -m genjax.aot --config=configs/lm_shakespeare.py:gpt2_124m --topology=v5e:4x4 \
      --config.mesh.data=1 --config.mesh.fsdp=-1 --config.batch_size=64
  python -m genjax.aot --config=configs/lm_shakespeare.py:tiny --topology=local

Builds exactly what genjax.train builds (genjax.assemble on a mesh of the topology's
devices), lowers `train_step` with abstract state and batch, compiles it, and prints the
bytes one chip holds: parameters, optimizer state, EMA, batch, temporaries (activations,
gradients, collectives' buffers: XLA's `temp_size`), the step's peak estimate and whether
it fits the chip's HBM (for a TPU, XLA's compiler itself refuses a step that exceeds the
chip's usable HBM; that is reported with its numbers). Exit code 1 when it does not fit,
2 on bad input.
`--topology=local` checks the local devices (no libtpu needed). The LM's vocab_size, set
from the tokenizer at train time, is taken from --vocab_size when the config leaves it 0.
`--json=PATH` writes the numbers.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import time
from typing import Any

import jax
import numpy as np

from genjax import assemble as assemble_lib
from genjax import cli, config_lib, sharding
from genjax import workdir as workdir_lib
from genjax.errors import ConfigError, UserError

GiB = 1024 ** 3
# HBM per chip (Google Cloud TPU system architecture pages, 2025):
#   v4  32 GiB  https://cloud.google.com/tpu/docs/v4
#   v5e 16 GiB  https://cloud.google.com/tpu/docs/v5e
#   v5p 95 GiB  https://cloud.google.com/tpu/docs/v5p
#   v6e 32 GiB  https://cloud.google.com/tpu/docs/v6e
HBM_GIB_PER_CHIP = {"v4": 32, "v5e": 16, "v5p": 95, "v6e": 32}
# v4/v5p chips have two TensorCores that JAX drives as one device ("megacore"), the way
# the TPU VMs run them (and MaxText's accelerator_to_spec_map describes them).
CHIP_CONFIG = {"v4": "megacore", "v5p": "megacore"}
DEFAULT_VOCAB = 50304  # GPT-2's 50257 rounded up to a multiple of 64 (nanoGPT)


# ---------------------------------------------------------------------- devices
def parse_topology(topology: str) -> tuple[str, int]:
    """"v5e:4x4" -> ("v5e", 16 chips)."""
    m = re.fullmatch(r"(v\d+[a-z]*):(\d+(?:x\d+){1,2})", topology)
    if not m or m.group(1) not in HBM_GIB_PER_CHIP:
        raise UserError(f"--topology={topology!r}: expected local or <generation>:<AxB[xC]> "
                        f"with generation in {sorted(HBM_GIB_PER_CHIP)}, e.g. v5e:4x4, v5p:2x2x1")
    return m.group(1), math.prod(int(d) for d in m.group(2).split("x"))


def tpu_devices(topology: str) -> list:
    """The (non-addressable) devices of a TPU slice, described by libtpu."""
    generation, _ = parse_topology(topology)
    if importlib.util.find_spec("libtpu") is None and not os.environ.get("TPU_LIBRARY_PATH"):
        raise UserError(f"--topology={topology} needs libtpu to compile for TPUs: "
                        f"pip install -e '.[tpu-aot]' (--topology=local works without it)")
    # A trainer or a second check may have loaded libtpu: don't fight over its lockfile.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies
    try:
        desc = topologies.get_topology_desc(
            topology_name=topology, platform="tpu",
            chip_config_name=CHIP_CONFIG.get(generation, "default"))
    except Exception as e:  # noqa: BLE001 - libtpu/jax mismatch, unknown shape, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"libtpu cannot describe --topology={topology} ({first}); "
                        f"jax {jax.__version__} needs the libtpu its 'tpu' extra pins") from None
    return list(desc.devices)


def hbm_bytes_per_device(topology: str, devices: list) -> int | None:
    if topology == "local":
        stats = devices[0].memory_stats() if hasattr(devices[0], "memory_stats") else None
        return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None
    generation, chips = parse_topology(topology)
    return HBM_GIB_PER_CHIP[generation] * GiB * chips // len(devices)


# ---------------------------------------------------------------------- the check
def _shard_bytes(tree) -> int:
    total = 0
    for leaf in jax.tree_util.tree_leaves(tree):
        shard = leaf.sharding.shard_shape(leaf.shape) if leaf.shape else ()
        total += int(np.prod(shard, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
    return total


def abstract_batch(parts: assemble_lib.Parts):
    example = parts.family.example_batch(parts.config, int(parts.config.batch_size))
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=s),
        example, parts.batch_shardings)


def check(config, devices: list, hbm: int | None = None) -> dict[str, Any]:
    """Compiles config's train step on a mesh of `devices`; per-device bytes and fit."""
    config_lib.check_shared(config)
    try:
        mesh = sharding.make_mesh(config.mesh, devices)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    parts = assemble_lib.assemble(config, mesh)
    batch = abstract_batch(parts)
    lowered = parts.train_step.lower(parts.abstract_state, batch)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        mem, refused = lowered.compile().memory_analysis(), None
    except Exception as e:  # noqa: BLE001 - XLA's TPU compiler refuses what cannot fit
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        mem, refused = None, str(e).strip().splitlines()[0]
    compile_s = time.perf_counter() - t0
    compile_cpu_s = time.process_time() - c0  # all threads: steadier than wall on a busy host
    state = assemble_lib.state_bytes_per_device(parts)
    out = {
        "devices": len(devices), "device_kind": devices[0].device_kind,
        "mesh": {k: int(v) for k, v in mesh.shape.items()},
        "params_count": sum(int(np.prod(x.shape)) for x in
                            jax.tree_util.tree_leaves(parts.abstract_state.params)),
        "params": state["params"], "opt_state": state["opt_state"], "ema_params": state["ema_params"],
        "model_state": state["model_state"], "batch": _shard_bytes(batch),
        "compile_s": compile_s, "compile_cpu_s": compile_cpu_s, "hbm": hbm,
    }
    if refused is not None:
        out["refused"] = refused
        need = _bytes_in(refused, "temporaries")
        if need is not None:
            out["temporaries"] = need
        usable = _bytes_in(refused, "available HBM")
        if usable is not None:
            out["usable_hbm"] = usable
        out["total"] = _state_and_batch(out) + out.get("temporaries", 0)
        out["fits"] = False
        return out
    if mem is not None:
        out.update(arguments=int(mem.argument_size_in_bytes), outputs=int(mem.output_size_in_bytes),
                   aliased=int(mem.alias_size_in_bytes), temporaries=int(mem.temp_size_in_bytes),
                   code=int(mem.generated_code_size_in_bytes))
        # Live at the step's peak: inputs, outputs not written in place of (donated)
        # inputs, temporaries, and the program itself (XLA's own accounting).
        out["total"] = (out["arguments"] + out["outputs"] - out["aliased"] +
                        out["temporaries"] + out["code"])
    else:  # a backend without memory analysis: the state alone
        out["total"] = _state_and_batch(out)
    out["fits"] = None if hbm is None else bool(out["total"] <= hbm)
    return out


def _state_and_batch(r: dict) -> int:
    return r["params"] + r["opt_state"] + r["ema_params"] + r["model_state"] + r["batch"]


def _bytes_in(message: str, what: str) -> int | None:
    """"... HLO temporaries (22.00G) ..." -> bytes (XLA's K/M/G/T are powers of 1024)."""
    m = re.search(re.escape(what) + r"\s*\(([\d.]+)\s*([KMGT]?)i?B?\)", message)
    if not m:
        return None
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " "))


def report(r: dict, title: str) -> str:
    mib = lambda b: f"{b / 2**20:12,.1f}"  # noqa: E731
    rows = [("parameters", r["params"]), ("optimizer state", r["opt_state"]),
            ("EMA parameters", r["ema_params"]),
            ("frozen models (model_state)", r.get("model_state", 0)), ("batch", r["batch"])]
    if "refused" in r:
        rows += [("activations + temporaries", r.get("temporaries", 0))]
    elif "temporaries" in r:
        rows += [("activations + temporaries", r["temporaries"]),
                 ("outputs not donated", r["outputs"] - r["aliased"]),
                 ("compiled code", r["code"])]
    rows.append(("total (at least)" if "refused" in r else "total (peak estimate)", r["total"]))
    lines = [title, f"  {r['params_count']:,} params | mesh {r['mesh']} | "
             f"{r['devices']} x {r['device_kind']} | compiled in {r['compile_s']:.1f} s",
             f"  {'per device':<28}{'MiB':>12}"]
    lines += [f"  {name:<28}{mib(b)}" for name, b in rows]
    if "refused" in r:
        lines.append(f"  DOES NOT FIT: the TPU compiler refused it: {r['refused']}")
    elif r["hbm"] is None:
        lines.append(f"  {'HBM':<28}{'unknown':>12}  (no limit known for this device)")
    else:
        verdict = (f"fits ({100 * r['total'] / r['hbm']:.0f}% used)" if r["fits"]
                   else f"DOES NOT FIT (needs {r['total'] / GiB:.1f} GiB)")
        lines.append(f"  {'HBM':<28}{mib(r['hbm'])}  {verdict}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- CLI
def main(argv) -> None:
    import sys

    from absl import flags
    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.config is None:
        raise UserError("--config is required, e.g. --config=configs/lm_shakespeare.py:gpt2_124m")
    if FLAGS.json:  # before compiling: exit 1 means "does not fit", bad input is 2
        if os.path.isdir(FLAGS.json):
            raise UserError(f"--json={FLAGS.json!r} is a folder: give a file name")
        workdir_lib.make_parent(FLAGS.json, "--json")
    topology = FLAGS.topology
    if topology != "local":
        parse_topology(topology)  # bad input fails before libtpu loads
        if not os.environ.get("JAX_PLATFORMS"):
            jax.config.update("jax_platforms", "cpu")  # the host only traces; never a local TPU
        devices = tpu_devices(topology)
    else:
        devices = jax.devices()
    config = FLAGS.config
    config.unlock()
    if "vocab_size" in config.model and not config.model.vocab_size:
        config.model.vocab_size = FLAGS.vocab_size
    config.lock()
    r = check(config, devices, hbm_bytes_per_device(topology, devices))
    r.update(topology=topology, config=_config_spec(sys.argv))
    print(report(r, f"genjax.aot: {r['config']} on {topology}"), flush=True)
    if FLAGS.json:
        try:
            with open(FLAGS.json, "w") as f:
                json.dump(r, f, indent=2)
        except OSError as e:
            raise UserError(f"--json={FLAGS.json!r}: cannot write it: {e.strerror or e}") from None
    if r["fits"] is False:
        sys.exit(1)


def _config_spec(argv) -> str:
    specs = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    overrides = [a for a in argv if a.startswith("--config.")]
    return " ".join(specs[-1:] + overrides)


def define_flags():
    from absl import flags
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", None, "configs/<name>.py[:preset]", lock_config=True)
    flags.DEFINE_string("topology", "local", "local | <tpu generation>:<AxB[xC]>, e.g. v5e:4x4")
    flags.DEFINE_integer("vocab_size", DEFAULT_VOCAB, "model.vocab_size when the config has 0")
    flags.DEFINE_string("json", "", "also write the numbers to this JSON file")


if __name__ == "__main__":
    define_flags()
    cli.run(main, tpu_compiler=True)
