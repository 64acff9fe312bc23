r"""Sample from a trained workdir (the family comes from its checkpoint).

The sampler is the one the family offers (genjax/families/__init__.py): `sample_text`
(text: printed), `sample_images` (a PNG grid) or `sample_arrays` (an .npz). A flag the
family's sampler does not take is an error, never silently ignored.

  python -m genjax.sample --workdir=W --prompt="ROMEO:" --num_samples=3 \
      --max_new_tokens=100 --temperature=0.8 --top_k=40 --top_p=0.95 --seed=0
  python -m genjax.sample --workdir=W --prompt="ROMEO:" --stream --stop='\n\n' \
      --min_p=0.05 --repetition_penalty=1.2 --blocklist=word1,word2 --redact
  python -m genjax.sample --workdir=W --prompt="ROMEO:" --best_of=8   # rank by log-lik
  python -m genjax.sample --workdir=W --num_samples=64 --label=sneaker --guidance=3 \
      --steps=50 --out=grid.png          # diffusion | vae | gan
  python -m genjax.sample --workdir=W --prompt="a pair of sandals" --guidance=4 --steps=50 \
      --num_samples=16 --out=grid.png    # text-to-image (configs/t2i_fmnist.py)
  python -m genjax.sample --workdir=W --prompt="a pair of sandals" --num_samples=16 \
      --best_of=64 --min_confidence=0.5  # rank/filter by the Fashion-MNIST classifier
Image runs also write <out>.json: per sample its rank, score and what the filter did.
"""
from __future__ import annotations

import dataclasses
import os
import re
import warnings

from absl import flags

from genjax import cli, families, inference, runtime
from genjax.sample_flags import check_flags  # noqa: F401  (tests call sample.check_flags)
from genjax import train as train_lib
from genjax import workdir as workdir_lib
from genjax.errors import UserError

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("workdir", None, "trained run directory", required=True)
    flags.DEFINE_string("prompt", None, "text prompt: LM (default: the config's "
                        "sample.prompt) or text-to-image (default: one caption per class)")
    flags.DEFINE_integer("num_samples", None, "samples to draw", lower_bound=1)
    flags.DEFINE_integer("max_new_tokens", None, "tokens to generate per sample")
    flags.DEFINE_float("temperature", None, "0 = greedy")
    flags.DEFINE_integer("top_k", None, "keep the k most likely tokens (0 = off)")
    flags.DEFINE_float("top_p", None, "nucleus sampling mass in (0, 1]")
    flags.DEFINE_float("min_p", None, "LM: keep tokens with prob >= min_p * top prob (0 = off)")
    flags.DEFINE_float("repetition_penalty", None, "LM: > 1 discourages tokens already seen "
                       "(1 = off)")
    flags.DEFINE_multi_string("stop", [], "LM: stop string (repeatable; \\n and \\t are "
                              "unescaped); the text ends before its first occurrence")
    flags.DEFINE_list("stop_token_ids", [], "LM: token ids that end a sample")
    flags.DEFINE_bool("stop_at_end_of_text", None, "LM: the tokenizer's end-of-text token, "
                      "where it has one (GPT-2's <|endoftext|>), ends a sample (default: on)")
    flags.DEFINE_bool("stream", False, "LM: print the sample as it is decoded (one sample)")
    flags.DEFINE_enum("truncate", "error", ["error", "left"],
                      "LM: over-long prompt: error, or drop its start (with a warning)")
    flags.DEFINE_bool("window", None, "LM: generate past the context by sliding the window "
                      "(default: the config's sample.window)")
    flags.DEFINE_integer("best_of", 1, "draw this many candidates, keep the --num_samples "
                         "best: LM by mean log-likelihood per token, images by the "
                         "classifier's confidence for the prompted class")
    flags.DEFINE_list("blocklist", [], "LM: words (whole-word, any case) that reject a sample")
    flags.DEFINE_multi_string("blocklist_regex", [], "LM: regexes treated like --blocklist")
    flags.DEFINE_bool("redact", False, "LM: redact blocklisted matches instead of rejecting")
    flags.DEFINE_integer("seed", 0, "sampling seed")
    flags.DEFINE_enum("params", "ema", ["ema", "raw"], "EMA params if the run kept them")
    flags.DEFINE_string("label", None, "image families: class name or index (default: all)")
    flags.DEFINE_float("guidance", None, "diffusion: classifier-free guidance scale (0 "
                      "unconditional, 1 conditional, > 1 guided)", lower_bound=0.0)
    flags.DEFINE_integer("steps", None, "diffusion: sampler steps", lower_bound=1)
    flags.DEFINE_enum("prior", None, ["fitted", "standard"], "VAE: the mixture fitted to the "
                      "training codes, or N(0, I)")
    flags.DEFINE_string("out", None, "image families: PNG grid (default W/samples.png) or "
                        ".npz (uint8 images + labels, for genjax.evaluate --samples); "
                        "an existing file is replaced")
    flags.DEFINE_integer("batch_size", 250, "images: samples per sampler call for an .npz")
    flags.DEFINE_float("min_confidence", 0.0, "images: reject samples whose classifier "
                       "probability for the prompted class (else its top class) is below "
                       "this (0 = off)")


def _pick(flag_value, default):
    return default if flag_value is None else flag_value


def _unescape(text: str) -> str:
    """Shell-friendly stop strings: backslash-n, backslash-t and double backslash."""
    table = {"n": "\n", "t": "\t", "\\": "\\"}
    return re.sub(r"\\(.)", lambda m: table.get(m.group(1), m.group(0)), text)


def lm_request(config_sample, opts):
    """TextRequest from the flags over the config's `sample` defaults (absent keys: off)."""
    from genjax.sampling.text import TextRequest
    s, d = config_sample, TextRequest()
    cfg = lambda key: s[key] if key in s else getattr(d, key)  # noqa: E731  old workdirs
    try:
        stop_ids = tuple(int(t) for t in opts.stop_token_ids)
    except ValueError:
        raise UserError(f"--stop_token_ids={','.join(opts.stop_token_ids)}: integers, "
                        f"comma-separated") from None
    return TextRequest(
        prompt=_pick(opts.prompt, cfg("prompt")),
        num_samples=_pick(opts.num_samples, cfg("num_samples")),
        max_new_tokens=_pick(opts.max_new_tokens, cfg("max_new_tokens")),
        temperature=_pick(opts.temperature, cfg("temperature")),
        top_k=_pick(opts.top_k, cfg("top_k")), top_p=_pick(opts.top_p, cfg("top_p")),
        min_p=_pick(opts.min_p, cfg("min_p")),
        repetition_penalty=_pick(opts.repetition_penalty, cfg("repetition_penalty")),
        stop=tuple(_unescape(x) for x in opts.stop) or tuple(cfg("stop")),
        stop_token_ids=stop_ids, seed=opts.seed, truncate=opts.truncate,
        stop_at_end_of_text=getattr(opts, "stop_at_end_of_text", None) is not False,
        window=bool(_pick(opts.window, cfg("window"))))


def lm_hooks(opts):
    from genjax.sampling import postprocess
    if not (opts.blocklist or opts.blocklist_regex):
        if opts.redact:
            raise UserError("--redact redacts --blocklist/--blocklist_regex matches: give one")
        return []
    try:
        return [postprocess.blocklist(opts.blocklist, opts.blocklist_regex,
                                      action="redact" if opts.redact else "reject")]
    except ValueError as e:
        raise UserError(f"--blocklist_regex: {e}") from None


def sample_lm(loaded, opts=None) -> list[str]:
    """LM samples printed to stdout; `opts`: the flags (or any object with their names)."""
    import json

    from genjax.sampling import best_of_n, postprocess, text
    if opts is None:  # the CLI: warnings (truncate="left", window=True) as one plain line
        opts = FLAGS
        warnings.formatwarning = lambda message, *_args, **_kwargs: f"warning: {message}\n"
    req = lm_request(loaded.config.sample, opts)
    if opts.stream and opts.num_samples is None:
        req = dataclasses.replace(req, num_samples=1)  # the config's default is for batches
    req.validate()  # before any loading work is wasted on a bad request
    hooks = lm_hooks(opts)
    if opts.best_of < 1 or (opts.best_of > 1 and opts.best_of < req.num_samples):
        raise UserError(f"--best_of={opts.best_of}: must be 1 (off) or >= --num_samples="
                        f"{req.num_samples}")
    if opts.stream and (hooks or opts.best_of > 1):
        raise UserError("--stream prints text before it could be filtered or ranked: drop "
                        "--stream, or --blocklist/--blocklist_regex/--best_of")
    tokenizer = loaded.family.text_tokenizer(loaded.meta)
    header = lambda i, n, extra="": print(  # noqa: E731
        f"----- sample {i + 1}/{n} (step {loaded.step}){extra} -----", flush=True)
    if opts.stream:
        started = []

        def show(piece: str) -> None:  # header only once the request passed every check
            if not started:
                header(0, 1)
                print(req.prompt, end="", flush=True)
                started.append(True)
            print(piece, end="", flush=True)
        done = text.stream_text(loaded.model, loaded.params, tokenizer, req, on_text=show)
        show("\n")
        return [done.text]
    if opts.best_of > 1:
        ranked = best_of_n.best_of_n_text(loaded.model, loaded.params, tokenizer, req,
                                          opts.best_of)[:req.num_samples]
        completions = [c for c, _ in ranked]
        extras = [f" rank {i + 1} of {opts.best_of}, log-lik {score:.3f} nats/token"
                  for i, (_, score) in enumerate(ranked)]
    else:
        completions = loaded.family.sample_text(loaded.model, loaded.params, tokenizer,
                                                [req.prompt], req)[0]
        extras = [""] * len(completions)
    records = postprocess.run_hooks([c.text for c in completions], hooks)
    for i, (c, record, extra) in enumerate(zip(completions, records, extras)):
        header(i, len(completions), extra)
        if not record["rejected"]:
            print(req.prompt + record["text"], flush=True)
        if postprocess.is_flagged(record):  # what a filter did, and why
            meta = {k: record[k] for k in ("rejected", "reason", "redactions", "truncated")}
            print("[filtered] " + json.dumps({**meta, "finish_reason": c.finish_reason}),
                  flush=True)
    return [r["text"] for r in records]


def resolve_label(label: str | None, class_names: list[str]) -> int | None:
    """'sneaker', 'Sneaker' or '7' -> 7; None -> None (every class in turn)."""
    if label is None or label == "":
        return None
    if label.isdigit():
        index = int(label)
        if not 0 <= index < len(class_names):
            raise UserError(f"--label={label}: index out of range 0..{len(class_names) - 1}")
        return index
    words = lambda text: re.sub(r"[/_-]", " ", text.lower()).split()  # noqa: E731
    key, names = words(label), [words(name) for name in class_names]
    if key in names:  # "shirt" is Shirt, not the "shirt" inside T-shirt/top
        return names.index(key)
    inside = [i for i, name in enumerate(names) if key and any(
        name[j:j + len(key)] == key for j in range(len(name)))]  # "boot", "t-shirt"
    if len(inside) > 1:
        raise UserError(f"--label={label!r} matches {[class_names[i] for i in inside]}: "
                        f"give the whole name")
    if inside:
        return inside[0]
    raise UserError(f"--label={label!r}: not a class; choose one of {class_names}")


def image_condition(loaded, opts) -> dict:
    """sample_images kwargs (label= or prompt= tokens) and the class a scorer should judge
    ("target", None = unknown) from --label / --prompt; errors for the wrong kind."""
    from genjax.data import captions
    class_names = list(loaded.meta.get("data", {}).get("class_names", []))
    conditioning = families.conditioning(loaded.family, loaded.config)
    if conditioning == "text":
        if opts.label not in (None, ""):
            raise UserError("--label: this model is text-conditional; describe the image "
                            "with --prompt instead, e.g. --prompt='a pair of sandals'")
        if opts.prompt is None:
            return {"prompt": None, "target": None, "what": "one caption per class"}
        from genjax.data.caption_tokenizer import CaptionTokenizer
        tok = CaptionTokenizer.from_json(loaded.meta["data"]["caption_tokenizer"])
        tokens = tok.encode(opts.prompt)  # UserError: empty or too long
        unknown = tok.unknown_words(opts.prompt)
        if unknown:
            warnings.warn(f"words the model never saw, encoded as <unk>: {unknown}")
        target = captions.prompt_class(opts.prompt) if class_names else None
        return {"prompt": tokens, "target": target, "what": repr(opts.prompt)}
    if conditioning == "none":
        if opts.prompt is not None or opts.label not in (None, ""):
            raise UserError("--label/--prompt: this model is unconditional; drop them")
        if getattr(opts, "guidance", None) is not None:
            raise UserError("--guidance: this model is unconditional (no condition to guide "
                            "towards); drop it")
        return {"target": None, "what": "unconditional"}
    if opts.prompt is not None:
        raise UserError(f"--prompt: a {loaded.config.family} model trained on class labels "
                        f"takes --label (one of {class_names}), not a text prompt")
    label = resolve_label(opts.label, class_names)
    return {"label": label, "target": label,
            "what": "all classes" if label is None else class_names[label]}


def feature_net_probs(loaded):
    """probs_fn(images_NxHxWxC in [-1, 1]) -> [N, classes] of the Fashion-MNIST classifier
    (genjax/evaluators/feature_net.py)."""
    from genjax.evaluators.feature_net import load_feature_net
    net = load_feature_net(loaded.config.data, train_fn=train_lib.train)
    return net.probs


def sample_images(loaded, opts=None, probs_fn=None) -> str | None:
    """Image grid (+ <out>.json metadata) from a diffusion/vae/gan workdir. `opts`: the
    flags (or any object with their names); `probs_fn`: the classifier (tests pass a
    stand-in; default: feature_net_probs, loaded only for --best_of / --min_confidence)."""
    import json

    import jax
    import numpy as np

    from genjax.image_grid import save_grid
    from genjax.sampling import best_of_n, postprocess
    opts = FLAGS if opts is None else opts
    if (opts.out or "").endswith(".npz"):
        from genjax import sample_npz
        return sample_npz.write(loaded, opts, image_condition(loaded, opts))
    if opts.min_confidence < 0 or opts.min_confidence > 1:
        raise UserError(f"--min_confidence={opts.min_confidence}: must be in [0, 1]")
    cond = image_condition(loaded, opts)
    n = opts.num_samples or 64
    if opts.best_of < 1 or (opts.best_of > 1 and opts.best_of < n):
        raise UserError(f"--best_of={opts.best_of}: must be 1 (off) or >= --num_samples={n}")
    scoring = opts.best_of > 1 or opts.min_confidence > 0
    if scoring and cond["target"] is None and opts.best_of > 1:
        raise UserError("--best_of ranks by the classifier's confidence for the prompted "
                        "class: name exactly one garment (--label, or a --prompt such as "
                        "'a pair of sandals')")
    if scoring and probs_fn is None:
        probs_fn = feature_net_probs(loaded)
    kwargs = {k: cond[k] for k in ("label", "prompt") if k in cond}
    kwargs.update({k: getattr(opts, k) for k in getattr(loaded.family, "sample_options", ())
                   if getattr(opts, k, None) is not None})

    def generate(k, seed):
        return np.asarray(jax.device_get(loaded.family.sample_images(
            loaded.model, loaded.params, loaded.config, jax.random.PRNGKey(seed), k,
            model_state=loaded.model_state, **kwargs)))

    if opts.best_of > 1:
        ranked = best_of_n.best_of_n_images(
            generate, best_of_n.class_confidence(probs_fn, cond["target"]), opts.best_of,
            seed=opts.seed)[:n]
    else:
        ranked = [(im, None) for im in generate(n, opts.seed)]
    hooks = []
    if opts.min_confidence > 0:
        class_names = list(loaded.meta.get("data", {}).get("class_names", []))
        hooks.append(postprocess.image_confidence_filter(
            lambda im: np.asarray(probs_fn(im[None]))[0], threshold=opts.min_confidence,
            class_names=class_names, target=cond["target"]))
    records = postprocess.run_hooks([im for im, _ in ranked], hooks, key="image")
    out = opts.out or f"{opts.workdir}/samples.png"
    meta = {"workdir": opts.workdir, "step": loaded.step, "prompt": opts.prompt,
            "label": opts.label, "target_class": cond["target"], "guidance": opts.guidance,
            "steps": opts.steps, "seed": opts.seed, "best_of": opts.best_of,
            "min_confidence": opts.min_confidence, "samples": []}
    for i, (r, (_, score)) in enumerate(zip(records, ranked)):
        row = {"rank": i + 1, "score": score, "rejected": r["rejected"], "reason": r["reason"],
               **{k: r[k] for k in ("label", "confidence") if k in r}}
        meta["samples"].append(row)
        if r["rejected"]:
            print("[filtered] " + json.dumps(row), flush=True)
    kept = [r["image"] for r in records if not r["rejected"]]
    meta["kept"] = len(kept)
    if not kept:  # an earlier grid and its .json stay as they were, a matching pair
        print(f"all {n} samples were rejected (--min_confidence={opts.min_confidence}; "
              f"reasons above); nothing written to {out}", flush=True)
        return None
    workdir_lib.make_parent(out)
    save_grid(np.stack(kept), out)
    with open(out + ".json", "w") as f:
        json.dump(meta, f, indent=1)
    extra = f", best {n} of {opts.best_of}" if opts.best_of > 1 else ""
    print(f"wrote {len(kept)} samples ({cond['what']}{extra}, step {loaded.step}) to {out}",
          flush=True)
    return out


def sample_arrays(loaded, opts=None) -> str:
    """Samples of a family that is neither text nor images, as W/samples.npz (or --out)."""
    import jax
    import numpy as np
    opts = FLAGS if opts is None else opts
    n = opts.num_samples or 64
    x = np.asarray(jax.device_get(loaded.family.sample_arrays(
        loaded.model, loaded.params, loaded.config, jax.random.PRNGKey(opts.seed), n)))
    out = opts.out or os.path.join(opts.workdir, "samples.npz")
    workdir_lib.make_parent(out)
    np.savez(out, samples=x)
    print(f"wrote {len(x)} samples {list(x.shape[1:])} (step {loaded.step}) to {out}", flush=True)
    return out


def main(argv) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    runtime.setup_logging()
    loaded = inference.load(FLAGS.workdir, which=FLAGS.params)
    kind = check_flags(loaded.family, FLAGS)
    if kind == "text":
        sample_lm(loaded)
    elif kind == "images":
        warnings.formatwarning = lambda message, *_args, **_kwargs: f"warning: {message}\n"
        sample_images(loaded)
    else:
        sample_arrays(loaded)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
