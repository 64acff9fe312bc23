"""Hugging Face GPT-2 <-> genjax Transformer: the config and the weights (pure numpy).

HF GPT-2 (`GPT2LMHeadModel`) keys, D embed, N heads, H = D / N, F = n_inner or 4D,
V vocab, P n_positions; "Conv1D" weights are stored [in, out], like flax kernels:

  wte.weight [V, D]                  -> token_embed [V, D]
  wpe.weight [P, D]                  -> pos_embed [P, D]          (max_len = P)
  h.i.ln_1.{weight, bias} [D]        -> ln_attn_i.{scale, bias}
  h.i.attn.c_attn.weight [D, 3D]     -> attn_i.{query,key,value}.kernel [D, N, H] (q|k|v)
  h.i.attn.c_attn.bias [3D]          -> attn_i.{query,key,value}.bias [N, H]
  h.i.attn.c_proj.{weight [D, D], bias [D]} -> attn_i.out.{kernel [N, H, D], bias [D]}
  h.i.ln_2.{weight, bias} [D]        -> ln_mlp_i.{scale, bias}
  h.i.mlp.c_fc.{weight [D, F], bias [F]}    -> mlp_i.up.{kernel, bias}
  h.i.mlp.c_proj.{weight [F, D], bias [D]}  -> mlp_i.down.{kernel, bias}
  ln_f.{weight, bias} [D]            -> ln_final.{scale, bias}
  lm_head.weight [V, D]              -> tied: must equal wte (or be absent); else lm_head [D, V]

Keys may carry the `transformer.` prefix (as `GPT2LMHeadModel.state_dict()` does) or not
(OpenAI's original upload). The causal-mask buffers `attn.bias` / `attn.masked_bias` are
ignored. Export writes the `GPT2LMHeadModel.state_dict()` form (prefixed, with
`lm_head.weight`), which `load_state_dict(strict=True)` accepts.

Bad input raises `UserError` naming what is wrong (missing/extra keys, shapes, config).
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from genjax.errors import UserError

PREFIX = "transformer."
MASK_BUFFERS = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")  # causal-mask buffers
# HF activation_function -> genjax model.activation (GPT-2 ships "gelu_new").
ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu": "gelu_exact"}
EXPORT_ACTIVATION = {"gelu": "gelu_new", "gelu_exact": "gelu"}
# Options GPT-2 checkpoints may set that change the function computed; genjax has the default.
UNSUPPORTED = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
               "add_cross_attention": False}


# ------------------------------------------------------------------------ config
def model_config(hf: dict) -> dict[str, Any]:
    """HF GPT-2 config.json (dict) -> genjax `config.model` keys; UserError if not GPT-2."""
    if hf.get("model_type") != "gpt2":
        raise UserError(f"config.json: model_type={hf.get('model_type')!r}, not 'gpt2' "
                        f"(only GPT-2 checkpoints can be imported)")
    missing = [k for k in ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions")
               if not isinstance(hf.get(k), int) or hf[k] < 1]
    if missing:
        raise UserError(f"config.json: {missing} must be integers >= 1")
    eps = hf.get("layer_norm_epsilon", 1e-5)
    if not isinstance(eps, (int, float)) or not 0 < eps < float("inf"):
        raise UserError(f"config.json: layer_norm_epsilon={eps!r} must be a number > 0")
    D, N = hf["n_embd"], hf["n_head"]
    F = hf.get("n_inner") or 4 * D
    if D % N or F % D:
        raise UserError(f"config.json: n_embd={D} must divide by n_head={N} and n_inner={F} "
                        f"by n_embd")
    act = hf.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise UserError(f"config.json: activation_function={act!r}; supported: "
                        f"{sorted(ACTIVATIONS)}")
    for key, want in UNSUPPORTED.items():
        if hf.get(key, want) != want:
            raise UserError(f"config.json: {key}={hf[key]!r} is not supported (genjax "
                            f"computes {key}={want})")
    return {"num_layers": hf["n_layer"], "num_heads": N, "embed_dim": D, "mlp_ratio": F // D,
            "max_len": hf["n_positions"], "vocab_size": hf["vocab_size"], "vocab_multiple": 1,
            "norm": "layernorm", "pos": "learned", "activation": ACTIVATIONS[act],
            "use_bias": True, "norm_eps": float(hf.get("layer_norm_epsilon", 1e-5)),
            "tie_embeddings": bool(hf.get("tie_word_embeddings", True))}


def hf_config(model: dict, base: dict | None = None) -> dict[str, Any]:
    """genjax `config.model` keys (resolved: no 0 shape keys) -> HF GPT-2 config.json.

    `base`: the imported config.json, whose other keys (token ids, dropout...) are kept."""
    check_exportable(model)
    out = dict(base or {"architectures": ["GPT2LMHeadModel"]})
    if base is None and model["vocab_size"] == 50257:  # GPT-2's <|endoftext|>
        out.update(bos_token_id=50256, eos_token_id=50256)
    D = model["embed_dim"]
    out.update(model_type="gpt2", n_layer=model["num_layers"], n_head=model["num_heads"],
               n_embd=D, n_positions=model["max_len"], vocab_size=model["vocab_size"],
               n_inner=None if mlp_width(model) == 4 * D else mlp_width(model),
               activation_function=EXPORT_ACTIVATION[model["activation"]],
               layer_norm_epsilon=float(model["norm_eps"]),
               tie_word_embeddings=bool(model["tie_embeddings"]))
    if "n_ctx" in out:
        out["n_ctx"] = model["max_len"]
    return out


def mlp_width(model: dict) -> int:
    """F, the MLP's hidden width: model.mlp_dim, or mlp_ratio * embed_dim when it is 0."""
    return int(model.get("mlp_dim") or model["mlp_ratio"] * model["embed_dim"])


def check_exportable(model: dict) -> None:
    """UserError naming each genjax option GPT-2 cannot express."""
    want = {"norm": "layernorm", "pos": "learned", "use_bias": True}
    bad = [f"model.{k}={model.get(k)!r} (GPT-2: {v!r})" for k, v in want.items()
           if model.get(k) != v]
    if model.get("num_kv_heads") not in (None, 0, model.get("num_heads")):
        bad.append(f"model.num_kv_heads={model['num_kv_heads']!r} (GPT-2: one key/value "
                   f"head per query head, {model.get('num_heads')!r})")
    if model.get("activation") not in EXPORT_ACTIVATION:
        bad.append(f"model.activation={model.get('activation')!r} (GPT-2: 'gelu')")
    if bad:
        raise UserError("not a GPT-2-shaped model: " + ", ".join(bad))


# ------------------------------------------------------------------------ weights
def expected_shapes(model: dict) -> dict[str, tuple[int, ...]]:
    """Unprefixed HF key -> shape for a genjax model config (lm_head.weight excluded)."""
    V, P, D = model["vocab_size"], model["max_len"], model["embed_dim"]
    F = mlp_width(model)
    out = {"wte.weight": (V, D), "wpe.weight": (P, D), "ln_f.weight": (D,), "ln_f.bias": (D,)}
    for i in range(model["num_layers"]):
        h = f"h.{i}."
        out.update({h + "ln_1.weight": (D,), h + "ln_1.bias": (D,),
                    h + "attn.c_attn.weight": (D, 3 * D), h + "attn.c_attn.bias": (3 * D,),
                    h + "attn.c_proj.weight": (D, D), h + "attn.c_proj.bias": (D,),
                    h + "ln_2.weight": (D,), h + "ln_2.bias": (D,),
                    h + "mlp.c_fc.weight": (D, F), h + "mlp.c_fc.bias": (F,),
                    h + "mlp.c_proj.weight": (F, D), h + "mlp.c_proj.bias": (D,)})
    return out


def _unprefixed(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drops the `transformer.` prefix and the mask buffers; lm_head.weight stays."""
    out = {}
    for key, value in tensors.items():
        bare = key[len(PREFIX):] if key.startswith(PREFIX) else key
        if MASK_BUFFERS.match(bare):
            continue
        if bare in out:
            raise UserError(f"model.safetensors: {bare!r} appears with and without the "
                            f"'{PREFIX}' prefix")
        out[bare] = value
    return out


def _check_tensors(t: dict[str, np.ndarray], model: dict) -> None:
    """UserError listing missing/unexpected keys and wrong shapes (first 10 of each)."""
    want = expected_shapes(model)
    if not model["tie_embeddings"]:
        want["lm_head.weight"] = (model["vocab_size"], model["embed_dim"])
    missing = sorted(set(want) - set(t))
    extra = sorted(set(t) - set(want) - {"lm_head.weight"})
    shapes = [f"{k} {list(t[k].shape)} (expected {list(want[k])})" for k in sorted(want)
              if k in t and tuple(t[k].shape) != want[k]]
    if "lm_head.weight" in t and tuple(t["lm_head.weight"].shape) != want["wte.weight"]:
        shapes.append(f"lm_head.weight {list(t['lm_head.weight'].shape)} (expected "
                      f"{list(want['wte.weight'])})")
    problems = []
    for name, items in (("missing keys", missing), ("unexpected keys", extra),
                        ("wrong shapes", shapes)):
        if items:
            more = f" and {len(items) - 10} more" if len(items) > 10 else ""
            problems.append(f"{name}: {', '.join(items[:10])}{more}")
    if problems:
        raise UserError("model.safetensors does not fit config.json: " + "; ".join(problems))
    if model["tie_embeddings"] and "lm_head.weight" in t and not np.array_equal(
            t["lm_head.weight"], t["wte.weight"]):
        raise UserError("model.safetensors: lm_head.weight differs from wte.weight but "
                        "config.json ties them (tie_word_embeddings)")


def from_hf(tensors: dict[str, np.ndarray], model: dict) -> dict[str, Any]:
    """HF GPT-2 state dict (numpy) -> genjax Transformer params (float32 numpy pytree)."""
    t = _unprefixed(tensors)
    _check_tensors(t, model)
    f32 = lambda k: np.asarray(t[k], np.float32)  # noqa: E731
    D, N = model["embed_dim"], model["num_heads"]
    H = D // N
    params = {"token_embed": f32("wte.weight"), "pos_embed": f32("wpe.weight"),
              "ln_final": {"scale": f32("ln_f.weight"), "bias": f32("ln_f.bias")}}
    for i in range(model["num_layers"]):
        h = f"h.{i}."
        qkv_w = np.split(f32(h + "attn.c_attn.weight"), 3, axis=1)  # 3 x [D, D]
        qkv_b = np.split(f32(h + "attn.c_attn.bias"), 3)
        params[f"attn_{i}"] = {
            **{name: {"kernel": w.reshape(D, N, H), "bias": b.reshape(N, H)}
               for name, w, b in zip(("query", "key", "value"), qkv_w, qkv_b)},
            "out": {"kernel": f32(h + "attn.c_proj.weight").reshape(N, H, D),
                    "bias": f32(h + "attn.c_proj.bias")}}
        params[f"ln_attn_{i}"] = {"scale": f32(h + "ln_1.weight"), "bias": f32(h + "ln_1.bias")}
        params[f"ln_mlp_{i}"] = {"scale": f32(h + "ln_2.weight"), "bias": f32(h + "ln_2.bias")}
        params[f"mlp_{i}"] = {
            "up": {"kernel": f32(h + "mlp.c_fc.weight"), "bias": f32(h + "mlp.c_fc.bias")},
            "down": {"kernel": f32(h + "mlp.c_proj.weight"), "bias": f32(h + "mlp.c_proj.bias")}}
    if not model["tie_embeddings"]:
        params["lm_head"] = np.ascontiguousarray(f32("lm_head.weight").T)
    return params


def to_hf(params: dict[str, Any], model: dict) -> dict[str, np.ndarray]:
    """genjax Transformer params -> `GPT2LMHeadModel.state_dict()` form (float32 numpy)."""
    check_exportable(model)
    p = params
    a = lambda x: np.ascontiguousarray(np.asarray(x, np.float32))  # noqa: E731
    D = model["embed_dim"]
    out = {"wte.weight": a(p["token_embed"]), "wpe.weight": a(p["pos_embed"])}
    for i in range(model["num_layers"]):
        h, attn = f"h.{i}.", p[f"attn_{i}"]
        out[h + "ln_1.weight"] = a(p[f"ln_attn_{i}"]["scale"])
        out[h + "ln_1.bias"] = a(p[f"ln_attn_{i}"]["bias"])
        out[h + "attn.c_attn.weight"] = a(np.concatenate(
            [np.asarray(attn[n]["kernel"]).reshape(D, D) for n in ("query", "key", "value")],
            axis=1))
        out[h + "attn.c_attn.bias"] = a(np.concatenate(
            [np.asarray(attn[n]["bias"]).reshape(D) for n in ("query", "key", "value")]))
        out[h + "attn.c_proj.weight"] = a(np.asarray(attn["out"]["kernel"]).reshape(D, D))
        out[h + "attn.c_proj.bias"] = a(attn["out"]["bias"])
        out[h + "ln_2.weight"] = a(p[f"ln_mlp_{i}"]["scale"])
        out[h + "ln_2.bias"] = a(p[f"ln_mlp_{i}"]["bias"])
        mlp = p[f"mlp_{i}"]
        out[h + "mlp.c_fc.weight"] = a(mlp["up"]["kernel"])
        out[h + "mlp.c_fc.bias"] = a(mlp["up"]["bias"])
        out[h + "mlp.c_proj.weight"] = a(mlp["down"]["kernel"])
        out[h + "mlp.c_proj.bias"] = a(mlp["down"]["bias"])
    out["ln_f.weight"] = a(p["ln_final"]["scale"])
    out["ln_f.bias"] = a(p["ln_final"]["bias"])
    state = {PREFIX + k: v for k, v in out.items()}
    state["lm_head.weight"] = (out["wte.weight"].copy() if model["tie_embeddings"]
                               else a(np.asarray(p["lm_head"]).T))
    return state
