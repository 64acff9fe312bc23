"""Language-model family: next-token cross-entropy (+ optional z-loss) on a Transformer.

Batch: {"tokens": int32[B, T+1]} (inputs tokens[:, :-1], targets tokens[:, 1:]) and,
for eval, an optional {"mask": float32[B, T]} (0 = padding). Losses are in nats/token;
bits per character = nats/token / ln 2 / (chars per token), 1 char/token for the char
tokenizer.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from genjax import checkpoint as ckpt_lib
from genjax.data.tokenizer import tokenizer_from_json
from genjax.errors import ConfigError, UserError
from genjax.models import chunked_logits, scan_convert, transformer

MODEL_KEYS = ("vocab_size", "num_layers", "num_heads", "embed_dim", "mlp_ratio", "max_len",
              "norm", "pos", "activation", "tie_embeddings", "dropout", "use_bias",
              "attention_impl", "norm_eps", "mlp_dim", "attention_chunk", "remat", "scan_layers",
              "num_kv_heads")


SHAPE_KEYS = ("num_layers", "num_heads", "embed_dim", "mlp_ratio", "mlp_dim", "num_kv_heads")
# Capabilities (genjax/families/__init__.py)
likelihood_metrics = ("loss", "perplexity", "bits_per_token", "bits_per_char")
runtime_keys = ("model.dropout", "model.attention_impl", "model.z_loss", "model.attention_chunk",
                "model.loss_chunk", "model.remat")


def local_loss(config) -> bool:
    """The mean token NLL (+ z-loss) of equal shards averages to the batch's; dropout would
    draw the same mask on every shard, so it is local only without dropout."""
    return not float(config.model.dropout)


def model_kwargs(config) -> dict:
    """config.model -> Transformer kwargs; shape keys left at 0 come from SIZES[size]."""
    m = config.model
    if m.size not in transformer.SIZES:
        raise ConfigError(f"config.model.size={m.size!r}: choose one of {sorted(transformer.SIZES)}")
    if not m.vocab_size:
        raise ConfigError("config.model.vocab_size is 0: resolve it from the tokenizer first "
                         "(genjax.train does this)")
    kwargs = {k: m[k] for k in MODEL_KEYS if k in m}  # older workdirs lack newer keys:
    for k in SHAPE_KEYS:                               # the Transformer's defaults apply
        kwargs[k] = kwargs.get(k) or transformer.SIZES[m.size].get(k, 0)
    kwargs["attention_impl"] = kwargs.get("attention_impl") or None
    for k, allowed in transformer.CHOICES.items():
        if k in kwargs and kwargs[k] not in allowed:
            raise ConfigError(f"config.model.{k}={m[k]!r}: choose one of "
                              f"{[a or '' for a in allowed]}")
    return kwargs


def make_model(config) -> transformer.Transformer:
    return transformer.Transformer(**model_kwargs(config), dtype=jnp.dtype(config.compute_dtype))


def example_batch(config, batch_size: int) -> dict[str, np.ndarray]:
    return {"tokens": np.zeros((batch_size, config.model.max_len + 1), np.int32)}


def init_variables(model, rng, batch, config) -> dict:
    """Scanned models start from the unscanned init, stacked: the same run either way."""
    tokens = jnp.asarray(batch["tokens"][:, :-1])
    if model.scan_layers:
        flat = model.clone(scan_layers=False).init({"params": rng}, tokens)
        return scan_convert.stack(flat, model.num_layers)
    return model.init({"params": rng}, tokens)


def token_nll(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-token negative log-likelihood in nats and log-partition (for the z-loss)."""
    logits = logits_BxTxV.astype(jnp.float32)
    logz_BxT = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets_BxT[..., None], axis=-1)[..., 0]
    return logz_BxT - target_logit, logz_BxT


def loss_fn(params, model_state, batch, rng, *, model, config):
    tokens = batch["tokens"]
    loss_chunk = int(config.model.get("loss_chunk", 0))
    if loss_chunk:  # float32 logits of one chunk of positions at a time
        x_BxTxD, head_DxV = model.apply({"params": params}, tokens[:, :-1], train=True,
                                        rngs={"dropout": rng}, return_hidden=True)
        nll_BxT, logz_BxT, correct_BxT = chunked_logits.token_nll(
            x_BxTxD, head_DxV, tokens[:, 1:], chunk=loss_chunk)
    else:
        logits = model.apply({"params": params}, tokens[:, :-1], train=True,
                             rngs={"dropout": rng})
        nll_BxT, logz_BxT = token_nll(logits, tokens[:, 1:])
        correct_BxT = jnp.argmax(logits, -1) == tokens[:, 1:]
    loss = jnp.mean(nll_BxT)
    metrics = {"nll": loss, "accuracy": jnp.mean(correct_BxT)}
    z_loss = float(config.model.get("z_loss", 0.0))
    if z_loss:
        zl = z_loss * jnp.mean(logz_BxT ** 2)
        metrics["z_loss"] = zl
        loss = loss + zl
    return loss, (metrics, model_state)


def eval_fn(params, model_state, batch, *, model, config):
    tokens = batch["tokens"]
    mask = batch.get("mask", jnp.ones(tokens[:, 1:].shape, jnp.float32))
    logits = model.apply({"params": params}, tokens[:, :-1], train=False)
    nll_BxT, _ = token_nll(logits, tokens[:, 1:])
    return {"loss": jnp.sum(nll_BxT * mask),
            "accuracy": jnp.sum((jnp.argmax(logits, -1) == tokens[:, 1:]) * mask),
            "count": jnp.sum(mask)}


def param_labels(params, config):
    return None


def finalize_eval(sums: dict, chars_per_token: float = 1.0) -> dict:
    """Eval sums -> loss (nats/token), perplexity, bits per token and per character."""
    count = max(float(sums["count"]), 1.0)
    loss = float(sums["loss"]) / count
    return {"loss": loss, "accuracy": float(sums["accuracy"]) / count,
            "perplexity": math.exp(min(loss, 50.0)), "bits_per_token": loss / math.log(2),
            "bits_per_char": loss / math.log(2) / chars_per_token, "tokens": count}


def flops_per_example(config) -> float:
    """Training FLOPs per sequence: 6N per token + attention (PaLM appendix B / nanoGPT)."""
    m = model_kwargs(config)
    d, L, T, V = m["embed_dim"], m["num_layers"], m["max_len"], m["vocab_size"]
    ff = d * (m["mlp_dim"] or m["mlp_ratio"] * d) * (3 if m["activation"] == "swiglu" else 2)
    kv = d * (m.get("num_kv_heads") or m["num_heads"]) // m["num_heads"]  # key/value width
    attn = 2 * d * d + 2 * d * kv  # query and output, key and value projections
    n_params = L * (attn + ff) + V * d  # the output projection is a matmul even when tied
    return (6 * n_params + 12 * L * d * T) * T


# ----------------------------------------------------------------------- data seam
def make_data(config, *, process_index: int, process_count: int):
    """LM windows of config.data, tokenized with the tokenizer of the checkpoint named by
    data.tokenizer_from (default: init_from) when there is one: fine-tuning keeps the
    source model's vocabulary whatever the new text is."""
    from genjax.data.lm_loader import LMData
    source = str(config.data.get("tokenizer_from", "") or config.get("init_from", "") or "")
    return LMData(config.data, seq_len=int(config.model.max_len),
                  global_batch_size=int(config.batch_size), seed=int(config.seed),
                  process_index=process_index, process_count=process_count,
                  tokenizer=source_tokenizer(source) if source else None)


def source_tokenizer(path: str):
    """The tokenizer saved in the checkpoint meta of run `path` (W, W/checkpoints[/step])."""
    meta = ckpt_lib.run_meta(path)
    if "tokenizer" not in meta.get("data", {}):
        raise UserError(f"{path!r}: its checkpoint has no tokenizer (not a text model)")
    return tokenizer_from_json(meta["data"]["tokenizer"])


def resolve_config(config, data) -> None:
    """vocab_size 0 -> the tokenizer's, rounded up to a multiple of vocab_multiple."""
    if not config.model.vocab_size:
        mult = max(1, int(config.model.vocab_multiple))
        config.model.vocab_size = -(-data.tokenizer.vocab_size // mult) * mult
    elif config.model.vocab_size < data.tokenizer.vocab_size:
        raise ConfigError(f"config.model.vocab_size={config.model.vocab_size} is smaller than "
                         f"the tokenizer's {data.tokenizer.vocab_size}")


def throughput_unit(config) -> tuple[str, int]:
    return "tokens", int(config.model.max_len)


# ----------------------------------------------------------------------- text out
def text_tokenizer(meta: dict):
    """The tokenizer a checkpoint was trained with (saved in its meta by make_data)."""
    return tokenizer_from_json(meta["data"]["tokenizer"])


def sample_text(model, params, tokenizer, prompts, request):
    """[[Completion] * request.num_samples] per prompt: the KV-cache decoder
    (genjax/sampling/text.py) with every control of `request` (a TextRequest)."""
    from genjax.sampling.text import generate_texts
    return generate_texts(model, params, tokenizer, prompts, request)
