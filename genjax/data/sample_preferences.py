r"""Preference pairs sampled from an LM checkpoint and judged by the gold reward (offline).

  python -m genjax.data.sample_preferences --workdir=runs/lm_cpu --out=data/prefs_lm_cpu \
      --k=4 --max_new_tokens=96 --margin=0.1 --seed=0
  python -m genjax.train --config=configs/dpo_shakespeare.py:cpu --workdir=runs/dpo_cpu \
      --config.init_from=runs/lm_cpu --config.data.preferences=data/prefs_lm_cpu

Prompts: the speaker lines ("ROMEO:\n") of the checkpoint's text, train plays for
train.jsonl, held-out (validation) plays for validation.jsonl (genjax/data/shakespeare.py
splits by whole play), up to --max_prompts per split evenly spaced, those that fit the
context with --max_new_tokens. Per prompt, K completions from the jitted KV-cache decoder
(temperature 1, no filters; genjax/sampling/completions.py: row i*K+j draws from stream
i*K+j of --seed), scored by the gold reward (genjax/evaluators/gold_reward.py, vocabulary
of the train split); the pair is (best, worst) of the K, kept when their gold margin is
>= --margin (ties broken by the first sample). Writes OUT/train.jsonl, OUT/validation.jsonl
({"prompt", "chosen", "rejected"}: what genjax/data/preferences.py reads) and
OUT/data_card.json: the source checkpoint (workdir, step, sha256 of its state files and of
its config), seed, sampling settings, the reward's definition, per split the prompts,
pairs, drops and mean margin, and the tokenizer's to_json() (the reader checks it).
"""
from __future__ import annotations

import hashlib
import json
import os

import jax
import numpy as np

from genjax import cli, families, inference, runtime, workdir as workdir_lib
from genjax.data import data_card, preferences
from genjax.errors import UserError
from genjax.evaluators import gold_reward, words
from genjax.sampling import completions

SPLITS = ("train", "validation")  # pair split = the text split its prompts come from


def best_and_worst(scores) -> tuple[int, int, float]:
    """(index of the highest score, of the lowest, their margin); the first on ties."""
    s = np.asarray(scores, np.float64)
    best, worst = int(np.argmax(s)), int(np.argmin(s))
    return best, worst, float(s[best] - s[worst])


def make_pairs(prompts: list[str], texts: list[list[str]], scores: list[list[float]],
               margin: float) -> tuple[list[dict], dict]:
    """Records {"prompt", "chosen", "rejected", "margin"} of the prompts whose best and
    worst of K differ by >= margin in gold reward, and the counts of what was dropped."""
    records, below, invalid = [], 0, 0
    for prompt, ts, ss in zip(prompts, texts, scores):
        b, w, m = best_and_worst(ss)
        if m < margin:
            below += 1
        elif not ts[b] or not ts[w] or ts[b] == ts[w]:
            invalid += 1  # the reader refuses empty or identical completions
        else:
            records.append({"prompt": prompt, "chosen": ts[b], "rejected": ts[w],
                            "margin": m})
    return records, {"prompts": len(prompts), "pairs": len(records),
                     "dropped_below_margin": below, "dropped_empty_or_identical": invalid}


def checkpoint_source(path: str, step: int, config: dict) -> dict:
    """The checkpoint the pairs come from: workdir, step, sha256 of its state files (path
    and bytes, in path order) and of its config (sorted JSON)."""
    state_dir = os.path.join(path, "checkpoints", str(step), "state")
    h = hashlib.sha256()
    for rel, info in data_card.file_checksums(state_dir).items():
        h.update(f"{rel}\0{info['sha256']}\n".encode())
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    return {"workdir": os.path.abspath(path), "step": int(step),
            "state_sha256": h.hexdigest(), "config_sha256": config_hash.hexdigest()}


def sample_split(loaded, tokenizer, text: str, vocab, *, k: int, max_new_tokens: int,
                 seed: int, max_prompts: int) -> tuple[list[str], list[list[str]], list]:
    """(prompts, K completions each, their gold rewards) for one split's text."""
    N, max_len = int(max_new_tokens), int(loaded.model.max_len)
    candidates = []
    for prompt, _ in preferences.speaker_prompts(text, max_chars=0):
        try:
            ids = np.asarray(tokenizer.encode(prompt), np.int32)
        except ValueError:  # a character the policy's tokenizer lacks
            continue
        if len(ids) + N <= max_len:
            candidates.append((prompt, ids))
    if len(candidates) > max_prompts:
        keep = np.unique(np.linspace(0, len(candidates) - 1, max_prompts).round().astype(int))
        candidates = [candidates[i] for i in keep]
    if not candidates:
        return [], [], []
    tokens = completions.sample(loaded.model, loaded.params, [c[1] for c in candidates], k=k,
                                max_new_tokens=N, seed=seed,
                                valid_vocab=int(tokenizer.vocab_size))
    texts = [tokenizer.decode(t.tolist()) for t in tokens]
    scores = gold_reward.gold_rewards(texts, vocab)
    return ([c[0] for c in candidates], [texts[i:i + k] for i in range(0, len(texts), k)],
            [scores[i:i + k] for i in range(0, len(scores), k)])


def sample_preferences(path: str, out: str, *, k: int = 4, max_new_tokens: int = 96,
                       margin: float = 0.1, seed: int = 0, max_prompts: int = 1000) -> dict:
    """Writes OUT/{train,validation}.jsonl and OUT/data_card.json; returns the card."""
    if k < 2:
        raise UserError(f"--k={k}: a pair needs at least 2 completions per prompt")
    if max_new_tokens < 1 or max_prompts < 1:
        raise UserError("--max_new_tokens and --max_prompts must be >= 1")
    workdir_lib.refuse_nonempty(out)
    loaded = inference.load(path)
    if not (families.has(loaded.family, "text_tokenizer") and hasattr(loaded.model, "max_len")):
        raise UserError(f"--workdir={path!r} is not a text model (no tokenizer)")
    tokenizer = loaded.family.text_tokenizer(loaded.meta)
    data = loaded.family.make_data(loaded.config, process_index=0, process_count=1)
    if not callable(getattr(data, "text", None)):
        raise UserError(f"--workdir={path!r}: its data has no text to take prompts from")
    vocab = words.vocabulary(data.text("train"))
    splits = {}
    os.makedirs(out, exist_ok=True)
    for i, split in enumerate(SPLITS):
        prompts, texts, scores = sample_split(
            loaded, tokenizer, data.text(split), vocab, k=k, max_new_tokens=max_new_tokens,
            seed=seed + 1000003 * i, max_prompts=max_prompts)  # splits draw other streams
        records, counts = make_pairs(prompts, texts, scores, margin)
        with open(os.path.join(out, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        flat = [x for ss in scores for x in ss]
        splits[split] = {**counts, "completions": len(flat),
                         "mean_margin": float(np.mean([r["margin"] for r in records]))
                         if records else 0.0,
                         "mean_gold": float(np.mean(flat)) if flat else 0.0}
    card = {"name": os.path.basename(os.path.abspath(out)),
            "created_by": "python -m genjax.data.sample_preferences",
            "source": checkpoint_source(path, loaded.step, loaded.meta.get("config", {})),
            "params": loaded.which, "seed": int(seed),
            "sampling": {"k": int(k), "max_new_tokens": int(max_new_tokens),
                         "temperature": 1.0, "filters": "none",
                         "prompts": "speaker lines, evenly spaced, up to "
                                    f"{max_prompts} per split"},
            "pairing": {"rule": "best vs worst of K by gold reward", "margin": float(margin)},
            "gold_reward": gold_reward.definition(), "splits": splits,
            "tokenizer": tokenizer.to_json(), "genjax_version": runtime.version()}
    with open(os.path.join(out, data_card.CARD_JSON), "w", encoding="utf-8") as f:
        json.dump(card, f, indent=2)
    return card


# ---------------------------------------------------------------------- CLI
def main(argv) -> None:
    from absl import flags
    F = flags.FLAGS
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    card = sample_preferences(F.workdir, F.out, k=F.k, max_new_tokens=F.max_new_tokens,
                              margin=F.margin, seed=F.seed, max_prompts=F.max_prompts)
    if jax.process_index() == 0:
        for split, c in card["splits"].items():
            print(f"{split}: {c['pairs']} pairs of {c['prompts']} prompts "
                  f"({c['dropped_below_margin']} below margin {card['pairing']['margin']}), "
                  f"mean margin {c['mean_margin']:.3f}", flush=True)
        print(f"wrote {F.out}", flush=True)


def define_flags():
    from absl import flags
    flags.DEFINE_string("workdir", None, "LM run to sample from (its latest checkpoint)",
                        required=True)
    flags.DEFINE_string("out", None, "new folder for {train,validation}.jsonl + data card",
                        required=True)
    flags.DEFINE_integer("k", 4, "completions per prompt (the pair: best vs worst)")
    flags.DEFINE_integer("max_new_tokens", 96, "tokens per completion")
    flags.DEFINE_float("margin", 0.1, "keep a pair when its gold margin is >= this")
    flags.DEFINE_integer("seed", 0, "sampling seed")
    flags.DEFINE_integer("max_prompts", 1000, "speaker-line prompts per split, at most")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
