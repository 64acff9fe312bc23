"""Does a checkpoint fit this model? Leaf-by-leaf comparisons of saved metadata with
the abstract state or params (genjax/checkpoint.py raises what they find; never casts)."""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from genjax.errors import CorruptCheckpoint, UserError
from genjax.models import scan_convert
from genjax.same_model import LAYOUT_KEYS


def tree_of(item_metadata, name, where: str = "a checkpoint"):
    """The saved tree of item `name`; CorruptCheckpoint when the step lacks it (its folder
    deleted or never written)."""
    try:
        tree = item_metadata[name] if name in item_metadata else getattr(item_metadata, name)
    except (KeyError, AttributeError):
        raise CorruptCheckpoint(f"{where}: its {name!r} item is missing (a damaged or "
                                f"incomplete checkpoint)") from None
    return tree.tree if hasattr(tree, "tree") else tree


def _leaves_by_path(tree) -> dict[str, Any]:
    flat, _ = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))
    return {jax.tree_util.keystr(p, simple=True, separator="/"): x for p, x in flat}


def tree_mismatches(saved, target) -> list[str]:
    """Leaf paths that are missing, extra, or differ in shape/dtype (saved vs target)."""
    a, b = _leaves_by_path(saved), _leaves_by_path(target)
    out = [f"{k}: in checkpoint, not in this model" for k in sorted(set(a) - set(b))]
    out += [f"{k}: in this model, not in checkpoint" for k in sorted(set(b) - set(a))]
    for k in sorted(set(a) & set(b)):
        sa, sb = tuple(getattr(a[k], "shape", ())), tuple(getattr(b[k], "shape", ()))
        da, db = np.dtype(getattr(a[k], "dtype", None) or "float32"), np.dtype(b[k].dtype)
        if sa != sb or da != db:
            out.append(f"{k}: checkpoint {da.name}{list(sa)} vs model {db.name}{list(sb)}")
    return out


def check_layout(saved, target, directory) -> None:
    """Scanned checkpoint for an unscanned model (or back) -> one line on how to convert."""
    was, now = scan_convert.layout(saved), scan_convert.layout(target)
    if was and now and was != now:
        raise UserError(f"{directory} holds {was} layer params and this model is {now} "
                        f"(model.scan_layers); convert the checkpoint first: "
                        f"{LAYOUT_KEYS['model.scan_layers']}")


def check_against_saved(item_metadata, target, directory, step) -> None:
    saved = (tree_of(item_metadata, "state", f"step {step} of {directory}")
             if item_metadata is not None else None)
    if not saved:
        raise CorruptCheckpoint(f"step {step}: the state's metadata is missing or unreadable")
    check_layout(saved, target, directory)
    problems = tree_mismatches(saved, target)
    if problems:
        raise UserError(f"checkpoint {directory}/{step} does not fit this model "
                        f"({len(problems)} leaves differ):\n  " + "\n  ".join(problems[:20]))
