"""The family contract (genjax/families/__init__.py) and the package's structure.

A family defined only under tests/ (tests/toy_family/gmm.py, a 2-D Gaussian mixture
named by module path) trains, resumes bit for bit, samples and is evaluated through the
command lines with no edit to genjax/. genjax/ names no family outside genjax/families/,
has no import circle, and keeps functions and modules small.
"""
import ast
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest

from genjax import families
from genjax.errors import ConfigError
from tests import subproc
from tests.families import FAMILIES

ROOT = subproc.ROOT
PACKAGE = os.path.join(ROOT, "genjax")
TOY = ["--config=tests/toy_family/gmm_config.py", "--config.total_steps=300",
       "--config.ckpt_every_steps=50"]


# ------------------------------------------------------------------ the toy family, end to end
def _checksums(workdir):
    """Per-leaf checksums of the final state, as the checkpoint recorded and verified them."""
    from genjax.checkpoint import Checkpointer
    ckpt = Checkpointer(str(workdir), read_only=True)
    meta = ckpt.read_meta(ckpt.latest_step())
    return meta["checksums"], ckpt.latest_step()


@pytest.mark.slow
def test_a_family_outside_genjax_trains_resumes_samples_and_is_evaluated(tmp_path):
    from tests.toy_family import gmm
    ref, run = tmp_path / "ref", tmp_path / "run"
    proc = subproc.run_module("genjax.train", *TOY, f"--workdir={ref}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # killed (SIGKILL) after step 130, then the same command resumes from a checkpoint
    proc = subproc.run_module("genjax.train", *TOY, f"--workdir={run}",
                              env_extra={"GENJAX_FAULTS": "kill@130"})
    assert proc.returncode != 0
    proc = subproc.run_module("genjax.train", *TOY, f"--workdir={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"resumed from step (50|100)\n", proc.stdout), proc.stdout[:500]
    assert subproc.losses_by_step(ref) == subproc.losses_by_step(run)
    assert _checksums(ref) == _checksums(run)  # params, optimizer, RNG, data position

    # known answer: the fitted mixture's held-out NLL is the true mixture's (within 0.02 nats)
    data = gmm.MixtureData(256, 0, 2000)
    true_nll = -gmm.true_log_prob(data.validation_points()).mean()
    proc = subproc.run_module("genjax.evaluate", f"--workdir={ref}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipping evaluator text: the family has no sample_text" in proc.stdout
    assert "skipping evaluator image_quality: the family has no sample_images" in proc.stdout
    got = float(re.search(r"likelihood/validation/nll\s+([0-9.]+)", proc.stdout).group(1))
    assert abs(got - true_nll) < 0.02, (got, true_nll)

    out = tmp_path / "samples.npz"
    proc = subproc.run_module("genjax.sample", f"--workdir={ref}", "--num_samples=4000",
                              f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    x = np.load(out)["samples"]
    assert x.shape == (4000, 2)
    want = (gmm.TRUE_WEIGHTS[:, None] * gmm.TRUE_MEANS).sum(0)  # the mixture's mean
    np.testing.assert_allclose(x.mean(0), want, atol=0.15)
    subproc.assert_one_line_error(
        subproc.run_module("genjax.sample", f"--workdir={ref}", "--guidance=3"),
        "--guidance", "does not take it")


# ------------------------------------------------------------------ the contract check
def _module(name, **exports):
    module = types.ModuleType(name)
    module.__dict__.update(exports)
    sys.modules[name] = module
    return module


def _complete(**changes):
    lm = families.get("lm")
    exports = {n: getattr(lm, n) for n in families.REQUIRED}
    exports.update(changes)
    return {k: v for k, v in exports.items() if v is not None}


def test_the_contract_names_what_is_missing_or_mistyped():
    _module("toyfam.missing", **_complete(loss_fn=None, eval_fn=None))
    with pytest.raises(ConfigError, match="missing loss_fn; missing eval_fn"):
        families.get("toyfam.missing")
    _module("toyfam.bad_sig", **_complete(loss_fn=lambda params, batch: 0))
    with pytest.raises(ConfigError, match=r"loss_fn\(params, batch\) cannot be called"):
        families.get("toyfam.bad_sig")
    _module("toyfam.bad_cap", **_complete(runtime_keys="model.dropout", sample_images=3))
    with pytest.raises(ConfigError, match="sample_images must be callable.*"
                                          "runtime_keys must be a tuple of str"):
        families.get("toyfam.bad_cap")
    with pytest.raises(ConfigError, match="no module genjax.families.nope"):
        families.get("nope")
    assert families.get("toyfam.ok" if _module("toyfam.ok", **_complete()) else "")


def test_every_registered_family_passes_the_contract_and_the_tests_cover_it():
    assert families.registered() == sorted(FAMILIES)
    for name in FAMILIES:
        assert families.contract_problems(families.get(name)) == []


# ------------------------------------------------------------------ structure of genjax/
def _sources():
    for folder, _, files in os.walk(PACKAGE):
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                with open(path, encoding="utf-8") as f:
                    yield os.path.relpath(path, ROOT), f.read()


def _docstrings(tree):
    kinds = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, kinds) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


# Strings equal to a family name that are not one: (file, string) -> why.
NOT_A_FAMILY = {("genjax/sampling/postprocess.py", "classifier"): "a text filter hook's name",
                ("genjax/data/sample_image_preferences.py", "reward"): "a data card field",
                ("genjax/data/sampled_image_pairs.py", "reward"): "a data card field"}


def test_genjax_names_no_family_outside_families():
    names = set(families.registered())
    hits = []
    for path, src in _sources():
        if path.startswith(os.path.join("genjax", "families")):
            continue
        tree = ast.parse(src)
        docs = _docstrings(tree)
        hits += [f"{path}:{n.lineno} {n.value!r}" for n in ast.walk(tree)
                 if isinstance(n, ast.Constant) and n.value in names and id(n) not in docs
                 and (path, n.value) not in NOT_A_FAMILY]
    assert not hits, "family names outside genjax/families (ask a capability instead): " + \
        ", ".join(hits)


def _module_name(path):
    name = path[:-3].replace(os.sep, ".")
    return name[:-len(".__init__")] if name.endswith(".__init__") else name


def import_graph() -> dict[str, set[str]]:
    """module -> genjax modules it imports (anywhere in it, function-local imports too)."""
    sources = dict(_sources())
    modules = {_module_name(p): p for p in sources}

    def owner(name):  # the module a dotted name lives in
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(sources[path])):
            if isinstance(node, ast.Import):
                deps |= {owner(a.name) for a in node.names if a.name.startswith("genjax")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base.startswith("genjax"):
                    deps |= {owner(f"{base}.{a.name}") for a in node.names}
        graph[name] = deps - {name, ""}
    return graph


def cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_genjax_is_part_of_an_import_circle():
    assert cycles(import_graph()) == []


IMPORT_ALONE = r"""
import importlib, os, sys
import jax, flax.linen, optax, numpy, ml_collections, absl.flags  # third-party, pre-loaded
import grain, orbax.checkpoint, tensorflow_datasets, tokenizers  # (slow imports: once here)
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:  # a fresh interpreter as far as genjax is concerned
        try:
            importlib.import_module(name)
            os._exit(0)
        except BaseException as e:
            print(f"{name}: {type(e).__name__}: {e}", flush=True)
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append(name)
print("FAILED", failed)
sys.exit(1 if failed else 0)
"""


def test_each_module_imports_alone():
    names = sorted(import_graph())
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", IMPORT_ALONE, *names],
                          cwd=ROOT, env=subproc.env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_no_function_over_80_lines_and_no_module_over_400():
    long = []
    for path, src in _sources():
        if len(src.splitlines()) > 400:
            long.append(f"{path}: {len(src.splitlines())} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path}:{node.lineno} {node.name}() {n} lines")
    assert not long, long


def test_a_config_saved_before_newer_keys_existed_still_builds_the_same_model():
    """Checkpoints keep the config of their day: keys genjax added since then take their
    defaults (config_lib.from_saved + the families' model builders), so an old run still
    samples, evaluates and resumes (checked by hand on a checkpoint of 291b078)."""
    from genjax import config_lib
    from tests.families import tiny_config
    config = tiny_config("lm")
    old = config_lib.to_dict(config)
    for key in ("norm_eps", "mlp_dim", "attention_chunk", "loss_chunk", "remat", "scan_layers"):
        old["model"].pop(key)
    for key in ("lora",):
        old.pop(key)
    old["optim"].pop("freeze")
    lm = families.get("lm")
    then = config_lib.from_saved(old)
    assert lm.make_model(then) == lm.make_model(config)
