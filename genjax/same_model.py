"""Is a checkpoint of the same model as this config? (Asked before a run resumes.)

The `family` and `model` sections name what a model *is*; a difference there is another
model (UserError), except in the keys the family lists as `runtime_keys` (how it runs:
dropout, attention kernel, remat) and in keys newer than the checkpoint (they default to
the old behaviour). A layout key (layers under scan) gets a message saying how to convert.
Schedule keys (steps, batch, optimizer) may change on resume, with a warning.
Also asked of another run whose model this one uses (a teacher, a reward model): was it
trained with the tokenizer of this run's data?
"""
from __future__ import annotations

from genjax import config_lib
from genjax.errors import UserError, warn

ARCH_KEYS = ("family", "model")
# These change the params' layout: the message says how to convert.
LAYOUT_KEYS = {"model.scan_layers": "python -m genjax.scan_convert --workdir=OLD --out=NEW"}


def check_same_tokenizer(source: dict, data_meta: dict, where: str, *, role: str,
                         needs: str) -> None:
    """UserError unless the run whose checkpoint meta is `source` (the `role`, at `where`:
    a teacher, a reward model) was trained with the tokenizer of this run's data."""
    t, s = source["data"].get("tokenizer"), data_meta["tokenizer"]
    if t != s:
        raise UserError(f"{role} {where!r} was trained with another tokenizer than this "
                        f"run's data ({_describe(t)} vs {_describe(s)}): {needs} needs "
                        "the same tokenizer")


def _describe(tok) -> str:
    """'char, 65 symbols' for a tokenizer's JSON (checkpoint meta)."""
    if isinstance(tok, dict):
        size = len(tok.get("vocab", ())) or tok.get("vocab_size", "?")
        return f"{tok.get('kind', '?')}, {size} symbols"
    return str(tok)[:40]


def check_same_model(saved_meta: dict, config, runtime_keys: tuple[str, ...] = ()) -> None:
    """A checkpoint of another model (family or model config differ, except in
    `runtime_keys`) -> UserError."""
    now = config_lib.to_dict(config)
    then = saved_meta.get("config", {})
    diffs = []
    for key in ARCH_KEYS:
        if isinstance(now.get(key), dict):
            # keys the saved run did not have yet keep their old behaviour by default
            diffs += [d for d in config_lib.diff(then.get(key, {}), now[key], prefix=f"{key}.",
                                                 new_keys=False)
                      if d.split(":")[0] not in runtime_keys]
        elif then.get(key) != now.get(key):
            diffs.append(f"{key}: {then.get(key)!r} -> {now.get(key)!r}")
    layout = [d for d in diffs if d.split(":")[0] in LAYOUT_KEYS]
    if layout and len(layout) == len(diffs):
        key = layout[0].split(":")[0]
        raise UserError(f"the workdir's checkpoint has another params layout ({layout[0]}); "
                        f"convert it first: {LAYOUT_KEYS[key]}, then train in NEW")
    if diffs:
        raise UserError("the workdir holds a checkpoint of a different model; use a new "
                        "--workdir or set --config.init_from. Differences: " + "; ".join(diffs))


SCHEDULE_KEYS = ("total_steps", "batch_size", "optim")


def warn_changed_schedule(saved_meta: dict, config) -> list[str]:
    """Resuming with changed schedule/optimizer keys is allowed, but said out loud (a
    change of the optimizer state's structure fails at the restore: resume.start)."""
    diffs = changed_schedule(saved_meta, config)
    if diffs:
        msg = "resuming with changed schedule keys: " + "; ".join(diffs)
        warn(msg)
    return diffs


def changed_schedule(saved_meta: dict, config) -> list[str]:
    """"key: old -> new" of the SCHEDULE_KEYS that differ from the saved run's."""
    now, then = config_lib.to_dict(config), saved_meta.get("config", {})
    diffs = []
    for key in SCHEDULE_KEYS:
        if isinstance(now.get(key), dict):
            diffs += config_lib.diff(then.get(key, {}), now[key], prefix=f"{key}.",
                                     new_keys=False)
        elif then.get(key) != now.get(key):
            diffs.append(f"{key}: {then.get(key)!r} -> {now.get(key)!r}")
    return diffs
