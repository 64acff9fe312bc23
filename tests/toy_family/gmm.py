"""A toy family defined outside genjax: a 2-D Gaussian mixture fitted by maximum
likelihood (README "Add a family" walks through this file).

Named in its config by module path (`config.family = "tests.toy_family.gmm"`); genjax
knows nothing about it. Batch: {"x": float32[B, 2]} (+ "mask": float32[B] in eval
batches). Loss: mean negative log-likelihood in nats per point.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

# The data: points from this mixture (weights, means, one std per component).
TRUE_WEIGHTS = np.array([0.5, 0.3, 0.2])
TRUE_MEANS = np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, 3.0]])
TRUE_STD = np.array([0.5, 0.7, 0.4])

# Capabilities (genjax/families/__init__.py)
likelihood_metrics = ("nll",)


class Mixture(nn.Module):
    num_components: int = 3

    def setup(self):
        k = self.num_components
        self.logits = self.param("logits", nn.initializers.zeros, (k,))
        self.means = self.param("means", nn.initializers.normal(2.0), (k, 2))
        self.log_std = self.param("log_std", nn.initializers.zeros, (k,))

    def __call__(self, x_Bx2):
        """log p(x): float32[B]."""
        return mixture_log_prob(x_Bx2, self.logits, self.means, self.log_std)

    def sample(self, rng, n: int):
        k_c, k_x = jax.random.split(rng)
        comp = jax.random.categorical(k_c, self.logits, shape=(n,))
        noise = jax.random.normal(k_x, (n, 2))
        return self.means[comp] + jnp.exp(self.log_std[comp])[:, None] * noise


def mixture_log_prob(x_Bx2, logits, means, log_std):
    d2_BxK = jnp.sum((x_Bx2[:, None, :] - means[None]) ** 2, -1)
    log_n = -0.5 * d2_BxK / jnp.exp(2 * log_std) - 2 * log_std - math.log(2 * math.pi)
    return jax.nn.logsumexp(jax.nn.log_softmax(logits) + log_n, axis=-1)


# ------------------------------------------------------------------ the contract
def make_model(config):
    return Mixture(num_components=int(config.model.num_components))


def example_batch(config, batch_size: int):
    return {"x": np.zeros((batch_size, 2), np.float32)}


def init_variables(model, rng, batch, config):
    return model.init(rng, jnp.asarray(batch["x"]))


def loss_fn(params, model_state, batch, rng, *, model, config):
    nll = -jnp.mean(model.apply({"params": params}, batch["x"]))
    return nll, ({"nll": nll}, model_state)


def eval_fn(params, model_state, batch, *, model, config):
    mask = batch.get("mask", jnp.ones(batch["x"].shape[:1], jnp.float32))
    nll = -model.apply({"params": params}, batch["x"])
    return {"nll": jnp.sum(nll * mask), "count": jnp.sum(mask)}


def param_labels(params, config):
    return None


def make_data(config, *, process_index: int, process_count: int):
    return MixtureData(int(config.batch_size) // process_count, int(config.seed),
                       int(config.data.eval_points))


def sample_arrays(model, params, config, rng, num_samples: int):
    """float32[N, 2] draws from the fitted mixture."""
    return model.apply({"params": params}, rng, int(num_samples), method="sample")


# ------------------------------------------------------------------ data
def draw(rng: np.random.Generator, n: int) -> np.ndarray:
    comp = rng.choice(len(TRUE_WEIGHTS), size=n, p=TRUE_WEIGHTS)
    return (TRUE_MEANS[comp] + TRUE_STD[comp, None] * rng.normal(size=(n, 2))).astype(np.float32)


def true_log_prob(x_Nx2: np.ndarray) -> np.ndarray:
    """log p(x) under the data's mixture (the best any model can do), float64[N]."""
    d2 = ((x_Nx2[:, None, :] - TRUE_MEANS[None]) ** 2).sum(-1)
    log_n = -0.5 * d2 / TRUE_STD ** 2 - 2 * np.log(TRUE_STD) - math.log(2 * math.pi)
    a = np.log(TRUE_WEIGHTS) + log_n
    m = a.max(-1)
    return m + np.log(np.exp(a - m[:, None]).sum(-1))


class _Stream:
    """Batch i of the training stream is drawn from Generator([seed, i]): resumable."""

    def __init__(self, batch_size: int, seed: int):
        self.batch_size, self.seed, self.position = batch_size, seed, 0

    def __iter__(self):
        return self

    def __next__(self):
        x = draw(np.random.default_rng([self.seed, self.position]), self.batch_size)
        self.position += 1
        return {"x": x}

    def get_state(self) -> dict:
        return {"position": self.position}

    def set_state(self, state: dict) -> None:
        self.position = int(state["position"])


class MixtureData:
    splits = ("train", "validation")

    def __init__(self, batch_size: int, seed: int, eval_points: int):
        self.batch_size, self.seed, self.eval_points = batch_size, seed, eval_points

    def train_iterator(self):
        return _Stream(self.batch_size, self.seed)

    def validation_points(self) -> np.ndarray:
        return draw(np.random.default_rng([self.seed, 10**9]), self.eval_points)

    def eval_batches(self, split: str, global_batch_size: int, max_batches=None):
        x = self.validation_points()
        b = global_batch_size
        for i, start in enumerate(range(0, len(x), b)):
            if max_batches is not None and i >= max_batches:
                return
            chunk = x[start:start + b]
            mask = np.zeros(b, np.float32)
            mask[:len(chunk)] = 1.0
            yield {"x": np.pad(chunk, ((0, b - len(chunk)), (0, 0))), "mask": mask}

    def meta(self) -> dict:
        return {"true_means": TRUE_MEANS.tolist()}

    def eval_kwargs(self) -> dict:
        return {}
