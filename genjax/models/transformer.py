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

import dataclasses

import jax
import jax.numpy as jnp
from flax import linen as nn

from genjax.errors import ConfigError
from genjax.models import chunked_attention, remat
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
    # LLaMA shapes (configs/lm_shakespeare.py's llama_1b / llama_7b presets add RMSNorm,
    # rotary, SwiGLU, no bias).
    # llama_1b: LLaMA-3.2-1B (Meta 2024 model card: 16 x 2048, 32 heads sharing 8 key/value
    # heads (grouped-query attention), SwiGLU 8192, tied embeddings).
    # llama_7b: LLaMA-2-7B (Touvron et al. 2023: 32 x 4096, 32 heads, SwiGLU 11008).
    "llama_1b": dict(num_layers=16, num_heads=32, embed_dim=2048, mlp_ratio=4, mlp_dim=8192,
                     num_kv_heads=8),
    "llama_7b": dict(num_layers=32, num_heads=32, embed_dim=4096, mlp_ratio=4, mlp_dim=11008),
}

CHOICES = {
    "norm": ("layernorm", "rmsnorm"),
    "pos": ("learned", "rotary"),
    "activation": ("gelu", "gelu_exact", "swiglu"),  # gelu: tanh approximation (GPT-2)
    "attention_impl": (None, "xla", "cudnn", "chunked"),
    "remat": remat.CHOICES,
}

# Unscanned: per layer {"k": [B, S, N, H], "v": [B, S, N, H]}; scanned (scan_layers):
# one {"k": [L, B, S, N, H], "v": [L, B, S, N, H]} (init_cache builds the right one).
Cache = tuple[dict[str, jax.Array], ...] | dict[str, jax.Array]
# One layer's submodules. Unscanned they are top-level params "<part>_<i>"; scanned they
# sit under SCAN_NAME with a leading layer axis (logical name "layers").
BLOCK_PARTS = ("ln_attn", "attn", "ln_mlp", "mlp")
SCAN_NAME = "layers"

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
    attention_chunk: int
    out_std: float
    num_kv_heads: int = 0          # K key/value heads shared by N / K query heads (0 = N)

    @nn.compact
    def __call__(self, x_BxTxD, positions_BxT, cache_layer=None):
        D = x_BxTxD.shape[-1]
        N, H = self.num_heads, D // self.num_heads
        K = self.num_kv_heads or N

        def proj(name, heads):
            y = nn.DenseGeneral((heads, H), use_bias=self.use_bias, dtype=self.dtype,
                                param_dtype=jnp.float32, name=name,
                                kernel_init=_init(("embed", "heads", "kv")),
                                bias_init=_zeros(("heads", "kv")))(x_BxTxD)
            return constrain(y, ("batch", "length", "heads", "kv"))

        # k, v: [B, T, K, H]; query head n attends with key/value head n // (N / K)
        q_BxTxNxH, k_BxTxNxH, v_BxTxNxH = proj("query", N), proj("key", K), proj("value", K)
        if self.pos == "rotary":
            q_BxTxNxH = rotary(q_BxTxNxH, positions_BxT)
            k_BxTxNxH = rotary(k_BxTxNxH, positions_BxT)

        if cache_layer is None and self.attention_impl == "chunked":
            out_BxTxNxH = chunked_attention.attention(
                q_BxTxNxH, jnp.repeat(k_BxTxNxH, N // K, axis=2),
                jnp.repeat(v_BxTxNxH, N // K, axis=2), chunk=self.attention_chunk)
            new_cache = None
        elif cache_layer is None:
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
            # positions, so the cached (decode) path always uses XLA's attention (and
            # decode scores are [T, S] with T small: nothing for chunking to save).
            impl = None if self.attention_impl in ("cudnn", "chunked") else self.attention_impl
            out_BxTxNxH = jax.nn.dot_product_attention(
                q_BxTxNxH, k_BxSxNxH.astype(q_BxTxNxH.dtype), v_BxSxNxH.astype(q_BxTxNxH.dtype),
                mask=mask_Bx1xTxS, implementation=impl)

        out_BxTxD = nn.DenseGeneral(D, axis=(-2, -1), use_bias=self.use_bias, dtype=self.dtype,
                                    param_dtype=jnp.float32, name="out",
                                    kernel_init=_init(("heads", "kv", "embed"), self.out_std),
                                    bias_init=_zeros(("embed",)))(out_BxTxNxH)
        return out_BxTxD, new_cache


class Mlp(nn.Module):
    """GELU MLP (GPT-2) or SwiGLU (Shazeer 2020); hidden width F (mlp_dim or mlp_ratio * D)."""
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

        # The dots run on [B*T, .] (bitcasts): with [B, T, .] operands XLA:CPU's backward
        # transposes the [B, T, F] gradient in a strided fusion before each weight-gradient
        # dot, ~1.8x the MLP's fwd+bwd time (experiments/bench/mlp_custom_vjp.py); the math
        # and the gradients are the same.
        B, T, D = x_BxTxD.shape
        x_NxD = x_BxTxD.reshape(B * T, D)
        h_NxF = dense(self.hidden, ("embed", "mlp"), _INIT_STD, "up")(x_NxD)
        if self.activation == "swiglu":
            gate_NxF = dense(self.hidden, ("embed", "mlp"), _INIT_STD, "gate")(x_NxD)
            h_NxF = nn.silu(gate_NxF) * h_NxF
        else:  # "gelu": tanh approximation (GPT-2's gelu_new); "gelu_exact": erf form
            h_NxF = nn.gelu(h_NxF, approximate=self.activation == "gelu")
        h_BxTxF = constrain(h_NxF.reshape(B, T, -1), ("batch", "length", "mlp"))
        out_NxD = dense(D, ("mlp", "embed"), self.out_std, "down")(h_BxTxF.reshape(B * T, -1))
        return out_NxD.reshape(B, T, D)


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """What one transformer layer needs (hashable: a static argument of remat/scan)."""
    num_heads: int
    hidden: int
    pos: str
    norm: str
    activation: str
    use_bias: bool
    dtype: Any
    attention_impl: str | None
    attention_chunk: int
    out_std: float
    norm_eps: float = 1e-6
    num_kv_heads: int = 0


def _norm(spec: LayerSpec, name: str, **parent):
    if spec.norm == "rmsnorm":
        return nn.RMSNorm(epsilon=spec.norm_eps, dtype=spec.dtype, param_dtype=jnp.float32,
                          name=name, scale_init=_ones(("embed",)), **parent)
    return nn.LayerNorm(epsilon=spec.norm_eps, use_bias=spec.use_bias, dtype=spec.dtype,
                        param_dtype=jnp.float32, name=name, scale_init=_ones(("embed",)),
                        bias_init=_zeros(("embed",)), **parent)


def layer(mdl: nn.Module, spec: LayerSpec, suffix: str, drop, x_BxTxD, positions_BxT,
          cache_layer=None):
    """One pre-norm block; its submodules are mdl's children "<part><suffix>"."""
    h_BxTxD, new_cache = Attention(
        spec.num_heads, spec.pos, spec.use_bias, spec.dtype, spec.attention_impl,
        spec.attention_chunk, spec.out_std, spec.num_kv_heads, name=f"attn{suffix}",
        parent=mdl)(
            _norm(spec, f"ln_attn{suffix}", parent=mdl)(x_BxTxD), positions_BxT, cache_layer)
    x_BxTxD = x_BxTxD + drop(h_BxTxD)
    normed_BxTxD = _norm(spec, f"ln_mlp{suffix}", parent=mdl)(x_BxTxD)
    h_BxTxD = Mlp(spec.hidden, spec.activation, spec.use_bias, spec.dtype, spec.out_std,
                  name=f"mlp{suffix}", parent=mdl)(normed_BxTxD)
    return constrain(x_BxTxD + drop(h_BxTxD), ("batch", "length", "embed")), new_cache


class ScanBlock(nn.Module):
    """`layer` as the body of nn.scan: carry x, broadcast positions, scanned cache."""
    spec: LayerSpec
    dropout: float
    deterministic: bool

    @nn.compact
    def __call__(self, x_BxTxD, positions_BxT, cache_layer):
        drop = nn.Dropout(self.dropout, deterministic=self.deterministic)
        return layer(self, self.spec, "", drop, x_BxTxD, positions_BxT, cache_layer)


class Transformer(nn.Module):
    """tokens_BxT int32 -> logits_BxTxV float32 (and a new cache when given one)."""
    vocab_size: int = 256
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 0          # grouped-query attention: K key/value heads (0 = num_heads)
    embed_dim: int = 32
    mlp_ratio: int = 4
    mlp_dim: int = 0               # MLP hidden width; 0 = mlp_ratio * embed_dim
    max_len: int = 128             # context length (learned positions, cache slots)
    norm: str = "layernorm"        # layernorm | rmsnorm
    pos: str = "learned"           # learned | rotary
    activation: str = "gelu"       # gelu (tanh approx.) | gelu_exact (erf) | swiglu
    tie_embeddings: bool = True    # output head = token embedding^T | separate (embed, vocab)
    dropout: float = 0.0           # on embeddings and each residual branch (train=True)
    use_bias: bool = False         # biases in dense layers and LayerNorm
    norm_eps: float = 1e-6         # LayerNorm/RMSNorm epsilon (flax's default; GPT-2: 1e-5)
    dtype: Any = jnp.float32       # compute dtype (e.g. bfloat16); params stay float32
    attention_impl: str | None = None  # None (JAX picks) | xla | cudnn | chunked
    attention_chunk: int = 512     # query block of attention_impl="chunked"
    remat: str = "none"            # genjax.models.remat.CHOICES, per layer
    scan_layers: bool = False      # layers under nn.scan: params [L, ...], one compiled body

    def __post_init__(self):
        for attr, low in (("vocab_size", 1), ("num_layers", 1), ("num_heads", 1),
                          ("embed_dim", 1), ("max_len", 1), ("mlp_dim", 0), ("mlp_ratio", 0)):
            if getattr(self, attr) < low:
                raise ConfigError(f"Transformer.{attr}={getattr(self, attr)}: must be >= {low}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"Transformer.dropout={self.dropout}: must be in [0, 1)")
        for attr, allowed in CHOICES.items():
            if getattr(self, attr) not in allowed:
                raise ConfigError(f"Transformer.{attr}={getattr(self, attr)!r}: choose one of "
                                 f"{list(allowed)}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"Transformer.embed_dim={self.embed_dim} is not divisible by "
                             f"num_heads={self.num_heads}")
        if self.pos == "rotary" and (self.embed_dim // self.num_heads) % 2:
            raise ConfigError(f"Transformer.pos='rotary' needs an even head dim, got "
                             f"{self.embed_dim // self.num_heads}")
        if self.attention_chunk <= 0:
            raise ConfigError(f"Transformer.attention_chunk={self.attention_chunk}: must be > 0")
        if self.num_kv_heads < 0 or self.num_heads % (self.num_kv_heads or self.num_heads):
            raise ConfigError(f"Transformer.num_kv_heads={self.num_kv_heads} must divide "
                             f"num_heads={self.num_heads} (0 = num_heads)")
        super().__post_init__()

    def spec(self) -> LayerSpec:
        return LayerSpec(self.num_heads, self.mlp_dim or self.mlp_ratio * self.embed_dim,
                         self.pos, self.norm, self.activation, self.use_bias, self.dtype,
                         self.attention_impl, self.attention_chunk,
                         _INIT_STD / (2 * self.num_layers) ** 0.5,  # GPT-2: scale residuals
                         self.norm_eps, self.num_kv_heads)

    def _layers(self, x_BxTxD, positions_BxT, cache, drop, deterministic):
        spec = self.spec()
        if self.scan_layers:
            body = remat.wrap(ScanBlock, self.remat, prevent_cse=False)
            stack = nn.scan(body, variable_axes={"params": 0}, in_axes=(nn.broadcast, 0),
                            split_rngs={"params": True, "dropout": True},
                            length=self.num_layers,
                            metadata_params={nn.PARTITION_NAME: SCAN_NAME})
            return stack(spec, self.dropout, deterministic, name=SCAN_NAME)(
                x_BxTxD, positions_BxT, cache)
        # Unscanned: a Python loop; `drop` is shared so masks match the pre-remat code.
        step = remat.wrap(lambda mdl, sfx, x, pos, c: layer(mdl, spec, sfx, drop, x, pos, c),
                          self.remat, static_argnums=(1,))
        new_cache = []
        for i in range(self.num_layers):
            x_BxTxD, layer_cache = step(self, f"_{i}", x_BxTxD, positions_BxT,
                                        None if cache is None else cache[i])
            new_cache.append(layer_cache)
        return x_BxTxD, tuple(new_cache)

    @nn.compact
    def __call__(self, tokens_BxT, *, train=False, positions_BxT=None, cache: Cache | None = None,
                 return_hidden: bool = False):
        """Without cache: logits_BxTxV. With cache: (logits_BxTxV, new cache).

        positions_BxT defaults to 0..T-1 in every row; with a cache, pass the slots.
        return_hidden (no cache): (final normed hidden x_BxTxD, output head_DxV) instead
        of the logits, for a loss that computes them in chunks (genjax.models.chunked_logits).
        """
        B, T = tokens_BxT.shape
        if positions_BxT is None:
            positions_BxT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
        deterministic = not train or self.dropout == 0.0
        drop = nn.Dropout(self.dropout, deterministic=deterministic)

        embed_VxD = self.param("token_embed", _init(("vocab", "embed")),
                               (self.vocab_size, self.embed_dim), jnp.float32)
        x_BxTxD = jnp.take(embed_VxD, tokens_BxT, axis=0).astype(self.dtype)
        if self.pos == "learned":
            pos_LxD = self.param("pos_embed", _init((None, "embed")),
                                 (self.max_len, self.embed_dim), jnp.float32)
            x_BxTxD = x_BxTxD + jnp.take(pos_LxD, positions_BxT, axis=0).astype(self.dtype)
        x_BxTxD = constrain(drop(x_BxTxD), ("batch", "length", "embed"))

        x_BxTxD, new_cache = self._layers(x_BxTxD, positions_BxT, cache, drop, deterministic)
        x_BxTxD = _norm(self.spec(), "ln_final")(x_BxTxD)

        if self.tie_embeddings:
            head_DxV = embed_VxD.T
        else:
            head_DxV = self.param("lm_head", _init(("embed", "vocab")),
                                  (self.embed_dim, self.vocab_size), jnp.float32)
        if return_hidden:
            return x_BxTxD, head_DxV
        logits_BxTxV = jnp.einsum("btd,dv->btv", x_BxTxD, head_DxV.astype(self.dtype),
                                  preferred_element_type=jnp.float32)
        logits_BxTxV = constrain(logits_BxTxV, ("batch", "length", "vocab"))
        return logits_BxTxV if cache is None else (logits_BxTxV, new_cache)


def init_cache(model: Transformer, batch_size: int, max_len: int | None = None,
               dtype: Any = None) -> Cache:
    """Zero KV cache of [batch_size, S, N, H] per layer, S = max_len or the model's.

    Unscanned: a tuple of per-layer {"k", "v"}; scan_layers: one {"k", "v"} stacked [L, ...].
    """
    S = model.max_len if max_len is None else max_len
    shape = (batch_size, S, model.num_kv_heads or model.num_heads,
             model.embed_dim // model.num_heads)
    dtype = model.dtype if dtype is None else dtype
    if model.scan_layers:
        shape = (model.num_layers, *shape)
        return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
    return tuple({"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
                 for _ in range(model.num_layers))
