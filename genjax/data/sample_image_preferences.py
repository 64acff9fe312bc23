r"""Image preference pairs sampled from a class-conditional diffusion run and ranked by a
separately trained reward classifier (offline).

  python -m genjax.data.sample_image_preferences --workdir=runs/diff_cpu \
      --reward=runs/reward_clf_cpu --out=data/img_prefs --k=4 --prompts_per_class=100 \
      --guidance=1 --steps=20 --margin=0.1 --seed=0
  # then config.data.pairs=data/img_prefs (configs/diffusion_dpo_fmnist.py) or
  # config.data.train_images=data/img_prefs/winners.npz (configs/diffusion_rft_fmnist.py)

Prompts are class labels: prompt i of a split asks for class i % C (C classes;
--prompts_per_class per class for train, --heldout_prompts_per_class for test). Per prompt
K samples from the run's own sampler (its family's sample_images with the EMA params,
config.sample.sampler / eta, --guidance, --steps), jitted once and drawn in batches of
--batch_size rows: row i*K + j is sample j of prompt i, batch b draws from
fold_in(PRNGKey(split seed), b), split seeds --seed (train) and --seed + 1000003 (test).
Samples are saved as uint8 and rewarded as saved: the reward classifier's probability of
the prompted class (genjax/evaluators/reward_classifier.py). The pair is (best, worst) of
the K (first on ties), kept when reward(best) - reward(worst) >= --margin.

Writes into --out (genjax/data/image_npz.py):
  pairs_train.npz, pairs_test.npz  images uint8[N, 2, H, W, C] (0 winner, 1 loser),
                                   labels int32[N], rewards float32[N, 2]
  winners.npz       the best of K of EVERY train prompt (uint8[P, H, W, C], labels, rewards):
                    reward-filtered fine-tuning, and `genjax.evaluate --samples` reads it
  data_card.json/md source run and reward run (step, sha256 of state files and config; the
                    reward's test accuracy and definition), seed, sampling, K, margin, per
                    split prompts / pairs / drops, mean margin (kept pairs), mean reward of
                    best / worst / all samples (all prompts), checksums of the files.
Refused before anything is written (one `error:` line): a --workdir that is not a
class-conditional diffusion run, a --reward that is the evaluators' feature net or not a
classifier of the same classes and image shape, a non-empty --out, bad flag values.
"""
from __future__ import annotations

import os
import time

import jax
import numpy as np

from genjax import cli, families, image_grid, inference, runtime, workdir as workdir_lib
from genjax.data import data_card, image_npz
from genjax.data.sample_preferences import checkpoint_source
from genjax.data.sampled_image_pairs import SPLITS, pairs_path, to_float
from genjax.errors import UserError
from genjax.evaluators import reward_classifier

WINNERS_FILE = "winners.npz"
HELDOUT_SEED_OFFSET = 1000003  # test prompts draw from another stream than train prompts


def prompt_labels(num_classes: int, per_class: int) -> np.ndarray:
    """int32[C * per_class]: prompt i asks for class i % C."""
    return np.tile(np.arange(num_classes, dtype=np.int32), per_class)


def check_source(loaded, path: str) -> None:
    """UserError unless `loaded` samples images conditioned on a class with guidance/steps."""
    family = loaded.family
    options = set(getattr(family, "sample_options", ()))
    if not (families.has(family, "sample_images") and {"guidance", "steps"} <= options
            and families.conditioning(family, loaded.config) == "class"):
        raise UserError(f"--workdir={path!r} is not a class-conditional diffusion run (a "
                        f"{loaded.config.family} run; needs a class-conditioned image sampler "
                        f"with guidance and steps)")


def draw(loaded, labels_P: np.ndarray, *, k: int, guidance: float, steps: int, seed: int,
         batch_size: int, tag: str) -> np.ndarray:
    """uint8[P, K, H, W, C]: K samples per prompt label (rows and keys: module docstring).
    The last batch is padded to the full batch (one compiled sampler)."""
    rows = np.repeat(np.asarray(labels_P, np.int32), k)
    n, key, out, t0 = len(rows), jax.random.PRNGKey(seed), [], time.perf_counter()
    for b, start in enumerate(range(0, n, batch_size)):
        labels = rows[start:start + batch_size]
        padded = np.concatenate([labels, np.full(batch_size - len(labels), labels[-1],
                                                 np.int32)])
        x = loaded.family.sample_images(loaded.model, loaded.params, loaded.config,
                                        jax.random.fold_in(key, b), batch_size, label=padded,
                                        guidance=guidance, steps=steps,
                                        model_state=loaded.model_state)
        out.append(image_grid.to_uint8(jax.device_get(x))[:len(labels)])
        if jax.process_index() == 0:
            print(f"{tag}: {start + len(labels)}/{n} samples "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    images = np.concatenate(out)
    return images.reshape(len(labels_P), k, *images.shape[1:])


def rank(rewards_PxK: np.ndarray, margin: float):
    """(best_P, worst_P, kept_P, gap_P): argmax / argmin of each prompt's rewards (first on
    ties), their gap, and which pairs are kept (gap >= margin, two different samples)."""
    r = np.asarray(rewards_PxK, np.float64)
    rows = np.arange(len(r))
    best, worst = r.argmax(axis=1), r.argmin(axis=1)
    gap = r[rows, best] - r[rows, worst]
    return best, worst, (gap >= margin) & (best != worst), gap


def sample_split(loaded, reward, per_class: int, *, k: int, guidance: float, steps: int,
                 seed: int, batch_size: int, margin: float, tag: str) -> dict:
    """Arrays and counts of one split: pairs (kept), winners (every prompt), card stats."""
    labels_P = prompt_labels(len(reward.net.class_names), per_class)
    images = draw(loaded, labels_P, k=k, guidance=guidance, steps=steps, seed=seed,
                  batch_size=batch_size, tag=tag)
    P = len(labels_P)
    flat = images.reshape(P * k, *images.shape[2:])
    r_PxK = reward.rewards(to_float(flat), np.repeat(labels_P, k)).reshape(P, k)
    best, worst, kept, gap = rank(r_PxK, margin)
    rows = np.arange(P)
    pairs = np.stack([images[rows, best], images[rows, worst]], axis=1)[kept]
    stats = {"seed": int(seed), "prompts": int(P), "samples": int(P * k),
             "pairs": int(kept.sum()), "dropped_below_margin": int((gap < margin).sum()),
             "dropped_identical": int(((gap >= margin) & (best == worst)).sum()),
             "mean_margin": float(gap[kept].mean()) if kept.any() else 0.0,
             "mean_reward_best": float(r_PxK[rows, best].mean()),
             "mean_reward_worst": float(r_PxK[rows, worst].mean()),
             "mean_reward_all": float(r_PxK.mean())}
    return {"pairs": pairs, "pair_labels": labels_P[kept],
            "pair_rewards": np.stack([r_PxK[rows, best], r_PxK[rows, worst]], 1)[kept],
            "winners": images[rows, best], "winner_labels": labels_P,
            "winner_rewards": r_PxK[rows, best].astype(np.float32), "stats": stats}


def _check_flags(k, prompts_per_class, heldout_prompts_per_class, steps, margin, batch_size,
                 guidance) -> None:
    if k < 2:
        raise UserError(f"--k={k}: a pair needs at least 2 samples per prompt")
    if min(prompts_per_class, heldout_prompts_per_class, steps, batch_size) < 1:
        raise UserError("--prompts_per_class, --heldout_prompts_per_class, --steps and "
                        "--batch_size must be >= 1")
    if margin < 0 or guidance < 0:
        raise UserError(f"--margin={margin} and --guidance={guidance} must be >= 0")


def sample_image_preferences(path: str, reward_path: str, out: str, *, k: int = 4,
                             prompts_per_class: int = 100, heldout_prompts_per_class: int = 25,
                             guidance: float = 1.0, steps: int = 20, margin: float = 0.1,
                             seed: int = 0, batch_size: int = 256,
                             weights_dir: str = "") -> dict:
    """Writes the files of the module docstring into `out`; returns the data card.
    weights_dir: where the feature net's shipped weights are (reward_classifier.load)."""
    _check_flags(k, prompts_per_class, heldout_prompts_per_class, steps, margin, batch_size,
                 guidance)
    workdir_lib.refuse_nonempty(out)
    loaded = inference.load(path)
    check_source(loaded, path)
    names = list(loaded.meta["data"]["class_names"])
    shape = tuple(loaded.meta["data"]["image_shape"])
    reward = reward_classifier.load(reward_path, class_names=names, image_shape=shape,
                                    weights_dir=weights_dir)
    devices = jax.device_count()  # the sampler splits a batch over the devices
    batch_size = -(-batch_size // devices) * devices
    per_class = {"train": prompts_per_class, "test": heldout_prompts_per_class}
    common = dict(k=k, guidance=guidance, steps=steps, batch_size=batch_size, margin=margin)
    splits = {s: sample_split(loaded, reward, per_class[s], seed=seed + i * HELDOUT_SEED_OFFSET,
                              tag=s, **common) for i, s in enumerate(SPLITS)}
    os.makedirs(out, exist_ok=True)
    for s, d in splits.items():
        image_npz.write(pairs_path(out, s), d["pairs"], d["pair_labels"], names,
                        rewards=d["pair_rewards"])
    train = splits["train"]
    image_npz.write(os.path.join(out, WINNERS_FILE), train["winners"], train["winner_labels"],
                    names, rewards=train["winner_rewards"])
    card = {"name": os.path.basename(os.path.abspath(out)),
            "created_by": "python -m genjax.data.sample_image_preferences",
            "source": {**checkpoint_source(path, loaded.step, loaded.meta.get("config", {})),
                       "params": loaded.which},
            "reward": {**checkpoint_source(reward_path, reward.loaded.step,
                                           reward.loaded.meta.get("config", {})),
                       "test_accuracy": reward.test_accuracy,
                       "definition": reward_classifier.DEFINITION},
            "seed": int(seed), "class_names": names, "image_shape": list(shape),
            "sampling": {"k": int(k), "guidance": float(guidance), "steps": int(steps),
                         "sampler": str(loaded.config.sample.sampler),
                         "eta": float(loaded.config.sample.eta), "batch_size": int(batch_size),
                         "prompts_per_class": per_class,
                         "rows": "row i*K + j = sample j of prompt i (class i % C); batch b "
                                 "draws from fold_in(PRNGKey(split seed), b)"},
            "pairing": {"rule": "best vs worst of K by reward", "margin": float(margin)},
            "splits": {s: d["stats"] for s, d in splits.items()},
            "winners": {"file": WINNERS_FILE, "split": "train", "examples": len(train["winners"]),
                        "mean_reward": train["stats"]["mean_reward_best"]},
            "genjax_version": runtime.version()}
    return data_card.write_card(out, card)


# ---------------------------------------------------------------------- CLI
def main(argv) -> None:
    from absl import flags
    F = flags.FLAGS
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {argv[1:]}")
    card = sample_image_preferences(
        F.workdir, F.reward, F.out, k=F.k, prompts_per_class=F.prompts_per_class,
        heldout_prompts_per_class=F.heldout_prompts_per_class, guidance=F.guidance,
        steps=F.steps, margin=F.margin, seed=F.seed, batch_size=F.batch_size)
    if jax.process_index() == 0:
        for split, c in card["splits"].items():
            print(f"{split}: {c['pairs']} pairs of {c['prompts']} prompts "
                  f"({c['dropped_below_margin']} below margin {card['pairing']['margin']}), "
                  f"mean margin {c['mean_margin']:.3f}, reward best/worst/all "
                  f"{c['mean_reward_best']:.3f}/{c['mean_reward_worst']:.3f}/"
                  f"{c['mean_reward_all']:.3f}", flush=True)
        print(f"wrote {F.out}", flush=True)


def define_flags():
    from absl import flags
    flags.DEFINE_string("workdir", None, "class-conditional diffusion run to sample from",
                        required=True)
    flags.DEFINE_string("reward", None, "reward classifier run (not the evaluators' feature "
                        "net), e.g. configs/fmnist_reward_classifier.py:cpu", required=True)
    flags.DEFINE_string("out", None, "new folder for the pairs, winners and data card",
                        required=True)
    flags.DEFINE_integer("k", 4, "samples per prompt (the pair: best vs worst)")
    flags.DEFINE_integer("prompts_per_class", 100, "train prompts per class")
    flags.DEFINE_integer("heldout_prompts_per_class", 25, "held-out (test) prompts per class")
    flags.DEFINE_float("guidance", 1.0, "classifier-free guidance (1 = conditional)")
    flags.DEFINE_integer("steps", 20, "sampler steps")
    flags.DEFINE_float("margin", 0.1, "keep a pair when its reward gap is >= this")
    flags.DEFINE_integer("seed", 0, "sampling seed (test split: seed + 1000003)")
    flags.DEFINE_integer("batch_size", 256, "samples per sampler call (rounded up to a "
                         "multiple of the device count)")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
