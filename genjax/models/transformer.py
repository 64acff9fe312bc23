"""GPT-style pre-norm decoder-only transformer with an explicit KV cache for decoding.

Shapes: B batch, T query length, S cache slots (= max_len), D embed_dim, N heads,
H = D // N head dim, F mlp hidden, V vocab. Params are float32; `dtype` is the
compute dtype; logits are always float32.

  logits_BxTxV = model.apply({"params": params}, tokens_BxT)
  cache = init_cache(model, batch_size=B)
  logits_BxTxV, cache = model.apply({"params": params}, tokens_BxT,
                                    positions_BxT=positions_BxT, cache=cache)

With a cache, token t of row b is written into slot positions_BxT[b, t] and attends to
every slot <= its own position. Slots above a row's position may hold anything (e.g.
the K/V of right-padding), because no token ever looks above its own position and
every slot at or below it was written by a real, earlier token.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from genjax.sharding import constrain

# Shape rows (vocab_size and max_len come from the config). Sources: "tiny"/"cpu" are
# ours; "gpu" is nanoGPT's config/train_shakespeare_char.py; "gpt2_124m" is GPT-2 small
# (Radford et al. 2019, Table 2); "gpt2_1b" is ~1.2B non-embedding params at the
# depth/width of GPT-3 XL (Brown et al. 2020, Table 2.1) with 128-wide heads.
SIZES = {
    "tiny": dict(num_layers=2, num_heads=2, embed_dim=32, mlp_ratio=4),
    "cpu": dict(num_layers=4, num_heads=4, embed_dim=128, mlp_ratio=4),
    "gpu": dict(num_layers=6, num_heads=6, embed_dim=384, mlp_ratio=4),
    "gpt2_124m": dict(num_layers=12, num_heads=12, embed_dim=768, mlp_ratio=4),
    "gpt2_1b": dict(num_layers=24, num_heads=16, embed_dim=2048, mlp_ratio=4),
}

CHOICES = {
    "norm": ("layernorm", "rmsnorm"),
    "pos": ("learned", "rotary"),
    "activation": ("gelu", "gelu_exact", "swiglu"),  # gelu: tanh approximation (GPT-2)
    "attention_impl": (None, "xla", "cudnn"),
}

Cache = tuple[dict[str, jax.Array], ...]  # per layer {"k": [B, S, N, H], "v": [B, S, N, H]}

_INIT_STD = 0.02  # GPT-2 / nanoGPT


def _init(names: tuple, std: float = _INIT_STD):
    return nn.with_logical_partitioning(nn.initializers.normal(std), names)


def _zeros(names: tuple):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def _ones(names: tuple):
    return nn.with_logical_partitioning(nn.initializers.ones_init(), names)


def rotary(x_BxTxNxH: jax.Array, positions_BxT: jax.Array, base: float = 10000.0) -> jax.Array:
    """Rotary position embedding (Su et al. 2021), half-split (GPT-NeoX) layout."""
    half = x_BxTxNxH.shape[-1] // 2
    freq_h = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle_BxTx1xh = positions_BxT[:, :, None, None].astype(jnp.float32) * freq_h
    sin, cos = jnp.sin(angle_BxTx1xh), jnp.cos(angle_BxTx1xh)
    x1, x2 = jnp.split(x_BxTxNxH.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BxTxNxH.dtype)


class Attention(nn.Module):
    """Causal multi-head self-attention through jax.nn.dot_product_attention."""
    num_heads: int
    pos: str
    use_bias: bool
    dtype: Any
    attention_impl: str | None
    out_std: float

    @nn.compact
    def __call__(self, x_BxTxD, positions_BxT, cache_layer=None):
        D = x_BxTxD.shape[-1]
        N, H = self.num_heads, D // self.num_heads

        def proj(name):
            y = nn.DenseGeneral((N, H), use_bias=self.use_bias, dtype=self.dtype,
                                param_dtype=jnp.float32, name=name,
                                kernel_init=_init(("embed", "heads", "kv")),
                                bias_init=_zeros(("heads", "kv")))(x_BxTxD)
            return constrain(y, ("batch", "length", "heads", "kv"))

        q_BxTxNxH, k_BxTxNxH, v_BxTxNxH = proj("query"), proj("key"), proj("value")
        if self.pos == "rotary":
            q_BxTxNxH = rotary(q_BxTxNxH, positions_BxT)
            k_BxTxNxH = rotary(k_BxTxNxH, positions_BxT)

        if cache_layer is None:
            out_BxTxNxH = jax.nn.dot_product_attention(
                q_BxTxNxH, k_BxTxNxH, v_BxTxNxH, is_causal=True,
                implementation=self.attention_impl)
            new_cache = None
        else:
            B, S = cache_layer["k"].shape[:2]
            rows_Bx1 = jnp.arange(B)[:, None]
            # Out-of-range positions are dropped by the scatter (never happens in decode).
            k_BxSxNxH = cache_layer["k"].at[rows_Bx1, positions_BxT].set(
                k_BxTxNxH.astype(cache_layer["k"].dtype))
            v_BxSxNxH = cache_layer["v"].at[rows_Bx1, positions_BxT].set(
                v_BxTxNxH.astype(cache_layer["v"].dtype))
            new_cache = {"k": k_BxSxNxH, "v": v_BxSxNxH}
            mask_Bx1xTxS = jnp.arange(S)[None, None, None, :] <= positions_BxT[:, None, :, None]
            # cuDNN's fused kernel knows only top-left causal/padding masks, not per-row
            # positions, so the cached (decode) path always uses XLA's attention.
            impl = None if self.attention_impl == "cudnn" else self.attention_impl
            out_BxTxNxH = jax.nn.dot_product_attention(
                q_BxTxNxH, k_BxSxNxH.astype(q_BxTxNxH.dtype), v_BxSxNxH.astype(q_BxTxNxH.dtype),
                mask=mask_Bx1xTxS, implementation=impl)

        out_BxTxD = nn.DenseGeneral(D, axis=(-2, -1), use_bias=self.use_bias, dtype=self.dtype,
                                    param_dtype=jnp.float32, name="out",
                                    kernel_init=_init(("heads", "kv", "embed"), self.out_std),
                                    bias_init=_zeros(("embed",)))(out_BxTxNxH)
        return out_BxTxD, new_cache


class Mlp(nn.Module):
    """GELU MLP (GPT-2) or SwiGLU (Shazeer 2020); hidden width F = mlp_ratio * D in both."""
    hidden: int
    activation: str
    use_bias: bool
    dtype: Any
    out_std: float

    @nn.compact
    def __call__(self, x_BxTxD):
        def dense(features, names, std, name):
            return nn.Dense(features, use_bias=self.use_bias, dtype=self.dtype,
                            param_dtype=jnp.float32, name=name, kernel_init=_init(names, std),
                            bias_init=_zeros(names[-1:]))

        h_BxTxF = dense(self.hidden, ("embed", "mlp"), _INIT_STD, "up")(x_BxTxD)
        if self.activation == "swiglu":
            gate_BxTxF = dense(self.hidden, ("embed", "mlp"), _INIT_STD, "gate")(x_BxTxD)
            h_BxTxF = nn.silu(gate_BxTxF) * h_BxTxF
        else:  # "gelu": tanh approximation (GPT-2's gelu_new); "gelu_exact": erf form
            h_BxTxF = nn.gelu(h_BxTxF, approximate=self.activation == "gelu")
        h_BxTxF = constrain(h_BxTxF, ("batch", "length", "mlp"))
        return dense(x_BxTxD.shape[-1], ("mlp", "embed"), self.out_std, "down")(h_BxTxF)


class Transformer(nn.Module):
    """tokens_BxT int32 -> logits_BxTxV float32 (and a new cache when given one)."""
    vocab_size: int = 256
    num_layers: int = 2
    num_heads: int = 2
    embed_dim: int = 32
    mlp_ratio: int = 4
    max_len: int = 128             # context length (learned positions, cache slots)
    norm: str = "layernorm"        # layernorm | rmsnorm
    pos: str = "learned"           # learned | rotary
    activation: str = "gelu"       # gelu (tanh approx.) | gelu_exact (erf) | swiglu
    tie_embeddings: bool = True    # output head = token embedding^T | separate (embed, vocab)
    dropout: float = 0.0           # on embeddings and each residual branch (train=True)
    use_bias: bool = False         # biases in dense layers and LayerNorm
    norm_eps: float = 1e-6         # LayerNorm/RMSNorm epsilon (flax's default; GPT-2: 1e-5)
    dtype: Any = jnp.float32       # compute dtype (e.g. bfloat16); params stay float32
    attention_impl: str | None = None  # None (JAX picks) | xla | cudnn

    def __post_init__(self):
        for attr, allowed in CHOICES.items():
            if getattr(self, attr) not in allowed:
                raise ValueError(f"Transformer.{attr}={getattr(self, attr)!r}: choose one of "
                                 f"{list(allowed)}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"Transformer.embed_dim={self.embed_dim} is not divisible by "
                             f"num_heads={self.num_heads}")
        if self.pos == "rotary" and (self.embed_dim // self.num_heads) % 2:
            raise ValueError(f"Transformer.pos='rotary' needs an even head dim, got "
                             f"{self.embed_dim // self.num_heads}")
        super().__post_init__()

    def _norm(self, name):
        if self.norm == "rmsnorm":
            return nn.RMSNorm(epsilon=self.norm_eps, dtype=self.dtype, param_dtype=jnp.float32,
                              name=name, scale_init=_ones(("embed",)))
        return nn.LayerNorm(epsilon=self.norm_eps, use_bias=self.use_bias, dtype=self.dtype,
                            param_dtype=jnp.float32, name=name, scale_init=_ones(("embed",)),
                            bias_init=_zeros(("embed",)))

    @nn.compact
    def __call__(self, tokens_BxT, *, train=False, positions_BxT=None, cache: Cache | None = None):
        """Without cache: logits_BxTxV. With cache: (logits_BxTxV, new cache).

        positions_BxT defaults to 0..T-1 in every row; with a cache, pass the slots.
        """
        B, T = tokens_BxT.shape
        if positions_BxT is None:
            positions_BxT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
        drop = nn.Dropout(self.dropout, deterministic=not train or self.dropout == 0.0)
        out_std = _INIT_STD / (2 * self.num_layers) ** 0.5  # GPT-2: scale residual outputs

        embed_VxD = self.param("token_embed", _init(("vocab", "embed")),
                               (self.vocab_size, self.embed_dim), jnp.float32)
        x_BxTxD = jnp.take(embed_VxD, tokens_BxT, axis=0).astype(self.dtype)
        if self.pos == "learned":
            pos_LxD = self.param("pos_embed", _init((None, "embed")),
                                 (self.max_len, self.embed_dim), jnp.float32)
            x_BxTxD = x_BxTxD + jnp.take(pos_LxD, positions_BxT, axis=0).astype(self.dtype)
        x_BxTxD = constrain(drop(x_BxTxD), ("batch", "length", "embed"))

        new_cache = []
        for i in range(self.num_layers):
            h_BxTxD, layer_cache = Attention(
                self.num_heads, self.pos, self.use_bias, self.dtype, self.attention_impl,
                out_std, name=f"attn_{i}")(self._norm(f"ln_attn_{i}")(x_BxTxD), positions_BxT,
                                           None if cache is None else cache[i])
            x_BxTxD = x_BxTxD + drop(h_BxTxD)
            h_BxTxD = Mlp(self.mlp_ratio * self.embed_dim, self.activation, self.use_bias,
                          self.dtype, out_std, name=f"mlp_{i}")(self._norm(f"ln_mlp_{i}")(x_BxTxD))
            x_BxTxD = constrain(x_BxTxD + drop(h_BxTxD), ("batch", "length", "embed"))
            new_cache.append(layer_cache)
        x_BxTxD = self._norm("ln_final")(x_BxTxD)

        if self.tie_embeddings:
            head_DxV = embed_VxD.T
        else:
            head_DxV = self.param("lm_head", _init(("embed", "vocab")),
                                  (self.embed_dim, self.vocab_size), jnp.float32)
        logits_BxTxV = jnp.einsum("btd,dv->btv", x_BxTxD, head_DxV.astype(self.dtype),
                                  preferred_element_type=jnp.float32)
        logits_BxTxV = constrain(logits_BxTxV, ("batch", "length", "vocab"))
        return logits_BxTxV if cache is None else (logits_BxTxV, tuple(new_cache))


def init_cache(model: Transformer, batch_size: int, max_len: int | None = None,
               dtype: Any = None) -> Cache:
    """Zero KV cache: per layer {"k", "v"} of [batch_size, S, N, H], S = max_len or model's."""
    S = model.max_len if max_len is None else max_len
    shape = (batch_size, S, model.num_heads, model.embed_dim // model.num_heads)
    dtype = model.dtype if dtype is None else dtype
    return tuple({"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
                 for _ in range(model.num_layers))
