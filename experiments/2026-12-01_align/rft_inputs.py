r"""Inputs of rft_cause.sh: the same reward-filtered fine-tuning recipe on other 1,000-image
sets, and the pixel statistics that tell the sets apart.

  python experiments/2026-12-01_align/rft_inputs.py make WINNERS.npz OUT_DIR
      OUT_DIR/real1000.npz       the first 100 Fashion-MNIST train images of each class
      OUT_DIR/winners_clean.npz  the winners with their 2-pixel padding border set to black
  python experiments/2026-12-01_align/rft_inputs.py stats A.npz [B.npz ...]
      mean intensity, padding-border mean, share of exactly-black pixels, per file
"""
import gzip
import os
import sys

import numpy as np

from genjax.data import image_npz

FMNIST = "/usr/share/datasets/fashion-mnist"  # Debian dataset-fashion-mnist (make data)


def _idx(name: str, offset: int) -> np.ndarray:
    with gzip.open(os.path.join(FMNIST, name)) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def make(winners_path: str, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    winners = image_npz.read(winners_path, per_example=1)
    images = _idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1)
    labels = _idx("train-labels-idx1-ubyte.gz", 8)
    first = np.concatenate([np.flatnonzero(labels == c)[:100] for c in range(10)])
    image_npz.write(os.path.join(out_dir, "real1000.npz"), images[first],
                    labels[first].astype(np.int32), winners["class_names"])
    clean = winners["images"].copy()
    h, w = clean.shape[1:3]
    ph, pw = (h - 28) // 2, (w - 28) // 2  # the padding around the native 28 x 28
    clean[:, :ph] = clean[:, h - ph:] = 0
    clean[:, :, :pw] = clean[:, :, w - pw:] = 0
    image_npz.write(os.path.join(out_dir, "winners_clean.npz"), clean, winners["labels"],
                    winners["class_names"])


def stats(paths: list[str]) -> None:
    print(f"{'file':40s} {'mean':>6s} {'border':>6s} {'black':>6s}")
    for path in paths:
        x = np.load(path)["images"].astype(np.float32)
        if x.shape[1] == 28:  # native size: pad as the loader does
            x = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
        border = np.concatenate([x[:, :2].ravel(), x[:, -2:].ravel()])
        print(f"{os.path.basename(path):40s} {x.mean():6.1f} {border.mean():6.1f} "
              f"{(x == 0).mean():6.3f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["make"] and len(sys.argv) == 4:
        make(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["stats"] and len(sys.argv) > 2:
        stats(sys.argv[2:])
    else:
        sys.exit(__doc__)
