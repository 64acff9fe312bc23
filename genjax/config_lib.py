"""Configs: every key the library reads is defined and commented here, in `base_config()`.

A family config (configs/<name>.py) starts from `base_config()`, fills `model` and
`data`, picks a preset with the `:arg` suffix and returns the config *locked*, so
`--config.typo=1` fails instead of being silently ignored; `check_shared` holds the shared
keys to their domains (`DOMAINS`: intervals > 0, rates in [0, 1), the choices of a name).

    python -m genjax.train --config=configs/lm_shakespeare.py:cpu --config.optim.lr=1e-3
"""
from __future__ import annotations

import json
from typing import Any

import ml_collections
from ml_collections import ConfigDict

from genjax.errors import ConfigError, UserError  # noqa: F401  (re-exported)

# Logical axis -> mesh axis. Models only name logical axes (see genjax/sharding.py).
DEFAULT_SHARDING_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("conv_in", None),
    ("conv_out", "fsdp"),
    ("channels", None),
    ("height", None),
    ("width", None),
    ("latent", None),
    ("layers", None),   # the stacked-layer axis of scanned params (model.scan_layers)
)


def base_config() -> ConfigDict:
    """Shared keys of every run (unlocked; the family config locks it)."""
    c = ConfigDict()
    c.family = ""                  # loss module: genjax/families/<family>.py (lm, ...)
    c.seed = 0                     # params init, data order and per-step randomness
    c.total_steps = 1000           # train steps, a batch each (accum_steps k: an update every k)
    c.batch_size = 32              # GLOBAL batch (all processes and devices)
    c.log_every_steps = 50         # progress line + metrics.jsonl + TensorBoard
    c.eval_every_steps = 500       # eval on config.eval_split (0 = only at the end)
    c.eval_batches = 20            # batches per periodic eval (LM: windows spread over the split)
    c.final_eval_batches = 0       # batches of the final eval (0 = the whole split)
    c.eval_split = "validation"
    c.ckpt_every_steps = 500       # async checkpoint interval (and always at the end)
    c.keep_checkpoints = 3         # keep the latest k steps...
    c.keep_best = 0                # ...plus the best k by `best_metric` (needs an eval at that step)
    c.best_metric = "eval/loss"    # a key of the eval metrics, prefixed "eval/"
    c.best_mode = "min"            # min | max
    c.strict_restore = False       # corrupt latest checkpoint: fail instead of falling back
    c.deterministic = False        # GPU: --xla_gpu_deterministic_ops=true (recorded in run_meta)
    c.init_from = ""               # checkpoint dir (or dir/step) to take params from (fine-tuning)
    c.init_from_params = "raw"     # raw | ema: its trained params, or their EMA (what its
    #                                samples use; the diffusion configs default to ema)
    c.compute_dtype = "float32"    # float32 | bfloat16 (params stay float32: master weights)
    c.skip_nonfinite = True        # skip an update whose gradient norm is NaN/Inf (counted)
    c.max_consecutive_skips = 10   # then act on `on_nan` (spikes count as skips too)
    # Non-finite params or max_consecutive_skips reached: "halt" (exit 1, step named) or
    # "rollback" (restore the newest checkpoint before the bad steps, skip their batches).
    c.on_nan = "halt"
    c.max_rollbacks = 3            # on_nan=rollback: one more is a halt
    c.spike_k = 0.0                # loss-spike guard: skip an update with loss > EMA mean + k*std (0 = off)
    c.spike_warmup = 100           # ...only after this many accepted losses
    c.spike_decay = 0.99           # ...EMA decay of the loss mean and square (state in TrainState.guard)
    c.peer_timeout_s = 120         # multi-process: a dead peer ends the survivors (exit != 0) within ~this
    c.peak_flops_per_device = 0.0  # for MFU; 0 = look the device up (genjax/flops.py)
    c.debug_nans = False

    c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1))  # -1: the remaining devices
    c.grad_sync = "auto"           # auto | xla | flat: how data-parallel gradients are summed
    #                                (genjax/grad_sync.py; auto = flat where exact, on CPUs)
    c.sharding_rules = DEFAULT_SHARDING_RULES

    c.optim = ConfigDict()
    c.optim.name = "adamw"         # adamw | adam | sgd
    c.optim.lr = 1e-3              # peak learning rate
    c.optim.schedule = "cosine"    # cosine | linear | constant (after warmup)
    c.optim.warmup_steps = 100     # optimizer updates (= train steps unless accum_steps > 1)
    c.optim.min_lr_ratio = 0.1     # final lr = lr * min_lr_ratio
    c.optim.b1 = 0.9
    c.optim.b2 = 0.95
    c.optim.eps = 1e-8
    c.optim.momentum = 0.9         # sgd only
    c.optim.weight_decay = 0.1     # decoupled; masked to params with ndim >= 2
    c.optim.wd_exclude = ("embedding",)  # substrings of param paths never decayed
    c.optim.clip_norm = 1.0        # global-norm clipping (0 = off)
    c.optim.accum_steps = 1        # optax.MultiSteps: k batches' mean gradient per update
    c.optim.ema_decay = 0.0        # EMA of params in the state (0 = off)
    # Regexes (re.search) over "/"-joined parameter paths, e.g. ("token_embed", "block_0/"):
    # frozen leaves get no update, no weight decay and no optimizer state (optax.set_to_zero).
    c.optim.freeze = ()
    # Param groups (families with several players): label -> overrides of the keys above
    # but accum_steps/ema_decay/freeze, plus `every`/`offset` (update when step % every == offset).
    c.optim.groups = ConfigDict()

    # LoRA (genjax/families/lora.py): W + (alpha / rank) * A @ B on the kernels whose
    # "/"-joined paths match `targets`; the base is frozen in model_state. rank 0 = off.
    c.lora = ConfigDict()
    c.lora.rank = 0
    c.lora.alpha = 8.0
    c.lora.targets = (r"kernel$",)

    c.model = ConfigDict()         # family-specific, set by configs/<name>.py
    c.data = ConfigDict()          # family-specific, set by configs/<name>.py
    c.data.max_bad_records = 0     # unreadable records skipped (each named in a warning); one more fails
    c.sample = ConfigDict()        # defaults for genjax.sample / samples printed at the end
    c.sample.grid_samples = 16     # image families: grid W/samples/step_<N>.png at each eval (0 = off)
    # Evaluators (genjax/evaluators/<name>.py): name -> its settings, e.g. the family config's
    # c.evals.text = text.settings(); each evaluator's `settings()` comments its keys.
    # genjax.evaluate runs them all; genjax.train those with during_training=True.
    c.evals = ConfigDict()
    return c


def set_image_data(c: ConfigDict, image_size: int = 32) -> ConfigDict:
    """The `data` keys of every image config (Fashion-MNIST by default); returns c."""
    c.data.name = "fashion_mnist"  # a TFDS builder name (genjax/data or the TFDS catalog)
    c.data.source_dir = ""         # a prepared copy of the dataset (see genjax/data)
    c.data.image_folder = ""       # or a folder of images (one sub-folder per class)
    c.data.image_size = image_size  # 0 = native; 28x28 images are padded (background -1) to 32
    c.data.channels = 0            # 0 = the data's
    c.data.data_dir = ""           # "" = $GENJAX_DATA_DIR or ~/.cache/genjax/tfds
    c.data.classes = ()            # class names or indices kept in every split, e.g.
                                   # --config.data.classes=(Sneaker,); () = every class
    c.data.train_images = ""       # an .npz of labelled uint8 images training reads instead
                                   # of the train split (sample_image_preferences' winners)
    return c


# ----------------------------------------------------------------------- domains
OPTIMIZERS = ("adamw", "adam", "sgd")             # optim.name (genjax/optim.py)
SCHEDULES = ("cosine", "linear", "constant")      # optim.schedule
COMPUTE_DTYPES = ("float32", "bfloat16")          # compute_dtype
ON_NAN = ("halt", "rollback")                     # on_nan
BEST_MODES = ("min", "max")                       # best_mode


def _at_least(low):
    return (lambda v: v >= low), f"must be >= {low}"


def _positive():
    return (lambda v: 0 < v < float("inf")), "must be > 0 and finite"


def _in(low, high):
    return (lambda v: low <= v < high), f"must be in [{low}, {high})"


def _between(low, high):
    return (lambda v: low <= v <= high), f"must be in [{low}, {high}]"


def _one_of(names):
    return (lambda v: v in names), "use " + " | ".join(names)


# The shared keys with a domain narrower than their type: checked by check_shared before
# a run touches its workdir (a 0 interval would divide by zero after minutes of compiling,
# a negative learning rate would train uphill).
DOMAINS = {
    "seed": _in(0, 2**32), "total_steps": _at_least(0), "batch_size": _at_least(1),
    "log_every_steps": _at_least(1), "eval_every_steps": _at_least(0),
    "eval_batches": _at_least(1), "final_eval_batches": _at_least(0),
    "ckpt_every_steps": _at_least(1), "keep_checkpoints": _at_least(1),
    "keep_best": _at_least(0), "best_mode": _one_of(BEST_MODES),
    "compute_dtype": _one_of(COMPUTE_DTYPES), "max_consecutive_skips": _at_least(1),
    "on_nan": _one_of(ON_NAN), "max_rollbacks": _at_least(0), "spike_k": _at_least(0),
    "spike_warmup": _at_least(0), "spike_decay": _in(0, 1), "peer_timeout_s": _at_least(1),
    "peak_flops_per_device": _at_least(0), "lora.rank": _at_least(0),
    "lora.alpha": _positive(),
    "optim.name": _one_of(OPTIMIZERS), "optim.schedule": _one_of(SCHEDULES),
    "optim.lr": _at_least(0), "optim.warmup_steps": _at_least(0),
    "optim.min_lr_ratio": _between(0, 1), "optim.b1": _in(0, 1), "optim.b2": _in(0, 1),
    "optim.eps": _at_least(0), "optim.momentum": _in(0, 1),
    "optim.weight_decay": _at_least(0), "optim.clip_norm": _at_least(0),
    "optim.accum_steps": _at_least(1), "optim.ema_decay": _in(0, 1),
}
GROUP_DOMAINS = {"every": _at_least(1), "offset": _at_least(0)}  # optim.groups.<label>.*


def check_shared(config) -> None:
    """ConfigError (one line naming every offending key) where a shared key of `config`
    lies outside DOMAINS; optim.groups.<label> overrides are held to the optim.* domains.
    Keys a config lacks are not checked."""
    def get(node, dotted):
        for part in dotted.split("."):
            if not hasattr(node, "keys") or part not in node:
                return None
            node = node[part]
        return node

    checks = [(f"config.{key}", get(config, key), domain) for key, domain in DOMAINS.items()]
    for label, group in (get(config, "optim.groups") or {}).items():
        for key, value in group.items():
            domain = GROUP_DOMAINS.get(key) or DOMAINS.get(f"optim.{key}")
            if domain:
                checks.append((f"config.optim.groups.{label}.{key}", value, domain))
    bad = []
    for name, value, (ok, rule) in checks:
        try:
            fine = value is None or bool(ok(value))
        except TypeError:  # a string where a number belongs, or the reverse
            fine = False
        if not fine:
            bad.append(f"{name}={value!r}: {rule}")
    if bad:
        raise ConfigError("; ".join(bad))


# ----------------------------------------------------------------------- helpers
def to_dict(cfg: ConfigDict) -> dict[str, Any]:
    """JSON-able plain dict (tuples become lists)."""
    return json.loads(cfg.to_json_best_effort())


def load_file(spec: str) -> ConfigDict:
    """'path/to/config.py[:preset]' -> its get_config(preset) (a locked ConfigDict)."""
    import importlib.util
    import os
    path, _, preset = spec.partition(":")
    if not os.path.isfile(path):
        raise UserError(f"--config={spec!r}: no such file")
    module_spec = importlib.util.spec_from_file_location("genjax_loaded_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(preset or None)


def from_dict(d: dict[str, Any]) -> ConfigDict:
    return ml_collections.ConfigDict(d)


def from_saved(d: dict[str, Any]) -> ConfigDict:
    """A config saved by a run (checkpoint meta, config.json), with the shared keys added
    since then (`base_config()`) at their defaults, so older runs still load."""
    def merge(base: dict, saved: dict) -> dict:
        out = dict(base)
        for k, v in saved.items():
            out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        return out
    return ConfigDict(merge(to_dict(base_config()), d))


def diff(a: dict, b: dict, prefix: str = "", *, new_keys: bool = True) -> list[str]:
    """Dotted keys whose values differ between two plain dicts (`new_keys` False: keys
    absent from `a`, e.g. added to genjax after `a` was saved, are not compared)."""
    out = []
    for k in sorted(set(a) | set(b)):
        key = f"{prefix}{k}"
        if not new_keys and k not in a:
            continue
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += diff(a[k], b[k], key + ".", new_keys=new_keys)
        elif a.get(k, "<missing>") != b.get(k, "<missing>"):
            out.append(f"{key}: {a.get(k, '<missing>')!r} -> {b.get(k, '<missing>')!r}")
    return out


def apply_preset(config: ConfigDict, presets: dict[str, dict], arg: str | None) -> ConfigDict:
    """Applies preset `arg` (dotted-key -> value) from `presets`; unknown names fail."""
    name = arg or "cpu"
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
    for key, value in presets[name].items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config
