"""Which flags `python -m genjax.sample` takes for a family's sampler, checked before a
model is sampled: a flag the sampler does not take, a non-finite number, an --out the
sampler cannot write (its suffix; a file in the way of its folder) are one UserError line.
"""
from __future__ import annotations

import math

from genjax import families
from genjax import workdir as workdir_lib
from genjax.errors import UserError

# Flags each kind of sampler takes (beyond --workdir, --num_samples, --seed, --params);
# the family's `sample_options` (e.g. guidance, steps) add to the image sampler's.
TEXT_FLAGS = ("prompt", "max_new_tokens", "temperature", "top_k", "top_p", "min_p",
              "repetition_penalty", "stop", "stop_token_ids", "stop_at_end_of_text", "stream",
              "truncate", "window", "best_of", "blocklist", "blocklist_regex", "redact")
IMAGE_FLAGS = ("prompt", "label", "out", "best_of", "min_confidence", "batch_size")
ARRAY_FLAGS = ("out",)
OPTION_FLAGS = ("guidance", "steps", "temperature", "prior")  # image sampler options some families take
_OFF = {"truncate": "error", "best_of": 1, "batch_size": 250,  # flag defaults: "not used"
        "min_confidence": 0.0}


def _given(name: str, value) -> bool:
    """Whether a flag was set to something (0 and 0.0 are values: --guidance=0 on a GAN)."""
    off = _OFF.get(name)
    return not (value is None or value is False or value in ("", [], ()) or (
        off is not None and type(value) is type(off) and value == off))


def sampler_kind(family) -> str:
    """"text" | "images" | "arrays": the sampler the family offers (UserError: none)."""
    for kind, capability in (("text", "sample_text"), ("images", "sample_images"),
                             ("arrays", "sample_arrays")):
        if families.has(family, capability):
            return kind
    raise UserError("this family offers no sampler (sample_text, sample_images or "
                    "sample_arrays)")


def check_flags(family, opts) -> str:
    """The sampler kind; UserError naming the first flag given that it does not take, or
    that is not a finite number, or an --out it cannot write."""
    kind = sampler_kind(family)
    takes = set({"text": TEXT_FLAGS, "images": IMAGE_FLAGS, "arrays": ARRAY_FLAGS}[kind])
    if kind == "images":
        takes |= set(getattr(family, "sample_options", ()))
    for name in dict.fromkeys((*TEXT_FLAGS, *IMAGE_FLAGS, *OPTION_FLAGS)):
        value = getattr(opts, name, None)
        if name not in takes and _given(name, value):
            raise UserError(f"--{name}: the {kind} sampler of this family does not take it "
                            f"(it takes: {', '.join('--' + t for t in sorted(takes))})")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"--{name}={value}: must be a finite number")
    out = getattr(opts, "out", None)
    if kind != "text" and out:
        suffixes = (".png", ".npz") if kind == "images" else (".npz",)
        if not out.endswith(suffixes):
            raise UserError(f"--out={out}: end it with {' or '.join(suffixes)}")
        workdir_lib.make_parent(out)  # before sampling, not after
    return kind
