r"""The reward classifier of image preference data: a Fashion-MNIST classifier trained
SEPARATELY from the image evaluators' feature net (genjax/families/classifier_recipe.py).

Why separate: the evaluators score a fine-tuned diffusion model with the feature net
(conditional accuracy, fid_fmnist). Ranking preference pairs with that same net would
reward whatever the net responds to, not the garment: a model tuned on such pairs learns
the metric's blind spots and the evaluation can no longer tell (Goodhart). So the reward
net differs in architecture (width 24, one conv per stage, 64 features, no dropout vs the
feature net's width 16, two convs per stage, 256 features, dropout 0.2) and in seed (1 vs
0: other init, other data order). genjax.data.sample_image_preferences refuses a reward
run with the feature net's recipe (model and seed) or weights.

  python -m genjax.train --config=configs/fmnist_reward_classifier.py:cpu \
      --workdir=runs/reward_clf_cpu
  python -m genjax.data.sample_image_preferences --workdir=runs/diff_cpu \
      --reward=runs/reward_clf_cpu --out=data/img_prefs --k=4 --prompts_per_class=100

Presets (`:arg`):
  tiny  tests: seconds on one CPU core (far from converged).
  cpu   600 steps of 128 (1.3 epochs) of a 5.6M-MAC/image CNN (the feature net: 9.8M):
        from the feature net's measured 230-420 images/s on 2 cores, ~400-700 images/s,
        so ~2-3 min; measured 0.890 test accuracy in 171 s (experiments/2026-12-01_align).
  gpu   wider (48), 10 epochs of batch 256.
"""
from genjax import config_lib
from genjax.families import classifier_recipe

SEED = 1  # the feature net's recipe keeps the base config's 0
PRESETS = {
    "tiny": {"model.width": 8, "model.num_stages": 2, "model.convs_per_stage": 1,
             "model.feature_dim": 16, "model.dropout": 0.0, "seed": SEED,
             "batch_size": 32, "total_steps": 20, "optim.lr": 1e-2, "optim.warmup_steps": 5,
             "log_every_steps": 10, "eval_every_steps": 0, "ckpt_every_steps": 20,
             "final_eval_batches": 4},
    "cpu": {"model.width": 24, "model.num_stages": 3, "model.convs_per_stage": 1,
            "model.feature_dim": 64, "model.dropout": 0.0, "model.augment_shift": 1,
            "model.augment_flip": True, "seed": SEED, "batch_size": 128, "total_steps": 600,
            "optim.lr": 3e-3, "optim.warmup_steps": 50, "log_every_steps": 50,
            "eval_every_steps": 300, "eval_batches": 10, "ckpt_every_steps": 600,
            "final_eval_batches": 0},
    "gpu": {"model.width": 48, "model.num_stages": 3, "model.convs_per_stage": 1,
            "model.feature_dim": 128, "model.dropout": 0.1, "seed": SEED, "batch_size": 256,
            "total_steps": 2350, "optim.lr": 3e-3, "optim.warmup_steps": 100,
            "eval_every_steps": 1000, "eval_batches": 10, "ckpt_every_steps": 2350},
}


def get_config(arg: str | None = None):
    c = classifier_recipe.get_config(arg)  # the classifier keys; every preset key re-set here
    c.unlock()
    config_lib.apply_preset(c, PRESETS, arg)
    c.lock()
    return c
