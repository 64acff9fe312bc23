"""Families: one module per kind of model, all behind one declared contract.

`config.family` names the module: a short name is `genjax.families.<name>`; a dotted
module path (`mylab.flows`) is imported as is, so a family can live outside genjax. The
train step, loop, sampler, evaluators and checkpoint layer only call what the contract
below declares, and ask a family what it *can do* (its optional capabilities), never
what it is called. Adding a family = `models/<arch>.py` + a module here (or anywhere
importable) + `configs/<name>.py`; see README "Add a family".

The contract is checked when a config's family is loaded (`get`): a missing or
mis-typed export is an error that names it.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import jax

from genjax.errors import ConfigError
from genjax.families import lora

HELPERS = ("image_seam", "classifier_recipe", "lora", "rl_ppo")  # modules here that are no family


@runtime_checkable
class Family(Protocol):
    """The required exports (shapes in genjax's naming: B batch; all arrays numpy or jax)."""

    def make_model(self, config) -> Any:
        """-> flax.linen.Module."""

    def example_batch(self, config, batch_size: int) -> dict:
        """Zeros with the shapes/dtypes of a batch of `batch_size` examples (init, AOT)."""

    def init_variables(self, model, rng, batch, config) -> dict:
        """`model.init` output {"params": ..., <other collections>: ...}; leaves may be
        boxed with nn.with_logical_partitioning (the trainer reads the names, unboxes)."""

    def loss_fn(self, params, model_state, batch, rng, *, model, config) -> tuple:
        """-> (scalar fp32 loss, (metrics: dict of scalars, new model_state)). params are in
        the compute dtype; model_state holds the non-trained collections (frozen models,
        spectral-norm vectors, counters), {} for most families."""

    def eval_fn(self, params, model_state, batch, *, model, config) -> dict:
        """*Sums* over the batch plus "count" (genjax/eval_sums.py adds and finalizes)."""

    def param_labels(self, params, config) -> Any:
        """Pytree of group labels ("generator"/"discriminator") or None (one group). With
        groups, loss_fn uses stop_gradient so each group's gradient is its own objective,
        and config.optim.groups.<label> gives per-group settings."""

    def make_data(self, config, *, process_index: int, process_count: int) -> Any:
        """data.train_iterator() (local numpy batches; get_state()/set_state()),
        data.eval_batches(split, global_batch_size, max_batches), data.meta() (JSON saved
        in every checkpoint), data.eval_kwargs(), data.splits; optionally
        data.document_eval_batches(split, global_batch_size, max_batches) (per-document
        likelihoods: genjax/evaluators/likelihood.py)."""


REQUIRED = tuple(n for n in Family.__dict__ if not n.startswith("_")
                 and callable(Family.__dict__[n]))

# name -> (how it is called, what a caller may do with it). Only these are optional
# capabilities; a module that has one must give it this shape.
CAPABILITIES = {
    "resolve_config": ("resolve_config(config, data)", "fill data-dependent keys (vocab size)"),
    "finalize_eval": ("finalize_eval(sums, **data.eval_kwargs())", "sums -> reported metrics"),
    "flops_per_example": ("flops_per_example(config)", "model FLOPs per example (MFU)"),
    "throughput_unit": ("throughput_unit(config)", '("tokens", T) or ("images", 1)'),
    "likelihood_metrics": ("likelihood_metrics: tuple[str, ...]",
                           "eval_fn metrics that are likelihoods (the likelihood evaluator)"),
    "sample_text": ("sample_text(model, params, tokenizer, prompts, request)",
                    "-> [[Completion]] per prompt (genjax.sample, the text evaluator)"),
    "text_tokenizer": ("text_tokenizer(meta)", "the tokenizer saved in checkpoint meta"),
    "sample_images": ("sample_images(model, params, config, rng, num_samples, *, label=None, "
                      "prompt=None, model_state=None, **sample_options)",
                      "float32[N, H, W, C] in [-1, 1]"),
    "sample_options": ("sample_options: tuple[str, ...]",
                       "keyword options of sample_images (e.g. guidance, steps)"),
    "sample_labels": ("sample_labels(config, num_samples, label=None)",
                      "the labels sample_images conditions on (None: unconditional)"),
    "conditioning": ("conditioning(config)", '"class" | "text" | "none"'),
    "sample_arrays": ("sample_arrays(model, params, config, rng, num_samples)",
                      "float32[N, ...] samples of any other kind (written as .npz)"),
    "runtime_keys": ("runtime_keys: tuple[str, ...]",
                     "config keys that may change across a resume (dropout, kernels)"),
    "merge_params": ("merge_params(params, model_state)",
                     "-> (params, model_state) the model applies at inference (LoRA: W + AB)"),
    "pretrained_target": ("pretrained_target(abstract_state)",
                          "the abstract params init_from restores (default: state.params)"),
    "load_pretrained": ("load_pretrained(state, src_params, config)",
                        "-> state with init_from's params placed (default: params and EMA)"),
    "frozen_from": ("frozen_from(config)",
                    "-> {model_state key: run path (W, W/checkpoints/<step>)}: frozen params "
                    "of other runs (a reward model), restored into model_state[key] at a "
                    "fresh start after init_from; a resume reads them from its checkpoint"),
    "aux_params": ("aux_params(config)",
                   "-> top-level params keys trained with the model but no part of it (a "
                   "PPO value head): merge_params leaves them out, and the checkpoint meta "
                   "lists them ('aux_params') so that another run's init_from skips them"),
    "local_loss": ("local_loss(config)",
                   "-> True when loss_fn is a mean over the batch's examples with nothing "
                   "shared between them (no batch statistics, no randomness, model_state "
                   "unchanged): each data shard's loss and gradients, averaged, are then "
                   "the batch's (config.grad_sync=flat, genjax/grad_sync.py)"),
    "lora_merged_state": ("lora_merged_state(model_state, base)",
                          "-> the model_state a run of this family without LoRA holds, from "
                          "a LoRA run's (its frozen base `base` left out): where the base "
                          "also served as a frozen model (DPO's reference), it goes there"),
    "model_kwargs": ("model_kwargs(config)",
                     "-> the genjax.models.transformer.Transformer keyword arguments of a "
                     "transformer LM (export to GPT-2)"),
    "reference_params": ("reference_params(model_state, params)",
                         "the frozen reference policy's params kept in the checkpointed "
                         "model_state, cast like `params` (the alignment evaluator)"),
}

# Probe calls: a function export must accept these arguments (checked with
# inspect.signature, nothing is run).
_PROBES = {
    "make_model": ((1,), {}), "example_batch": ((1, 1), {}),
    "init_variables": ((1, 1, 1, 1), {}), "loss_fn": ((1, 1, 1, 1), dict(model=1, config=1)),
    "eval_fn": ((1, 1, 1), dict(model=1, config=1)), "param_labels": ((1, 1), {}),
    "make_data": ((1,), dict(process_index=0, process_count=1)),
    "resolve_config": ((1, 1), {}), "finalize_eval": ((1,), {}),
    "flops_per_example": ((1,), {}), "throughput_unit": ((1,), {}),
    "sample_text": ((1, 1, 1, 1, 1), {}), "text_tokenizer": ((1,), {}),
    "sample_images": ((1, 1, 1, 1, 1), dict(label=None)),
    "sample_labels": ((1, 1), dict(label=None)), "conditioning": ((1,), {}),
    "sample_arrays": ((1, 1, 1, 1, 1), {}), "merge_params": ((1, 1), {}),
    "pretrained_target": ((1,), {}), "load_pretrained": ((1, 1, 1), {}),
    "frozen_from": ((1,), {}), "reference_params": ((1, 1), {}), "aux_params": ((1,), {}),
    "lora_merged_state": ((1, 1), {}),
    "local_loss": ((1,), {}), "model_kwargs": ((1,), {}),
}
_TUPLES = ("likelihood_metrics", "sample_options", "runtime_keys")


def module_name(family: str) -> str:
    """'lm' -> 'genjax.families.lm'; a dotted path is a module path as is."""
    return family if "." in family else f"{__name__}.{family}"


def get(family: str) -> ModuleType:
    """The module of `family`, its contract checked (ConfigError names what is wrong)."""
    if not family:
        raise ConfigError("config.family is empty: name a family (e.g. lm) or a module path")
    name = module_name(family)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is None or not name.startswith(e.name):
            raise
        raise ConfigError(f"config.family={family!r}: no module {name} (built in: "
                          f"{registered()})") from None
    problems = contract_problems(module)
    if problems:
        raise ConfigError(f"config.family={family!r}: {name} breaks the family contract "
                          f"(genjax/families/__init__.py): " + "; ".join(problems))
    return module


def contract_problems(module: ModuleType) -> list[str]:
    """Missing required exports and exports of the wrong shape, one string each."""
    out = [f"missing {n}" for n in REQUIRED if not hasattr(module, n)]
    for name in (*REQUIRED, *CAPABILITIES):
        if not hasattr(module, name):
            continue
        value = getattr(module, name)
        if name in _TUPLES:
            if not (isinstance(value, tuple) and all(isinstance(v, str) for v in value)):
                out.append(f"{name} must be a tuple of str, got {value!r}")
            continue
        if not callable(value):
            out.append(f"{name} must be callable, got {type(value).__name__}")
            continue
        args, kwargs = _PROBES[name]
        try:
            inspect.signature(value).bind(*args, **kwargs)
        except TypeError as e:
            want = CAPABILITIES[name][0] if name in CAPABILITIES else _required_sig(name)
            out.append(f"{name}{inspect.signature(value)} cannot be called as {want} ({e})")
        except ValueError:  # builtins without a signature: trust them
            pass
    return out


def _required_sig(name: str) -> str:
    sig = inspect.signature(getattr(Family, name))
    params = [p for p in sig.parameters.values() if p.name != "self"]
    return f"{name}({', '.join(str(p) for p in params)})"


def for_config(config) -> ModuleType:
    """The family a config trains: `get(config.family)`, wrapped by LoRA when
    config.lora.rank > 0 (genjax/families/lora.py)."""
    family = get(config.family)
    return lora.wrap(family, config) if lora.enabled(config) else family


def for_inference(family: ModuleType) -> ModuleType:
    """The family whose samplers and evaluators apply to `merge_params`' output."""
    return getattr(family, "inner", family)


def inference_params(family: ModuleType, params, model_state) -> tuple[Any, Any]:
    """(params, model_state) the model applies at inference (LoRA adapters merged)."""
    if has(family, "merge_params"):
        return family.merge_params(params, model_state)
    return params, model_state


def pretrained_target(family: ModuleType, abstract_state):
    """The abstract params `config.init_from` restores into."""
    if has(family, "pretrained_target"):
        return family.pretrained_target(abstract_state)
    return abstract_state.params


def load_pretrained(family: ModuleType, state, src_params, config):
    """`state` with init_from's `src_params` placed: the family's `load_pretrained`, else
    as params (and EMA params when kept)."""
    if has(family, "load_pretrained"):
        return family.load_pretrained(state, src_params, config)
    state = state.replace(params=src_params)
    if jax.tree_util.tree_leaves(state.ema_params):
        state = state.replace(ema_params=jax.tree_util.tree_map(lambda x: x.copy(), src_params))
    return state


def frozen_from(family: ModuleType, config) -> dict[str, str]:
    """{model_state key: run path} of the frozen models restored from other runs at a
    fresh start (the family's `frozen_from`), {} for most families."""
    return dict(family.frozen_from(config)) if has(family, "frozen_from") else {}


def aux_params(family: ModuleType, config) -> tuple[str, ...]:
    """The params keys of `family` that are no part of its model (the family's
    `aux_params`), () for most families."""
    return tuple(family.aux_params(config)) if has(family, "aux_params") else ()


def local_loss(family: ModuleType, config) -> bool:
    """Whether per-shard losses and gradients, averaged, are `family`'s whole-batch ones for
    this config (the family's `local_loss`); False for families that do not say."""
    return bool(family.local_loss(config)) if has(family, "local_loss") else False


def reference_params(family: ModuleType, model_state, params):
    """The frozen reference policy of a run (its `reference_params`), or None when the
    family keeps none. `model_state` as checkpointed (under LoRA: with the frozen base)."""
    if has(family, "reference_params"):
        return family.reference_params(model_state, params)
    return None


def has(family: ModuleType, capability: str) -> bool:
    """Whether `family` offers the optional `capability` (a key of CAPABILITIES)."""
    if capability not in CAPABILITIES:
        raise KeyError(f"unknown capability {capability!r}: {sorted(CAPABILITIES)}")
    return hasattr(family, capability)


def runtime_keys(family: ModuleType) -> tuple[str, ...]:
    """Config keys that change how a model runs, not what it is (resume may change them)."""
    return tuple(getattr(family, "runtime_keys", ()))


def conditioning(family: ModuleType, config) -> str:
    """"class" | "text" | "none": what the family's image sampler conditions on."""
    if has(family, "conditioning"):
        return family.conditioning(config)
    if has(family, "sample_labels"):
        return "none" if family.sample_labels(config, 1) is None else "class"
    return "none"


def registered() -> list[str]:
    """The families built into genjax (modules of this package, helpers excluded)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if m.name not in HELPERS and not m.name.startswith("_"))
