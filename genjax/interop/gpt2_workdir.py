"""GPT-2 folders <-> genjax workdirs: a step-0 checkpoint in, a Hugging Face folder out.

  import_gpt2(folder, workdir): config.json + model.safetensors + tokenizer -> checkpoint
      step 0 of the LM config (configs/lm_shakespeare.py:gpt2 by default, its model keys
      taken from config.json), loadable by genjax.sample / genjax.evaluate / init_from.
  export_gpt2(workdir, out): the latest checkpoint -> config.json + model.safetensors
      (+ tokenizer.json for a BPE tokenizer), in the HF key names and layouts.

Everything that can be wrong with the input is checked before anything is written.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from genjax import assemble as assemble_lib
from genjax import checkpoint as ckpt_lib
from genjax import config_lib, families, inference, quantize, runtime, sharding
from genjax import step as step_lib
from genjax import workdir as workdir_lib
from genjax.errors import UserError
from genjax.interop import gpt2, hf_folder
from genjax.models import scan_convert

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "lm_shakespeare.py") + ":gpt2"


def load_config_file(spec: str):
    """'path/to/config.py[:preset]' -> its get_config(preset) (a locked ConfigDict)."""
    return config_lib.load_file(spec)


def import_config(hf_config: dict, tokenizer, base=None):
    """The run config of an imported GPT-2: `base` (default DEFAULT_CONFIG) with the model
    keys of config.json and the BPE tokenizer's vocabulary."""
    config = load_config_file(DEFAULT_CONFIG) if base is None else base
    model = gpt2.model_config(hf_config)
    if tokenizer.vocab_size > model["vocab_size"]:
        raise UserError(f"the tokenizer has {tokenizer.vocab_size} tokens, more than the "
                        f"model's vocab_size={model['vocab_size']}")
    config.unlock()
    for key, value in model.items():
        if key not in config.model:
            raise UserError(f"--config: config.model has no key {key!r} (an LM config "
                            f"like configs/lm_shakespeare.py is needed)")
        config.model[key] = value
    config.data.tokenizer = "bpe"
    config.data.vocab_size = tokenizer.vocab_size
    config.lock()
    return config


def _data_parallel_mesh(config):
    config.unlock()
    config.mesh = config_lib.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    config.lock()
    return sharding.make_mesh(config.mesh)


def import_gpt2(folder: str, workdir: str, base_config=None) -> dict:
    """Writes checkpoint step 0 of `folder`'s GPT-2 into a new `workdir`; returns a summary."""
    folder = os.path.abspath(folder)
    workdir_lib.refuse_nonempty(workdir, "--workdir")  # before the weights are read
    hf = hf_folder.read_config(folder)
    gpt2.model_config(hf)  # the architecture is checked before the weights are read
    tokenizer = hf_folder.read_tokenizer(folder)
    config = import_config(hf, tokenizer, base_config)
    if "tokenizer_from" in config.data:  # its own BPE tokenizer, for evaluate and fine-tuning
        config.unlock()
        config.data.tokenizer_from = os.path.abspath(workdir)
        config.lock()
    params_np = gpt2.from_hf(hf_folder.read_weights(folder), gpt2.model_config(hf))
    workdir = workdir_lib.make_workdir(workdir)

    parts = assemble_lib.assemble(config, _data_parallel_mesh(config))
    problems = ckpt_lib.tree_mismatches(params_np, parts.abstract_state.params)
    if problems:  # a mapping bug, not bad input: the model and the mapping disagree
        raise AssertionError("GPT-2 mapping does not fit the model: " + "; ".join(problems))
    params = jax.device_put(params_np, parts.state_shardings.params)
    train_key = jax.random.split(jax.random.PRNGKey(config.seed))[1]
    init = jax.jit(lambda p, k: step_lib.init_state(
        p, {}, parts.tx, k, ema=bool(config.optim.ema_decay)),
        out_shardings=parts.state_shardings)
    state = init(params, train_key)
    meta = {"family": config.family, "config": config_lib.to_dict(config),
            "data": {"dataset": f"hf_gpt2:{os.path.basename(folder)}",
                     "tokenizer": tokenizer.to_json()},
            "genjax_version": runtime.version(),
            "source": {"format": "hf_gpt2", "from": folder, "hf_config": hf}}
    ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
    ckpt.save(0, state, {}, meta)
    ckpt.close()
    n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params_np))
    return {"params": n, "model": gpt2.model_config(hf), "tokenizer": tokenizer.vocab_size}


def export_gpt2(workdir: str, out: str, which: str = "ema") -> list[str]:
    """Writes the latest checkpoint of `workdir` as a HF GPT-2 folder `out` (must be new)."""
    workdir_lib.refuse_nonempty(out)
    loaded = inference.load(workdir, which=which)
    quantize.refuse_int8(loaded.meta, workdir, "do not export to GPT-2",
                         "export the float run {run}")
    if not families.has(loaded.family, "model_kwargs"):
        raise UserError(f"{workdir}: a {loaded.config.family!r} model is not a transformer "
                        f"LM; only those export to GPT-2")
    model = dict(loaded.family.model_kwargs(loaded.config))
    model.setdefault("norm_eps", 1e-6)  # workdirs from before the key (the flax default)
    config = gpt2.hf_config(model, loaded.meta.get("source", {}).get("hf_config"))
    params = scan_convert.unstack(jax.device_get(loaded.params))  # scan_layers: per layer
    tensors = gpt2.to_hf(params, model)
    tok = loaded.meta.get("data", {}).get("tokenizer", {})
    workdir_lib.make_workdir(out, "--out")
    return hf_folder.write_folder(out, config, tensors,
                                  tok.get("tokenizer") if tok.get("kind") == "bpe" else None)
