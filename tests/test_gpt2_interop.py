"""Specification of genjax.interop (Hugging Face GPT-2 in and out), against a fixture.

tests/fixtures/gpt2_tiny/ holds a random `transformers` GPT2LMHeadModel (2 layers, 4
heads, width 64, vocab 97, every tensor perturbed) and the logits/loss HF computed for it,
made by tests/fixtures/make_gpt2_fixture.py; no torch is needed here. The live test at the
end compares against `transformers` directly where torch is installed.
"""
import dataclasses
import json
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from genjax import inference
from genjax.errors import UserError
from genjax.interop import gpt2, gpt2_workdir, hf_folder
from genjax.sampling import lm as lm_sampling
from tests import subproc
from tests.families import one_error_line

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "gpt2_tiny")


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(os.path.join(FIXTURE, "reference.npz")))


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The fixture imported through the importer and loaded back like genjax.sample does."""
    workdir = str(tmp_path_factory.mktemp("gpt2") / "w")
    gpt2_workdir.import_gpt2(FIXTURE, workdir)
    return workdir, inference.load(workdir, which="raw")


def fixture_tensors():
    return load_file(os.path.join(FIXTURE, "model.safetensors"))


# ------------------------------------------------------------------------- parity
def test_imported_logits_match_transformers_within_1e4(imported, reference):
    _, loaded = imported
    assert loaded.step == 0 and loaded.model.norm_eps == 1e-5 and loaded.model.use_bias
    logits = np.asarray(jax.jit(loaded.model.apply)({"params": loaded.params},
                                                    jnp.asarray(reference["tokens"])))
    assert logits.dtype == np.float32 and logits.shape == reference["logits"].shape == (2, 32, 97)
    assert reference["logits"].std() > 0.5, "flat reference logits would prove little"
    np.testing.assert_allclose(logits, reference["logits"], atol=1e-4, rtol=0)


def test_imported_loss_equals_transformers_loss(imported, reference):
    """HF's loss with labels = tokens is the mean NLL of tokens[1:]; genjax's eval_fn sums
    the same NLL over tokens[:, 1:] from inputs tokens[:, :-1]."""
    _, loaded = imported
    sums = loaded.family.eval_fn(loaded.params, loaded.model_state,
                                 {"tokens": jnp.asarray(reference["tokens"])},
                                 model=loaded.model, config=loaded.config)
    loss = float(sums["loss"]) / float(sums["count"])
    assert float(sums["count"]) == 2 * 31
    assert loss == pytest.approx(float(reference["loss"]), abs=1e-5)


def test_import_then_export_gives_back_every_tensor_bit_for_bit(imported, tmp_path):
    workdir, _ = imported
    written = gpt2_workdir.export_gpt2(workdir, str(tmp_path / "out"))
    assert sorted(os.path.basename(p) for p in written) == [
        "config.json", "model.safetensors", "tokenizer.json"]
    source, back = fixture_tensors(), load_file(str(tmp_path / "out" / "model.safetensors"))
    assert sorted(back) == sorted(source)
    for key in source:
        assert back[key].dtype == source[key].dtype, key
        np.testing.assert_array_equal(back[key], source[key], err_msg=key)
    source_config = json.loads(pathlib.Path(FIXTURE, "config.json").read_text())
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == source_config
    tok = hf_folder.read_tokenizer(str(tmp_path / "out"))
    assert tok.to_json() == hf_folder.read_tokenizer(FIXTURE).to_json()


def test_greedy_kv_cache_decode_equals_teacher_forced_argmax(imported, reference):
    _, loaded = imported
    prompt = reference["tokens"][:, :5]
    new = np.asarray(lm_sampling.generate(
        loaded.model, loaded.params, jnp.asarray(prompt), jnp.asarray([5, 5], jnp.int32),
        rng=jax.random.PRNGKey(0), max_new_tokens=27, temperature=0.0))
    sequence = np.concatenate([prompt, new], axis=1)  # [2, 32]: the whole context
    logits = np.asarray(jax.jit(loaded.model.apply)({"params": loaded.params},
                                                    jnp.asarray(sequence)))
    np.testing.assert_array_equal(new, logits[:, 4:-1].argmax(-1))
    assert len(np.unique(new)) > 3, "a constant decode proves little"


def test_prefix_mask_buffers_and_tied_head_are_optional():
    """OpenAI's upload: no `transformer.` prefix, attn.bias/masked_bias buffers, no
    lm_head.weight -> the same params as the state_dict form."""
    tensors = fixture_tensors()
    model = gpt2.model_config(hf_folder.read_config(FIXTURE))
    bare = {k.removeprefix("transformer."): v for k, v in tensors.items() if k != "lm_head.weight"}
    for i in range(2):
        bare[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), np.float32))
        bare[f"h.{i}.attn.masked_bias"] = np.float32(-1e4)
    a, b = gpt2.from_hf(tensors, model), gpt2.from_hf(bare, model)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_untied_head_maps_to_lm_head_and_back():
    tensors = fixture_tensors()
    model = dict(gpt2.model_config(hf_folder.read_config(FIXTURE)), tie_embeddings=False)
    tensors["lm_head.weight"] = np.random.default_rng(0).standard_normal(
        (97, 64)).astype(np.float32)
    params = gpt2.from_hf(tensors, model)
    np.testing.assert_array_equal(params["lm_head"], tensors["lm_head.weight"].T)
    np.testing.assert_array_equal(gpt2.to_hf(params, model)["lm_head.weight"],
                                  tensors["lm_head.weight"])


def test_vocab_and_merges_files_give_the_same_tokenizer(tmp_path):
    """GPT-2's older layout: vocab.json + merges.txt instead of tokenizer.json."""
    doc = json.loads(pathlib.Path(FIXTURE, "tokenizer.json").read_text())
    (tmp_path / "vocab.json").write_text(json.dumps(doc["model"]["vocab"]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in doc["model"]["merges"]]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    text = "Hello, world. The cat sat on the mat; to be or not."
    a, b = hf_folder.read_tokenizer(FIXTURE), hf_folder.read_tokenizer(str(tmp_path))
    assert a.vocab_size == b.vocab_size == 97
    np.testing.assert_array_equal(a.encode(text), b.encode(text))
    assert len(a.encode(text)) < len(text) and b.decode(b.encode(text)) == text


def test_gpt2_preset_is_the_shape_import_gives_openai_gpt2():
    """configs/lm_shakespeare.py:gpt2 == what OpenAI's GPT-2 small config.json imports to,
    and that model has GPT-2 small's 124,439,808 parameters (tied head)."""
    from configs import lm_shakespeare
    from genjax.families import lm
    from genjax.models import transformer
    openai = {"model_type": "gpt2", "n_layer": 12, "n_head": 12, "n_embd": 768,
              "n_positions": 1024, "n_ctx": 1024, "vocab_size": 50257,
              "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}
    preset = lm.model_kwargs(lm_shakespeare.get_config("gpt2"))
    imported = gpt2.model_config(openai)
    assert {k: preset[k] for k in imported if k in preset} == {
        k: v for k, v in imported.items() if k in preset}
    shapes = jax.eval_shape(lambda: transformer.Transformer(**preset).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32)))
    assert sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes)) == 124_439_808


def test_sample_cli_on_imported_weights(imported):
    workdir, _ = imported
    proc = subproc.run_module("genjax.sample", f"--workdir={workdir}", "--prompt=Hello, cat",
                              "--num_samples=1", "--max_new_tokens=8", "--temperature=0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "----- sample 1/1 (step 0) -----" in proc.stdout
    assert "Hello, cat" in proc.stdout.split("-----\n", 1)[1]


def test_gelu_choices_and_norm_eps_are_the_formulas():
    """The options GPT-2 needs, against closed forms: "gelu" = tanh approximation
    (gelu_new), "gelu_exact" = x Phi(x); norm_eps enters LayerNorm as 1/sqrt(var + eps)
    (inputs of variance ~1e-6, where 1e-5 vs 1e-6 matters)."""
    import math

    from flax import linen as nn

    from genjax.models import transformer
    x = np.linspace(-3, 3, 8, dtype=np.float32)
    eye = {"up": {"kernel": np.eye(8, dtype=np.float32)},
           "down": {"kernel": np.eye(8, dtype=np.float32)}}
    forms = {"gelu": 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
             "gelu_exact": np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])}
    for act, want in forms.items():
        mlp = transformer.Mlp(8, act, use_bias=False, dtype=jnp.float32, out_std=0.02)
        np.testing.assert_allclose(mlp.apply({"params": eye}, x[None, None])[0, 0], want,
                                   atol=1e-6, err_msg=act)
    assert np.abs(forms["gelu"] - forms["gelu_exact"]).max() > 1e-4

    V, D = 5, 8
    model = transformer.Transformer(vocab_size=V, num_layers=1, num_heads=2, embed_dim=D,
                                    max_len=4, use_bias=True, norm_eps=1e-5)
    params = jax.tree_util.tree_map(np.zeros_like, nn.meta.unbox(model.init(
        jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32)))["params"])  # blocks add 0
    rng = np.random.default_rng(0)
    params["token_embed"] = (1e-3 * rng.standard_normal((V, D))).astype(np.float32)
    params["ln_final"] = {"scale": np.ones(D, np.float32), "bias": np.zeros(D, np.float32)}
    tokens = np.array([[0, 1, 2, 3]])
    h = params["token_embed"][tokens[0]].astype(np.float64)
    for eps in (1e-5, 1e-6):
        normed = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + eps)
        got = model.clone(norm_eps=eps).apply({"params": params}, tokens)[0]
        np.testing.assert_allclose(got, normed @ params["token_embed"].T, rtol=1e-4,
                                   atol=1e-7, err_msg=str(eps))


# ------------------------------------------------------------------------- bad input
def bad_folder(tmp_path, *, drop=(), config=None, tensors=None, files=None):
    """A copy of the fixture without the files in `drop`, with config.json updated by
    `config`, model.safetensors replaced by `tensors` (a function of the fixture's) and
    `files` ({name: text}) written over."""
    folder = tmp_path / "bad"
    shutil.copytree(FIXTURE, folder)
    for name in drop:
        os.remove(folder / name)
    for name, text in (files or {}).items():
        (folder / name).write_text(text)
    if config:
        path = folder / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    if tensors:
        save_file(tensors(fixture_tensors()), str(folder / "model.safetensors"))
    return str(folder)


def without(key):
    return lambda t: {k: v for k, v in t.items() if k != key}


def replaced(key, value):
    return lambda t: {**t, key: value}


BAD = {
    "no config": (dict(drop=["config.json"]), "config.json: missing"),
    "config not JSON": (dict(files={"config.json": "{model_type: gpt2"}),
                        "config.json: not readable JSON"),
    "no weights": (dict(drop=["model.safetensors"]), "model.safetensors: missing"),
    "weights not safetensors": (dict(files={"model.safetensors": "not tensors"}),
                                "model.safetensors: not readable safetensors"),
    "no tokenizer": (dict(drop=["tokenizer.json"]), "no tokenizer"),
    "tokenizer not readable": (dict(files={"tokenizer.json": "{}"}),
                               "tokenizer files not readable"),
    "no n_head": (dict(config={"n_head": None}), "['n_head'] must be integers >= 1"),
    "n_head 0": (dict(config={"n_head": 0}), "['n_head'] must be integers >= 1"),  # was / 0
    "epsilon not a number": (dict(config={"layer_norm_epsilon": "abc"}),
                             "layer_norm_epsilon='abc' must be a number > 0"),
    "n_inner not a multiple of n_embd": (dict(config={"n_inner": 100}), "n_inner=100"),
    "another architecture": (dict(config={"model_type": "llama"}), "model_type='llama'"),
    "relu": (dict(config={"activation_function": "relu"}), "activation_function='relu'"),
    "layer-scaled attention": (dict(config={"scale_attn_by_inverse_layer_idx": True}),
                               "scale_attn_by_inverse_layer_idx"),
    "missing key": (dict(tensors=without("transformer.h.1.mlp.c_fc.bias")),
                    "missing keys: h.1.mlp.c_fc.bias"),
    "extra key": (dict(tensors=replaced("transformer.h.2.ln_1.weight",
                                        np.ones(64, np.float32))),
                  "unexpected keys: h.2.ln_1.weight"),
    "wrong shape": (dict(tensors=replaced("transformer.wpe.weight",
                                          np.zeros((16, 64), np.float32))),
                    "wrong shapes: wpe.weight [16, 64] (expected [32, 64])"),
    "prefixed and bare key": (dict(tensors=replaced("wte.weight",
                                                    np.zeros((97, 64), np.float32))),
                              "'wte.weight' appears with and without"),
    "head of the wrong shape": (dict(tensors=replaced("lm_head.weight",
                                                      np.zeros((96, 64), np.float32))),
                                "wrong shapes: lm_head.weight [96, 64] (expected [97, 64])"),
    "untied head in a tied config": (dict(tensors=replaced(
        "lm_head.weight", np.zeros((97, 64), np.float32))), "lm_head.weight differs"),
    "tokenizer larger than the vocab": (dict(config={"vocab_size": 50}),
                                        "more than the model's vocab_size=50"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_folder_is_one_error_naming_it_and_writes_nothing(case, tmp_path):
    kwargs, needle = BAD[case]
    folder, workdir = bad_folder(tmp_path, **kwargs), tmp_path / "w"
    with pytest.raises(UserError) as e:
        gpt2_workdir.import_gpt2(folder, str(workdir))
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert not workdir.exists()


def test_cli_bad_folder_is_one_error_line_and_no_workdir(tmp_path):
    folder, workdir = bad_folder(tmp_path, config={"model_type": "bert"}), tmp_path / "w"
    proc = subproc.run_module("genjax.interop", "import-gpt2", f"--from={folder}",
                              f"--workdir={workdir}")
    subproc.assert_one_line_error(proc, "model_type='bert'", "not 'gpt2'")
    assert not workdir.exists()


def test_cli_takes_a_base_config_and_refuses_a_file_as_workdir_or_out(tmp_path):
    proc = subproc.run_module("genjax.interop", "import-gpt2", f"--from={FIXTURE}",
                              f"--workdir={tmp_path / 'w'}",
                              "--config=configs/lm_shakespeare.py:gpt2")  # was: "no .lock"
    assert proc.returncode == 0 and "imported GPT-2" in proc.stdout, proc.stderr[-2000:]
    (tmp_path / "file").write_text("keep")
    proc = subproc.run_module("genjax.interop", "import-gpt2", f"--from={FIXTURE}",
                              f"--workdir={tmp_path / 'file'}")
    subproc.assert_one_line_error(proc, "--workdir=", "is a file; choose a new folder")
    with pytest.raises(UserError, match="is a file; choose a new folder"):
        gpt2_workdir.export_gpt2(str(tmp_path / "w"), str(tmp_path / "file"))
    assert (tmp_path / "file").read_text() == "keep"


def test_cli_missing_flag_is_one_error_line(tmp_path):
    proc = subproc.run_module("genjax.interop", "import-gpt2", f"--workdir={tmp_path / 'w'}")
    subproc.assert_one_line_error(proc, "--from required")
    proc = subproc.run_module("genjax.interop", "import-gpt2", f"--from={FIXTURE}",
                              f"--workdir={tmp_path / 'w'}", f"--out={tmp_path / 'o'}")
    subproc.assert_one_line_error(proc, "import-gpt2 does not take --out")  # was: ignored
    assert not (tmp_path / "w").exists()


def test_unknown_command_is_a_user_error():
    from genjax.interop import __main__ as cli
    with pytest.raises(UserError, match="usage: python -m genjax.interop"):
        cli.main(["genjax.interop", "import-llama"])


def test_import_into_a_folder_that_is_not_empty_fails_and_leaves_it(imported, tmp_path):
    """A run's workdir, or any folder of the user's: import writes only into a new one."""
    workdir, _ = imported
    before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    with pytest.raises(UserError, match="--workdir=.* exists and is not empty"):
        gpt2_workdir.import_gpt2(FIXTURE, workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="--workdir=.* exists and is not empty"):
        gpt2_workdir.import_gpt2(FIXTURE, str(tmp_path / "mine"))
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]


def test_export_refuses_a_non_empty_out_and_non_gpt2_options(imported, tmp_path):
    workdir, _ = imported
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        gpt2_workdir.export_gpt2(workdir, str(tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == ["keep.txt"]
    model = dict(gpt2.model_config(hf_folder.read_config(FIXTURE)), use_bias=False,
                 pos="rotary", activation="swiglu")
    with pytest.raises(UserError, match="model.pos='rotary'.*model.use_bias=False.*swiglu"):
        gpt2.hf_config(model)
    gqa = dict(gpt2.model_config(hf_folder.read_config(FIXTURE)), num_kv_heads=1)
    with pytest.raises(UserError, match="model.num_kv_heads=1 .GPT-2: one key/value head"):
        gpt2.hf_config(gqa)


def test_export_writes_mlp_dim_as_n_inner():
    """model.mlp_dim overrides mlp_ratio * embed_dim: GPT-2 calls it n_inner (HF reads
    None as 4 * n_embd, so a 3 x D MLP must say so)."""
    model = gpt2.model_config(hf_folder.read_config(FIXTURE))
    D = model["embed_dim"]
    wide = dict(model, mlp_dim=3 * D)
    assert gpt2.hf_config(wide)["n_inner"] == 3 * D
    assert gpt2.hf_config(dict(model, mlp_ratio=4))["n_inner"] is None
    assert gpt2.expected_shapes(wide)["h.0.mlp.c_fc.weight"] == (D, 3 * D)


def test_a_run_with_scanned_layers_exports_the_same_tensors(imported, tmp_path, monkeypatch):
    """scan_layers stores the layers stacked ([L, ...] under one name): the export unstacks
    them, giving the unscanned run's tensors bit for bit."""
    from genjax.models import scan_convert
    workdir, _ = imported
    real_load = inference.load

    def scanned_load(*args, **kwargs):
        loaded = real_load(*args, **kwargs)
        return dataclasses.replace(loaded, params=scan_convert.stack(loaded.params))
    monkeypatch.setattr(gpt2_workdir.inference, "load", scanned_load)
    gpt2_workdir.export_gpt2(workdir, str(tmp_path / "out"))
    source, back = fixture_tensors(), load_file(str(tmp_path / "out" / "model.safetensors"))
    assert sorted(back) == sorted(source)
    for key in source:
        np.testing.assert_array_equal(back[key], source[key], err_msg=key)


def test_aligned_and_distilled_lms_export_and_int8_weights_are_one_error_line(
        imported, tiny_run, tmp_path):
    """A DPO run is a transformer LM (here with options GPT-2 lacks, so the export stops at
    them, not at the family; distill and rl export the same model_kwargs); int8 weights
    are refused by name."""
    from genjax.quantize import quantize_workdir
    with pytest.raises(UserError, match="model.pos='rotary'|model.use_bias=False"):
        gpt2_workdir.export_gpt2(str(tiny_run("dpo")), str(tmp_path / "dpo"))
    workdir, _ = imported
    quantize_workdir(workdir, str(tmp_path / "int8"))
    with one_error_line(UserError, match="int8 weights .* do not export to GPT-2"):
        gpt2_workdir.export_gpt2(str(tmp_path / "int8"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------- live
@pytest.mark.transformers
def test_live_transformers_parity_and_strict_load(tmp_path):
    """Where torch + transformers are installed: a fresh default-width GPT-2 (n_inner =
    4 x n_embd) matches HF's logits, loss and gradient; the exported folder loads with a
    strict load_state_dict and from_pretrained gives the same logits; the committed
    fixture still reproduces its reference with this transformers."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tests.fixtures import make_gpt2_fixture as fx
    torch.manual_seed(1)
    config = transformers.GPT2Config(**{**fx.SHAPE, "n_inner": None}, bos_token_id=0,
                                     eos_token_id=0)
    hf_model = transformers.GPT2LMHeadModel(config).eval()
    fx.perturb(hf_model, seed=1)
    src = tmp_path / "src"
    config.save_pretrained(src)
    save_file({k: v.detach().numpy().copy() for k, v in hf_model.state_dict().items()},
              str(src / "model.safetensors"))
    shutil.copy(os.path.join(FIXTURE, "tokenizer.json"), src / "tokenizer.json")

    gpt2_workdir.import_gpt2(str(src), str(tmp_path / "w"))
    loaded = inference.load(str(tmp_path / "w"), which="raw")
    tokens = np.random.default_rng(1).integers(0, 97, (2, 32)).astype(np.int32)
    ids = torch.from_numpy(tokens.astype(np.int64))
    out = hf_model(ids, labels=ids)
    out.loss.backward()
    np.testing.assert_allclose(np.asarray(loaded.model.apply({"params": loaded.params}, tokens)),
                               out.logits.detach().numpy(), atol=1e-4, rtol=0)

    def loss_fn(params):
        sums = loaded.family.eval_fn(params, {}, {"tokens": jnp.asarray(tokens)},
                                     model=loaded.model, config=loaded.config)
        return sums["loss"] / sums["count"]
    loss, grads = jax.value_and_grad(loss_fn)(loaded.params)
    assert float(loss) == pytest.approx(out.loss.item(), abs=1e-5)
    hf_grads = {k: p.grad.numpy() for k, p in hf_model.named_parameters()}
    model_cfg = gpt2.model_config(config.to_dict())
    ours = gpt2.to_hf(jax.device_get(grads), model_cfg)  # the same map carries gradients
    for key, g in hf_grads.items():
        np.testing.assert_allclose(ours[key], g, atol=1e-5, rtol=1e-3, err_msg=key)

    gpt2_workdir.export_gpt2(str(tmp_path / "w"), str(tmp_path / "out"))
    fresh = transformers.GPT2LMHeadModel(config).eval()
    exported = load_file(str(tmp_path / "out" / "model.safetensors"))
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)
    again = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "out")).eval()
    with torch.no_grad():
        for m in (fresh, again):
            np.testing.assert_array_equal(m(ids).logits.numpy(), out.logits.detach().numpy())

    reference = np.load(os.path.join(FIXTURE, "reference.npz"))
    committed = transformers.GPT2LMHeadModel.from_pretrained(FIXTURE).eval()
    with torch.no_grad():
        ref_ids = torch.from_numpy(reference["tokens"].astype(np.int64))
        np.testing.assert_allclose(committed(ref_ids).logits.numpy(), reference["logits"],
                                   atol=1e-5, rtol=0)
