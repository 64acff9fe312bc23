"""The families as the shared tests build them: the registry's list (genjax/families),
their tiny configs, and one short run of each (tests/conftest.py: `tiny_run`) that
several test modules read. A new family must add its config module here (a test checks
that the registry and this table agree)."""
import contextlib
import importlib

from genjax import families

CONFIG_MODULES = {
    "lm": "configs.lm_shakespeare",
    "diffusion": "configs.diffusion_fmnist",
    "vae": "configs.vae_fmnist",
    "gan": "configs.gan_fmnist",
    "classifier": "configs.fmnist_classifier",
    "dpo": "configs.dpo_shakespeare",
    "reward": "configs.reward_shakespeare",
    "rl": "configs.rl_shakespeare",
    "diffusion_dpo": "configs.diffusion_dpo_fmnist",
    "distill": "configs.distill_shakespeare",
    "diffusion_distill": "configs.diffusion_distill_fmnist",
}
FAMILIES = tuple(families.registered())  # the one list every parametrised test uses
IMAGE_FAMILIES = tuple(f for f in FAMILIES if families.has(families.get(f), "sample_images"))
# Variants that join the shared spec: name -> (family, overrides of its tiny config).
LORA = {"lora.rank": 4, "lora.alpha": 8.0, "optim.ema_decay": 0.0}
VARIANTS = {"lm+lora": ("lm", LORA), "diffusion+lora": ("diffusion", LORA),
            "dpo+lora": ("dpo", LORA),
            # guidance distillation first (Meng et al. 2023 stage 1): the student takes g;
            # no dropout, so that its step-0 loss is the derived one (test_guidance_distill)
            "diffusion_distill+guidance": ("diffusion_distill", {"distill.stage": "guidance",
                                                                 "model.dropout": 0.0}),
            # half of each batch continued by the student's own samples (GKD), decoded in
            # the step with its key: the resume test checks that they come back bit for bit
            "distill+on_policy": ("distill", {"distill.on_policy": 0.5}),
            # RLHF: a learned reward model (here fresh, with a random head) is the reward
            "rl+reward_model": ("rl", {"rl.reward": "model", "rl.random_reward_model": True}),
            # PPO: each rollout serves 2 steps from model_state["rollout"] (the interrupted
            # run stops after step 3 and its step 4 reuses step 3's rollout from the
            # checkpoint); with a value head in params (rl.aux_params). PPO without one
            # keeps the same buffer and is specified in tests/test_rl_ppo.py.
            "rl+ppo_value": ("rl", {"rl.algo": "ppo", "rl.ppo_epochs": 2,
                                    "rl.value_head": True})}
SPECS = FAMILIES + tuple(VARIANTS)
# The families whose first step is also run un-jitted (tests/test_families.py): one per
# model of its own but the U-Net (its eager step, each primitive compiled on its own, took
# 19 s of a cold 2-core CI run, for a jit-vs-eager equality the shared step already shows).
# The others train one of these models under their own loss (alignment, distillation) and,
# like the variants and diffusion, check their golden loss on the jitted step.
UNJITTED = ("lm", "vae", "gan", "classifier")

# The short run: 6 steps, a loss every step, checkpoints at 3 (where the resume spec
# restarts) and 6, EMA that moves, 2 data-parallel devices.
# The class-conditional variants so that evaluators of conditional samples apply.
RUN_OVERRIDES = {"total_steps": 6, "log_every_steps": 1, "ckpt_every_steps": 3,
                 "keep_checkpoints": 2,  # (the classifier recipe keeps 1)
                 "eval_every_steps": 0, "final_eval_batches": 1, "optim.warmup_steps": 2,
                 "optim.ema_decay": 0.9, "mesh.data": 2}
RUN_FAMILY_OVERRIDES = {"lm": {"model.vocab_size": 0},  # the tokenizer decides
                        "diffusion": {"sample.grid_samples": 0},
                        "vae": {"sample.grid_samples": 0, "model.class_conditional": True},
                        "gan": {"sample.grid_samples": 0, "model.class_conditional": True},
                        "classifier": {},
                        "dpo": {"model.vocab_size": 0},
                        "reward": {"model.vocab_size": 0},
                        "rl": {"model.vocab_size": 0},
                        "diffusion_dpo": {"sample.grid_samples": 0},
                        "distill": {"model.vocab_size": 0},
                        "diffusion_distill": {"sample.grid_samples": 0}}


def spec_parts(spec: str) -> tuple[str, dict]:
    """(family, overrides of its tiny config) of a family or variant name."""
    return VARIANTS.get(spec, (spec, {}))


def tiny_config(family: str, mesh: dict | None = None, **overrides):
    """configs/<family>:tiny with what resolve_config would fill in from the data (LM
    vocabulary 64, RL reward tokens 0-31, one channel, 10 classes), on `mesh` (default one
    device), plus dotted-key `overrides`; locked."""
    family, variant = spec_parts(family)
    overrides = {**variant, **overrides}
    c = importlib.import_module(CONFIG_MODULES[family]).get_config("tiny")
    c.unlock()
    if "vocab_size" in c.model:
        c.model.vocab_size = 64
    if "rl" in c and not c.rl.reward_ids:  # the gold reward's tokens (half the vocabulary)
        c.rl.reward_ids = tuple(range(32))
    else:
        c.data.channels = 1
        if "num_classes" in c.model and not c.model.num_classes:
            c.model.num_classes = 10
    c.mesh.update(mesh or dict(data=1, fsdp=1, tensor=1))
    for key, value in overrides.items():
        *path, last = key.split(".")
        target = c
        for p in path:
            target = target[p]
        target[last] = value
    c.lock()
    return c


def run_config(spec: str, **overrides):
    """The config of the short run (see RUN_OVERRIDES) of a family or variant, plus
    dotted-key `overrides`."""
    family, variant = spec_parts(spec)
    return tiny_config(family, **{**RUN_OVERRIDES, **RUN_FAMILY_OVERRIDES[family], **variant,
                                  **overrides})


@contextlib.contextmanager
def one_error_line(error: type[BaseException], match: str | None = None):
    """pytest.raises(error, match=match) that also requires a one-line message (what the
    command-line tools print as `error: ...`)."""
    import pytest
    with pytest.raises(error, match=match) as e:
        yield e
    assert "\n" not in str(e.value), str(e.value)
