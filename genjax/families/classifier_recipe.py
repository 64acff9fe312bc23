r"""A Fashion-MNIST classifier: the feature network of the image evaluators (FID-FMNIST,
KID, precision/recall, conditional accuracy, novelty) and the classifier that CAS trains
on generated images. genjax/evaluators/feature_net.py trains it on first use and caches it.
The recipe lives in the package (found by module name, also when genjax is pip-installed);
configs/fmnist_classifier.py is this file's `get_config` for the command line.

  python -m genjax.train --config=configs/fmnist_classifier.py:cpu --workdir=runs/clf_cpu

Presets (`:arg`):
  tiny  tests: seconds on one CPU core (far from converged).
  cpu   8000 steps of 128 (17 epochs), a CNN of width 16 with two convs per stage, 256
        features, dropout 0.2: 94.04% on the whole test split at 32x32 (the evaluators'
        shipped feature net, genjax/evaluators/weights/, 337k params; retrained on other
        machines 93.95-94.24%; 3,814 s on 2 cores, partly shared with test runs:
        230-420 images/s). The earlier one-conv recipe (width 24, 6000 steps) reached
        92.95%.
          python -m genjax.train --config=configs/fmnist_classifier.py:cpu --workdir=W
  gpu   wider, two convs per stage, 20 epochs of batch 256.
"""
from genjax import config_lib

PRESETS = {
    "tiny": {"model.width": 8, "model.num_stages": 2, "model.feature_dim": 32,
             "batch_size": 32, "total_steps": 60, "optim.lr": 1e-2, "log_every_steps": 10,
             "eval_every_steps": 0, "ckpt_every_steps": 60, "optim.warmup_steps": 5, "final_eval_batches": 20},
    "cpu": {"model.width": 16, "model.num_stages": 3, "model.convs_per_stage": 2,
            "model.feature_dim": 256, "model.dropout": 0.2, "model.augment_shift": 1,
            "batch_size": 128, "total_steps": 8000, "optim.lr": 3e-3,
            "optim.warmup_steps": 100, "log_every_steps": 250, "eval_every_steps": 2000,
            "eval_batches": 20, "ckpt_every_steps": 8000},
    "gpu": {"model.width": 64, "model.num_stages": 3, "model.convs_per_stage": 2,
            "model.feature_dim": 256, "model.dropout": 0.3, "batch_size": 256,
            "total_steps": 4700, "optim.lr": 3e-3, "optim.warmup_steps": 200,
            "eval_every_steps": 1000, "eval_batches": 10, "ckpt_every_steps": 4700},
}


def get_config(arg: str | None = None):
    c = config_lib.base_config()
    c.family = "classifier"
    c.eval_split = "test"          # fashion_mnist has train | test
    c.optim.lr = 1e-3
    c.optim.b2 = 0.999
    c.optim.weight_decay = 0.05
    c.optim.min_lr_ratio = 0.0     # cosine to zero: the last steps average out the noise
    c.keep_checkpoints = 1
    c.sample.grid_samples = 0      # not a generative model

    c.model.name = "cnn"           # genjax/models/classifier.py
    c.model.width = 32             # channels of the first stage (doubling per stage)
    c.model.num_stages = 3         # conv stages, each followed by 2x2 max-pooling
    c.model.convs_per_stage = 1
    c.model.feature_dim = 128      # penultimate layer: the evaluators' feature space
    c.model.dropout = 0.0          # on the penultimate features, in training
    c.model.num_classes = 0        # 0 = from the data's class names
    c.model.augment_shift = 2      # random roll by up to this many pixels (0 = off)
    c.model.augment_flip = True    # random left-right flip

    config_lib.set_image_data(c)

    config_lib.apply_preset(c, PRESETS, arg)
    c.lock()
    return c
