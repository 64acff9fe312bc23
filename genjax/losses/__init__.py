"""Loss modules: one per model family, all with the same exports.

`config.family` names the module (`genjax.losses.<family>`, found with importlib; no
registry). The shared train step and loop (`genjax/step.py`, `genjax/train.py`) only
ever call these functions, so adding a family never touches the trainer:

  make_model(config) -> flax.linen.Module
  example_batch(config, batch_size) -> dict[str, np.ndarray]
      zeros with the shapes/dtypes of a batch of `batch_size` examples (init, AOT).
  init_variables(model, rng, batch, config) -> dict
      `model.init` output: {"params": ..., <other collections>: ...}; leaves may be
      boxed with nn.with_logical_partitioning (the trainer reads the names, then unboxes).
  loss_fn(params, model_state, batch, rng, *, model, config) -> (loss, (metrics, model_state))
      params in compute dtype; `model_state` holds non-trained collections
      ({} for most families; e.g. spectral-norm vectors for the GAN). Scalar fp32 loss.
      metrics: dict of scalars (averaged over the batch).
  eval_fn(params, model_state, batch, *, model, config) -> dict[str, scalar]
      *sums* over the batch plus "count"; the loop adds them over batches and divides.
  param_labels(params, config) -> pytree of str | None
      Parameter groups (e.g. "generator"/"discriminator"). None = one group.
      With groups, `loss_fn` must use stop_gradient so each group's gradient comes only
      from its own objective, and `config.optim.groups.<label>` gives per-group settings.
  make_data(config, *, process_index, process_count) -> data
      data.train_iterator() (yields local numpy batches; get_state()/set_state()),
      data.eval_batches(split, global_batch_size, max_batches), data.meta() (JSON, saved
      in every checkpoint: tokenizer, class names...), data.eval_kwargs().

Optional exports the loop uses when present:
  resolve_config(config, data)        fill data-dependent keys (e.g. the LM's vocab size)
  finalize_eval(sums, **eval_kwargs)  sums -> reported metrics (default: sums / count)
  flops_per_example(config)           model FLOPs per training example (for MFU)
  throughput_unit(config)             ("tokens", T) or ("images", 1) for the progress line
"""
import importlib
from types import ModuleType

REQUIRED = ("make_model", "example_batch", "init_variables", "loss_fn", "eval_fn",
            "param_labels", "make_data")


def get(family: str) -> ModuleType:
    """The loss module of `family`, with a clear error for a typo."""
    try:
        module = importlib.import_module(f"genjax.losses.{family}")
    except ModuleNotFoundError as e:
        if e.name != f"genjax.losses.{family}":
            raise
        raise ValueError(f"config.family={family!r}: no module genjax/losses/{family}.py") from None
    missing = [n for n in REQUIRED if not hasattr(module, n)]
    if missing:
        raise TypeError(f"genjax.losses.{family} lacks {missing}")
    return module
