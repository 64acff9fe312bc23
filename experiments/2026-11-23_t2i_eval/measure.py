r"""Text-to-image, measured with the Fashion-MNIST classifier (genjax/evaluators/feature_net.py):

1. prompt accuracy: argmax class == prompted class, for held-out phrasings (never trained
   on; genjax/data/captions.py) and, for comparison, training phrasings; chance = 10%.
2. best-of-8 vs best-of-1: the classifier's probability for the prompted class, per
   held-out prompt: the first draw (n = 1), the mean of all 8 draws (the expected n = 1)
   and the best of the 8 (genjax.sampling.best_of_n.best_of_n_images).

  python experiments/2026-11-23_t2i_eval/measure.py --workdir=runs/t2i_cpu   # from the repo root

All prompts of a measurement are sampled in one batched DDIM call (`--steps`, `--guidance`).
`--classifier_workdir=W` uses a classifier trained by hand instead (any workdir of
configs/fmnist_classifier.py; its test accuracy is computed here on 2,000 test images).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def pick_prompts(split: str, per_class: int, seed: int) -> tuple[list[str], np.ndarray]:
    """`per_class` phrasings of every class from `split`, chosen by a seeded permutation."""
    from genjax.data import captions
    rs = np.random.RandomState(seed)
    texts, labels = [], []
    for c in range(len(captions.FASHION_MNIST_CLASSES)):
        options = captions.phrasings(c, split)
        for i in rs.permutation(len(options))[:per_class]:
            texts.append(options[i])
            labels.append(c)
    return texts, np.array(labels)


def sample(loaded, tokens_NxL, args, seed: int) -> np.ndarray:
    return np.asarray(jax.device_get(loaded.family.sample_images(
        loaded.model, loaded.params, loaded.config, jax.random.PRNGKey(seed), len(tokens_NxL),
        guidance=args.guidance, steps=args.steps, prompt=tokens_NxL)))


def classifier_from_workdir(workdir: str, data_cfg):
    """A FeatureNet around a hand-trained classifier workdir, with its test accuracy."""
    from genjax import inference
    from genjax.data.image_loader import ImageData
    from genjax.evaluators.feature_net import FeatureNet
    loaded = inference.load(workdir, which="raw")
    data = ImageData(data_cfg, global_batch_size=1, seed=0)
    net = FeatureNet(name=f"{workdir}@{loaded.step}", directory=workdir, config=loaded.config,
                     model=loaded.model, params=loaded.params,
                     class_names=list(loaded.meta["data"]["class_names"]),
                     test_accuracy=float("nan"), image_shape=tuple(data.image_shape))
    hits = []
    for batch in data.eval_batches("test", 500, 4):
        keep = batch["mask"] > 0
        hits.append(net.probs(batch["image"][keep]).argmax(-1) == batch["label"][keep])
    net.test_accuracy = float(np.concatenate(hits).mean())
    return net


def main(argv=None):
    from genjax import inference, train
    from genjax.data.caption_tokenizer import CaptionTokenizer
    from genjax.evaluators.feature_net import load_feature_net
    from genjax.sampling import best_of_n

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--prompts_per_class", type=int, default=4)
    p.add_argument("--samples_per_prompt", type=int, default=4)
    p.add_argument("--bon_prompts_per_class", type=int, default=2)
    p.add_argument("--n", type=int, default=8, help="best-of-n candidates per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classifier_workdir", default="",
                   help="a trained fmnist_classifier workdir ('' = load_feature_net)")
    p.add_argument("--out", default="", help="JSON path (default: <workdir>/t2i_eval.json)")
    args = p.parse_args(argv)
    args.out = args.out or os.path.join(args.workdir, "t2i_eval.json")

    t0 = time.time()
    loaded = inference.load(args.workdir)
    tok = CaptionTokenizer.from_json(loaded.meta["data"]["caption_tokenizer"])
    net = classifier_from_workdir(args.classifier_workdir, loaded.config.data) \
        if args.classifier_workdir else load_feature_net(loaded.config.data, train_fn=train.train)
    print(f"classifier {net.name}: test accuracy {net.test_accuracy:.3f}", flush=True)
    result = {"workdir": os.path.abspath(args.workdir), "step": loaded.step,
              "classifier": net.name, "classifier_test_accuracy": net.test_accuracy,
              "guidance": args.guidance, "ddim_steps": args.steps}

    # ---------------------------------------------------------------- accuracy
    for split in ("heldout", "train"):
        texts, labels = pick_prompts(split, args.prompts_per_class, args.seed)
        k = args.samples_per_prompt
        images = sample(loaded, np.repeat(tok.encode_batch(texts), k, axis=0), args, args.seed)
        probs = net.probs(images)
        y = np.repeat(labels, k)
        correct = probs.argmax(-1) == y
        per_class = {net.class_names[c]: float(correct[y == c].mean()) for c in np.unique(y)}
        result[f"accuracy_{split}"] = {
            "accuracy": float(correct.mean()), "images": int(len(y)), "prompts": len(texts),
            "mean_p_prompted": float(probs[np.arange(len(y)), y].mean()),
            "per_class": per_class, "chance": 1.0 / len(net.class_names)}
        print(f"{split:>7} phrasings: accuracy {correct.mean():.3f} over {len(y)} images "
              f"({len(texts)} prompts x {k}); chance {1 / len(net.class_names):.3f}", flush=True)
        print("         per class: " + ", ".join(f"{c} {a:.2f}" for c, a in per_class.items()),
              flush=True)

    # ---------------------------------------------------------------- best-of-n
    texts, labels = pick_prompts("heldout", args.bon_prompts_per_class, args.seed + 1)
    n = args.n
    images = sample(loaded, np.repeat(tok.encode_batch(texts), n, axis=0), args, args.seed + 1)
    groups = images.reshape(len(texts), n, *images.shape[1:])
    first, mean_all, best = [], [], []
    for g, target in zip(groups, labels):
        score = best_of_n.class_confidence(net.probs, int(target))
        ranked = best_of_n.best_of_n_images(lambda k, s, g=g: g[:k], score, n)
        scores = np.asarray(score(list(g)))
        first.append(scores[0])
        mean_all.append(scores.mean())
        best.append(ranked[0][1])
    result["best_of_n"] = {"n": n, "prompts": len(texts),
                           "best_of_1_first_draw": float(np.mean(first)),
                           "best_of_1_expected": float(np.mean(mean_all)),
                           f"best_of_{n}": float(np.mean(best))}
    print(f"best-of-n on {len(texts)} held-out prompts, mean p(prompted class): n=1 first draw "
          f"{np.mean(first):.3f}, n=1 expected {np.mean(mean_all):.3f}, n={n} "
          f"{np.mean(best):.3f}", flush=True)
    result["seconds"] = time.time() - t0
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
