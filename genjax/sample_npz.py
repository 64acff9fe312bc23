"""`genjax.sample --out=X.npz` for image families: every sample as uint8 plus the class each
was asked for, the file `genjax.evaluate --samples` reads, and the sampler's images/s."""
from __future__ import annotations

import json
import time

import jax
import numpy as np

from genjax import workdir as workdir_lib
from genjax.errors import UserError
from genjax.image_grid import to_uint8


def write(loaded, opts, cond: dict) -> str:
    """--out=X.npz: images uint8[N, H, W, C] + labels int32[N] (the class each sample was
    asked for; absent for unconditional models and free text prompts), drawn
    --batch_size at a time (seeds seed, seed + 1, ...); X.npz.json records the settings
    and the sampler's images/s (after the first call, which compiles)."""
    if opts.best_of > 1 or opts.min_confidence > 0:
        raise UserError("--best_of/--min_confidence pick samples for a grid; an .npz keeps "
                        "every sample (score them with genjax.evaluate --samples)")
    n, chunk = opts.num_samples or 64, opts.batch_size
    if chunk is None or chunk < 1:
        raise UserError(f"--batch_size={chunk}: must be >= 1")
    text = "prompt" in cond
    if text:
        labels = None if cond["prompt"] is not None else np.arange(n) % len(
            loaded.meta["data"]["class_names"])
        if cond["target"] is not None:
            labels = np.full(n, cond["target"])
    elif cond["what"] == "unconditional":
        labels = None
    else:
        labels = np.asarray(loaded.family.sample_labels(loaded.config, n, cond["label"]))
    options = {k: getattr(opts, k) for k in getattr(loaded.family, "sample_options", ())
               if getattr(opts, k, None) is not None}
    out, images, times = opts.out, [], []
    for i in range(0, n, chunk):
        k = min(chunk, n - i)
        if text:
            kw = {"prompt": cond["prompt"] if cond["prompt"] is not None else
                  loaded.family.sample_labels(loaded.config, n)[i:i + k]}
        elif labels is not None:
            kw = {"label": labels[i:i + k]}
        else:
            kw = {}
        t0 = time.perf_counter()
        x = jax.block_until_ready(loaded.family.sample_images(
            loaded.model, loaded.params, loaded.config,
            jax.random.PRNGKey(opts.seed + i // chunk), k, model_state=loaded.model_state,
            **kw, **options))
        times.append((k, time.perf_counter() - t0))
        images.append(to_uint8(np.asarray(jax.device_get(x))))
        print(f"{i + k}/{n} samples ({k / times[-1][1]:.1f} images/s)", flush=True)
    steady = times[1:] or times
    rate = sum(k for k, _ in steady) / sum(t for _, t in steady)
    arrays = {"images": np.concatenate(images)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels, np.int32)
    workdir_lib.make_parent(out)
    np.savez(out, **arrays)
    meta = {"workdir": opts.workdir, "step": loaded.step, "family": loaded.config.family,
            "num_samples": n, "batch_size": chunk, "seed": opts.seed, "what": cond["what"],
            "options": options, "images_per_s": rate,
            "first_call_s": times[0][1], "seconds": sum(t for _, t in times)}
    with open(out + ".json", "w") as f:
        json.dump(meta, f, indent=1)
    print(f"wrote {n} samples ({cond['what']}, step {loaded.step}) to {out}; "
          f"{rate:.1f} images/s after the first call ({times[0][1]:.1f} s with compile)",
          flush=True)
    return out
