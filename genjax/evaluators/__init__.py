"""Evaluators: small plug-ins that score a trained model, found by module path.

A plug-in is `genjax/evaluators/<name>.py` (imported with importlib; no registry) with

  evaluate(ctx: EvalContext, settings: ConfigDict) -> dict
  NEEDS = ("sample_images", ...)   optional: family capabilities it needs
                                   (genjax/families/__init__.py CAPABILITIES)
  skip_reason(family, config) -> str | None   optional: why it does not apply to this run
  SAMPLES = ("images", ...)        optional: it can score samples given in a file instead
                                   (`genjax.evaluate --samples=FILE`: "images", "labels",
                                   "text"; genjax/evaluators/sample_files.py); without it,
                                   it needs the model (likelihood)
  ON_REQUEST = "why"               optional: in samples mode it runs only when --only names it
  check_settings(settings) -> None optional: UserError for settings it cannot run with
                                   (checked before anything is sampled or written)

configured per run as `config.evals.<name>` (its settings: `during_training` plus its
own keys). `evaluate` returns
  {"metrics": {str: float},
   "floors": {str: float},   same keys as some metrics: the real-vs-real reference
   "figures": [str],         PNG paths written under ctx.out_dir
   "markdown": str,          optional extra report section
   "details": dict}          optional, JSON-able
(`normalize` fills the optional keys and checks the types).

Who runs them: `python -m genjax.evaluate --workdir=W` (every configured evaluator that
applies, then W/eval/report.md; the ones that do not apply are listed with the reason),
and genjax.train at each periodic eval (those with `during_training=True`, logged to
metrics.jsonl as eval/<name>/<key>); `python -m genjax.evaluate --samples=FILE` runs the
ones that can score the file's samples (`SAMPLES`), which they get from the same
`ctx.sample_images` / `ctx.sample_texts` as a model's. An evaluator that trains a model (cas, the feature
net) reaches the loop through `ctx.train_fn`, given by the command that built the context.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import pkgutil
import time
from types import ModuleType
from typing import Any, Iterable, Sequence

import jax
import numpy as np

from genjax import assemble, eval_sums, families
from genjax import step as step_lib
from genjax.errors import ConfigError, UserError

NOT_PLUGINS = ("report", "plots", "feature_net", "text_match", "sample_files", "words",
               "gold_reward", "ship_feature_net", "reward_classifier")  # helpers, not plug-ins


# ----------------------------------------------------------------------- lookup
def available() -> list[str]:
    """Module names in this package that could be evaluators (helpers excluded)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if m.name not in NOT_PLUGINS and not m.name.startswith("_"))


def get(name: str) -> ModuleType:
    """The evaluator module `name`; UserError for a typo or a module that is no evaluator."""
    if not name.isidentifier():
        raise UserError(f"evaluator name {name!r} is not a module name; available: {available()}")
    try:
        module = importlib.import_module(f"genjax.evaluators.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"genjax.evaluators.{name}":
            raise
        raise UserError(f"unknown evaluator {name!r}: no genjax/evaluators/{name}.py; "
                        f"available: {available()}") from None
    if not callable(getattr(module, "evaluate", None)):
        raise UserError(f"genjax.evaluators.{name} is not an evaluator (no evaluate()); "
                        f"available: {available()}")
    return module


def skip_reason(module: ModuleType, family: ModuleType, config) -> str | None:
    """Why evaluator `module` does not apply to this run (None: it applies)."""
    missing = [c for c in getattr(module, "NEEDS", ()) if not families.has(family, c)]
    if missing:
        return f"the family has no {' / '.join(missing)}"
    fn = getattr(module, "skip_reason", None)
    return fn(family, config) if fn is not None else None


def configured(config) -> list[str]:
    """Names in config.evals (in config order); [] for a run without the section."""
    return list(config.evals.keys()) if "evals" in config else []


def skipped(config, family) -> dict[str, str]:
    """{name: why} of the configured evaluators that do not apply to this run."""
    reasons = {n: skip_reason(get(n), family, config) for n in configured(config)}
    return {n: r for n, r in reasons.items() if r}


def resolve(config, family, names: Sequence[str] | None = None) -> list[str]:
    """`names` checked against the run (configured, applies to its family); None: every
    configured evaluator that applies. UserError names the problem."""
    have = configured(config)
    if names is None:
        return [n for n in have if not skip_reason(get(n), family, config)]
    for name in names:
        module = get(name)
        if name not in have:
            raise UserError(f"evaluator {name!r} is not configured in this run's config.evals "
                            f"(configured: {have})")
        why = skip_reason(module, family, config)
        if why:
            raise UserError(f"evaluator {name!r} does not apply to this run: {why}")
    return list(names)


def check_settings(evals, names: Sequence[str], available: int | None = None) -> None:
    """UserError (one line) for settings of evaluators `names` they cannot run with, before
    anything is sampled or written; `available`: the samples a file holds (samples mode)."""
    for name in names:
        settings = evals[name]
        for key, value in settings.items():  # counts, sizes, steps: 0 may mean "all"
            if type(value) is int and value < 0 and key != "seed":
                raise UserError(f"{name}.{key}={value}: must be >= 0")
        n = settings.get("num_samples")
        if n is not None and int(n) < 1:
            raise UserError(f"{name}.num_samples={n}: must be >= 1")
        if available is not None and n is not None and int(n) > available:
            raise UserError(f"{name}.num_samples={n}: the file has {available} samples")
        fn = getattr(get(name), "check_settings", None)
        if fn is not None:
            fn(settings)


def given_skip_reason(module: ModuleType, has: Sequence[str], requested: bool) -> str | None:
    """Why evaluator `module` does not score a samples file that offers `has` (None: it
    does); `requested`: --only names it."""
    if not hasattr(module, "SAMPLES"):
        return "it needs the model; a samples file has none"
    missing = [k for k in module.SAMPLES if k not in has]
    if missing:
        return f"the file has no {' / '.join(missing)}"
    if getattr(module, "ON_REQUEST", None) and not requested:
        return f"{module.ON_REQUEST}; name it in --only to run it"
    return None


def resolve_given(config, has: Sequence[str],
                  only: Sequence[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """(evaluators that score a samples file offering `has`, {name: why not} of the other
    configured ones). `only`: exactly those, each configured and able to score the file,
    else UserError naming the problem."""
    have = configured(config)
    for name in only or []:
        if name not in have:
            raise UserError(f"evaluator {name!r} is not configured in this config's "
                            f"config.evals (configured: {have})")
        why = given_skip_reason(get(name), has, requested=True)
        if why:
            raise UserError(f"evaluator {name!r} cannot score this file: {why}")
    if only:
        return list(only), {}
    reasons = {n: given_skip_reason(get(n), has, requested=False) for n in have}
    return [n for n, r in reasons.items() if not r], {n: r for n, r in reasons.items() if r}


def during_training(config, family) -> list[str]:
    """Configured evaluators that apply and have during_training=True."""
    return [n for n in resolve(config, family) if bool(config.evals[n].during_training)]


def check_during_training(config, family, process_count: int) -> None:
    """ConfigError (one line, before training) for an evaluator set to run during training
    that runs on one process only (its module's ONE_PROCESS says why) in a multi-process
    run: genjax.evaluate scores the checkpoints afterwards."""
    if process_count == 1:
        return
    for name in during_training(config, family):
        why = getattr(get(name), "ONE_PROCESS", None)
        if why:
            raise ConfigError(f"config.evals.{name}.during_training=True with {process_count} "
                              f"processes: {why}; set it False and run python -m "
                              f"genjax.evaluate --workdir=W --only={name} after training")


# ----------------------------------------------------------------------- results
def with_overrides(name: str, settings, overrides: dict):
    """`settings` (an evaluator's defaults) updated from `overrides`; an unknown key is a
    KeyError naming the evaluator and the keys it has."""
    for k, v in overrides.items():
        if k not in settings:
            raise KeyError(f"{name} settings have no key {k!r}: {sorted(settings)}")
        settings[k] = v
    return settings


def normalize(name: str, result: Any) -> dict:
    """Checks an evaluator's return value and fills the optional keys."""
    if not isinstance(result, dict) or "metrics" not in result:
        raise TypeError(f"evaluator {name!r} must return a dict with 'metrics'")
    unknown = set(result) - {"metrics", "floors", "figures", "markdown", "details"}
    if unknown:
        raise TypeError(f"evaluator {name!r} returned unknown keys {sorted(unknown)}")
    metrics = {str(k): float(v) for k, v in result["metrics"].items()}
    floors = {str(k): float(v) for k, v in (result.get("floors") or {}).items()}
    extra = sorted(set(floors) - set(metrics))
    if extra:
        raise ValueError(f"evaluator {name!r}: floors {extra} have no metric of that name")
    figures = [str(p) for p in result.get("figures") or []]
    missing = [p for p in figures if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"evaluator {name!r}: figures not written: {missing}")
    details = result.get("details") or {}
    json.dumps(details, allow_nan=True)  # TypeError names what is not JSON-able
    return {"metrics": metrics, "floors": floors, "figures": figures,
            "markdown": str(result.get("markdown") or ""), "details": details}


# ----------------------------------------------------------------------- context
@dataclasses.dataclass
class EvalContext:
    """Everything an evaluator may need; built by genjax.evaluate or genjax.train."""
    config: Any           # the run's (locked) ConfigDict
    family: ModuleType    # the family module (genjax/families/__init__.py)
    model: Any            # flax module
    params: Any           # EMA or raw (see `which`)
    model_state: Any
    meta: dict            # checkpoint meta: {"data": {tokenizer | class_names ...}, ...}
    step: int
    workdir: str
    out_dir: str          # W/eval (created)
    which: str            # "ema" | "raw"
    seed: int
    data: Any             # family.make_data(...): eval_batches, train_iterator, text, ...
    parts: Any            # genjax.assemble.Parts of the run (model, jitted eval step, mesh)
    train_fn: Any = None  # genjax.train.train, for evaluators that train a model (cas)
    step_params: Any = None       # params / model_state as parts.eval_step takes them (LoRA:
    step_model_state: Any = None  # the adapters and the frozen base); None = params
    given: Any = None     # sample_files.Samples (samples mode, no model): what is scored
    _sample_pool: dict = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self):
        from genjax.workdir import make_workdir
        make_workdir(self.out_dir, "the report folder")  # a file in the way: one line

    # ------------------------------------------------------------------ family eval
    def evaluate(self, batches: Iterable[dict], eval_kwargs: dict | None = None) -> dict:
        """The family's eval metrics of these params over local numpy `batches`, summed and
        finalized exactly as genjax.train's eval (genjax/eval_sums.py)."""
        params = self.params if self.step_params is None else self.step_params
        state = self.model_state if self.step_model_state is None else self.step_model_state
        return eval_sums.evaluate(self.parts, params, state, batches, eval_kwargs)

    @property
    def source(self) -> str:
        """What the samples are, for reports: "ema params, step 600" or "samples of FILE"."""
        if self.given is not None:
            return f"samples of {self.given.path}"
        return f"{self.which} params, step {self.step}"

    def _given(self, n: int, kind: str):
        if self.given.kind != kind:
            raise ValueError(f"{self.given.path} holds {self.given.kind}, not {kind}")
        if int(n) > len(self.given):
            raise UserError(f"{int(n)} samples asked for; {self.given.path} has "
                            f"{len(self.given)}")
        return int(n)

    # ------------------------------------------------------------------ images
    def sample_images(self, n: int, *, label=None, batch_size: int = 256, seed: int = 0):
        """(images float32[n, H, W, C] in [-1, 1], labels int32[n] or None) from the
        family's `sample_images`, in batches of one shape (the last one is trimmed).
        labels: each sample's requested class (cycled over the classes when `label` is
        None) for a class-conditional model; None for an unconditional one.

        Samples are kept: a later call with the same (label, batch_size, seed) gets the
        same first n images, and only the batches not drawn yet are sampled (batch i uses
        fold_in(PRNGKey(seed), i)), so image_quality, novelty and cas share one pool.
        In samples mode (`given`): the file's first n images and labels (label,
        batch_size and seed do not apply)."""
        if self.given is not None:
            n = self._given(n, "images")
            labels = self.given.labels
            return self.given.images[:n], None if labels is None else labels[:n]
        if not families.has(self.family, "sample_images"):
            raise ValueError(f"family {self.config.family!r} does not sample images")
        n, b = int(n), max(1, min(int(batch_size), int(n)))
        pool_key = (None if label is None else np.asarray(label).tolist(), b, int(seed))
        images, labels = self._sample_pool.get(pool_key, ([], None))
        num_batches = math.ceil(n / b)
        if families.has(self.family, "sample_labels"):
            # class i % K for sample i: a longer pool's labels extend a shorter one's
            labels = self.family.sample_labels(self.config, max(num_batches, len(images)) * b,
                                               label)
        key = jax.random.PRNGKey(seed)
        first, t0 = len(images), time.perf_counter()
        every = max(1, (num_batches - first) // 10)  # ~10 progress lines
        for i in range(first, num_batches):
            lab = None if labels is None else labels[i * b:(i + 1) * b]
            images.append(np.asarray(jax.device_get(self.family.sample_images(
                self.model, self.params, self.config, jax.random.fold_in(key, i), b,
                label=lab, model_state=self.model_state)), np.float32))
            if num_batches - first > 1 and ((i + 1 - first) % every == 0 or i + 1 == num_batches):
                drawn = (i + 1 - first) * b
                _progress(f"  sampled {min((i + 1) * b, n)}/{n} images "
                          f"({drawn / (time.perf_counter() - t0):.1f} images/s)")
        self._sample_pool[pool_key] = (images, labels)
        images_NxHxWxC = np.concatenate(images[:num_batches])[:n]
        labels_N = None if labels is None else np.asarray(labels, np.int32)[:n]
        return images_NxHxWxC, labels_N

    # ------------------------------------------------------------------ text
    def sample_texts(self, n: int, *, prompt: str, max_new_tokens: int,
                     temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                     seed: int = 0) -> list[str]:
        """n continuations of `prompt` (prompt excluded) from the family's `sample_text`,
        sliding the context window past max_len; in samples mode the file's first n texts."""
        if self.given is not None:
            return list(self.given.texts[:self._given(n, "text")])
        import warnings
        from genjax.sampling.text import TextRequest
        tokenizer = self.family.text_tokenizer(self.meta)
        req = TextRequest(num_samples=int(n), max_new_tokens=int(max_new_tokens),
                          temperature=float(temperature), top_k=int(top_k),
                          top_p=float(top_p), seed=int(seed), window=True)
        with warnings.catch_warnings():  # sliding past the context is intended here
            warnings.simplefilter("ignore")
            completions = self.family.sample_text(self.model, self.params, tokenizer,
                                                  [str(prompt)], req)
        return [c.text for c in completions[0]]

    # ------------------------------------------------------------------ plug-ins
    def run(self, names: Sequence[str] | None = None) -> dict[str, dict]:
        """{name: normalized result + "seconds"} for `names` (None: all that apply; in
        samples mode `names` come from `resolve_given`)."""
        results = {}
        if self.given is None:
            names = resolve(self.config, self.family, names)
        for name in names:
            _progress(f"evaluator {name} ({self.source})...")
            t0 = time.perf_counter()
            result = normalize(name, get(name).evaluate(self, self.config.evals[name]))
            result["seconds"] = time.perf_counter() - t0
            _progress(f"evaluator {name}: done in {result['seconds']:.1f} s")
            results[name] = result
        return results


def _progress(line: str) -> None:
    """A progress line on stdout (process 0 only)."""
    if jax.process_index() == 0:
        print(line, flush=True)


def from_loaded(loaded, workdir: str, *, seed: int = 0, data=None,
                train_fn=None) -> EvalContext:
    """Context for a `genjax.inference.load` result (its params: EMA or raw, `loaded.which`);
    `data` defaults to the family's."""
    config = loaded.config
    if data is None:
        data = loaded.family.make_data(config, process_index=jax.process_index(),
                                       process_count=jax.process_count())
    return EvalContext(
        config=config, family=loaded.family, model=loaded.model, params=loaded.params,
        model_state=loaded.model_state, meta=loaded.meta, step=int(loaded.step),
        workdir=workdir, out_dir=os.path.join(workdir, "eval"), which=loaded.which,
        seed=seed, data=data, parts=loaded.parts, train_fn=train_fn,
        step_params=loaded.step_params, step_model_state=loaded.step_model_state)


def for_training(config, parts, state, meta: dict, step: int, workdir: str, data, *,
                 train_fn=None) -> EvalContext:
    """Context inside genjax.train: the current EMA params (raw without EMA)."""
    params, model_state, which = assemble.inference_params(parts, state, "ema")
    step_params, _ = step_lib.inference_params(state, which)
    return EvalContext(
        config=config, family=families.for_inference(parts.family), model=parts.model,
        params=params, model_state=model_state, meta=meta, step=int(step), workdir=workdir,
        out_dir=os.path.join(workdir, "eval"), which=which, seed=int(config.seed), data=data,
        parts=parts, train_fn=train_fn, step_params=step_params,
        step_model_state=state.model_state)


def for_samples(config, samples, data, out_dir: str, *, seed: int = 0,
                train_fn=None) -> EvalContext:
    """Context without a model: the evaluators score `samples` (sample_files.Samples, its
    images already converted for `data`) against `data` (the config family's)."""
    return EvalContext(
        config=config, family=families.get(config.family), model=None, params=None,
        model_state=None, meta={"data": data.meta()}, step=0, workdir="", out_dir=out_dir,
        which="given", seed=seed, data=data, parts=None, train_fn=train_fn, given=samples)
