"""Sweeps: expanded from the config's get_sweep, run from one command, safe to re-run
(finished runs skipped, interrupted ones resumed), collected into mean +- std tables."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import collect
from genjax import sweep_lib
from tests import subproc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------- sweep_lib
def test_products_zips_seeds_and_names():
    lr = sweep_lib.sweep("optim.lr", [1e-3, 3e-3])
    norm = sweep_lib.sweep("model.norm", ["layernorm", "rmsnorm"])
    assert sweep_lib.product(lr, norm) == [
        {"optim.lr": 1e-3, "model.norm": "layernorm"}, {"optim.lr": 1e-3, "model.norm": "rmsnorm"},
        {"optim.lr": 3e-3, "model.norm": "layernorm"}, {"optim.lr": 3e-3, "model.norm": "rmsnorm"}]
    assert sweep_lib.zipit(lr, sweep_lib.sweep("optim.warmup_steps", [10, 20])) == [
        {"optim.lr": 1e-3, "optim.warmup_steps": 10}, {"optim.lr": 3e-3, "optim.warmup_steps": 20}]
    with pytest.raises(ValueError, match="lengths"):
        sweep_lib.zipit(lr, sweep_lib.seeds(3))
    assert sweep_lib.seeds(2, start=5) == [{"seed": 5}, {"seed": 6}]
    run = {"optim.lr": 0.001, "model.tie_embeddings": False, "seed": 1}
    assert sweep_lib.run_name(run) == "optim.lr=0.001,model.tie_embeddings=false"
    assert sweep_lib.override_flags(run) == [
        "--config.optim.lr=0.001", "--config.model.tie_embeddings=false", "--config.seed=1"]
    assert sweep_lib.run_name({}) == "base"
    # names that lose "/" or spaces keep a hash of the settings: four runs, four folders
    names = {sweep_lib.run_name({"sample.prompt": p}) for p in ("ROMEO: hi", "ROMEO:hi",
                                                                "a/b", "a_b")}
    assert len(names) == 4 and "sample.prompt=a_b" in names and "sample.prompt=ROMEO:hi" in names


def sweep_cmd(*args):
    return [sys.executable, "-m", "experiments.sweep", "--config=configs/lm_shakespeare.py:tiny",
            *args]


def run_quick(*args):
    env = subproc.env()
    return subproc.run(sweep_cmd(*args), env, timeout=120)


def test_dry_run_and_emitted_commands(tmp_path):
    proc = run_quick("--sweep=norm", "--seeds=2", f"--root={tmp_path}", "--dry_run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "4 runs" in proc.stdout and "4 new" in proc.stdout
    assert f"{tmp_path}/lm_shakespeare.tiny/model.norm=rmsnorm/seed=1" in proc.stdout
    assert os.listdir(tmp_path) == []  # a dry run writes nothing

    proc = run_quick("--sweep=lr", f"--root={tmp_path}", "--emit=commands",
                     "--config.total_steps=7")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4
    assert lines[0] == ("python -m genjax.train --config=configs/lm_shakespeare.py:tiny "
                        "--config.total_steps=7 --config.optim.lr=0.0003 --config.seed=0 "
                        f"--workdir={tmp_path}/lm_shakespeare.tiny/optim.lr=0.0003/seed=0")
    manifest = json.loads((tmp_path / "lm_shakespeare.tiny" / "lr.sweep.json").read_text())
    assert manifest["keys"] == ["optim.lr"] and manifest["common"] == {"total_steps": 7}
    # The same sweep under the same root with other common overrides would report the
    # old runs as its own: refused, the manifest kept.
    proc = run_quick("--sweep=lr", f"--root={tmp_path}", "--emit=commands",
                     "--config.total_steps=9")
    assert proc.returncode == 2 and "was planned with common {'total_steps': 7}" in proc.stderr
    assert json.loads((tmp_path / "lm_shakespeare.tiny" / "lr.sweep.json").read_text()) == \
        manifest


def test_rerunning_a_sweep_with_a_tuple_override_is_the_same_sweep(tmp_path):
    """The manifest holds a tuple override as a JSON list; the same command again (resume,
    --emit for an array job) must not read that as other overrides."""
    from experiments import sweep
    plan = {"dir": str(tmp_path), "sweep": "lr", "config": "configs/lm_shakespeare.py:tiny",
            "keys": ["optim.lr"], "common": {"optim.wd_exclude": ("pos_embed", "token")},
            "runs": []}
    path = sweep.write_manifest(plan)
    assert sweep.write_manifest(plan) == path
    assert json.loads(pathlib.Path(path).read_text())["common"] == \
        {"optim.wd_exclude": ["pos_embed", "token"]}


def test_seeds_without_a_sweep_run_the_config_itself(tmp_path):
    proc = run_quick("--seeds=3", f"--root={tmp_path}", "--emit=commands")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines() == [
        "python -m genjax.train --config=configs/lm_shakespeare.py:tiny --config.seed="
        f"{s} --workdir={tmp_path}/lm_shakespeare.tiny/base/seed={s}" for s in range(3)]


@pytest.mark.parametrize("args,needle", [
    (["--sweep=nope"], "unknown sweep 'nope'"),
    (["--sweep=lr", "--config.optim.lrr=1"], "lrr"),
    (["--parallel=0"], "--parallel=0: 0 is not a positive integer"),  # it would never run
])
def test_bad_sweeps_fail_in_one_line(tmp_path, args, needle):
    proc = run_quick(*args, f"--root={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and needle in proc.stderr


def _fake_run(workdir, losses, final):
    os.makedirs(workdir)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        for step, loss in enumerate(losses, 1):
            f.write(json.dumps({"step": step, "loss": loss}) + "\n")
    if final is not None:
        with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps({"step": 2, "eval/loss": final + 0.5}) + "\n")
        with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
            json.dump({"loss": final, "accuracy": 0.5}, f)


def test_collect_flags_are_absl_flags_and_bad_input_is_one_line(tmp_path, capsys):
    assert collect.main([str(tmp_path), "--metrics=loss", "--noplots"]) == 2  # no manifest
    assert collect.main([str(tmp_path), "--metrics"]) == 2
    assert collect.main([]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3 and all(e.startswith("error: ") for e in errors), errors
    assert "no *.sweep.json" in errors[0] and "metrics" in errors[1] and "ROOT" in errors[2]
    (tmp_path / "lm.tiny").mkdir()
    for content, needle in [('{"config": "c"', "not readable JSON"),   # truncated
                            ('{"config": "c"}', "not a sweep manifest (no sweep, keys")]:
        (tmp_path / "lm.tiny" / "lr.sweep.json").write_text(content)
        assert collect.main([str(tmp_path), "--noplots"]) == 2   # was: a traceback
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_collect_tables_from_run_directories(tmp_path, capsys):
    """mean +- std over seeds from final_metrics.json; unfinished runs don't count."""
    base = tmp_path / "lm.tiny"
    finals = {("0.001", 0): 2.0, ("0.001", 1): 2.2, ("0.01", 0): 1.5, ("0.01", 1): None}
    runs = []
    for (lr, seed), final in finals.items():
        wd = f"optim.lr={lr}/seed={seed}"
        _fake_run(base / wd, [3.0, 2.5], final if final else None)
        runs.append({"name": wd, "overrides": {"optim.lr": float(lr), "seed": seed},
                     "seed": seed, "workdir": wd})
    (base / "lr.sweep.json").write_text(json.dumps(
        {"config": "configs/lm.py:tiny", "sweep": "lr", "keys": ["optim.lr"], "common": {},
         "runs": runs}))
    assert collect.main([str(tmp_path), "--metrics=loss,accuracy"]) == 0
    out = capsys.readouterr().out
    std = np.std([2.0, 2.2], ddof=1)
    assert f"| 0.001 | 2.1000 ± {std:.4f} |" in out  # final loss of the two seeds
    assert "| 0.01 | **1.5000** |" in out and "| 1/2 |" in out  # one seed unfinished
    for ext in ("csv", "runs.csv", "md", "tex", "png"):
        assert (base / f"lr.{ext}").stat().st_size > 0
    tex = (base / "lr.tex").read_text()
    assert "\\toprule" in tex and "$\\pm$" in tex and "\\bottomrule" in tex


def test_collect_keeps_every_row_of_an_eval_step_and_knows_which_way_is_better(tmp_path):
    """At an eval step the loss row and an evaluator's row share the step: both count
    (the evaluator's replaced the loss row, so "best" saw only the final eval); a resumed
    run's repeat of a row replaces it."""
    rows = [{"step": 5, "loss": 3.0}, {"step": 5, "eval/loss": 2.5},
            {"step": 5, "eval/text/word_share": 0.6}, {"step": 10, "eval/loss": 2.9},
            {"step": 10, "eval/loss": 2.2}]  # step 10 logged again after a resume
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = collect.read_metrics(str(tmp_path))
    assert [r for r in got if "eval/loss" in r] == [rows[1], rows[4]]
    assert rows[2] in got and rows[0] in got
    for name in ("image_quality/recall", "image_quality/precision", "alignment/win_rate",
                 "reward_margin", "text/word_share", "accuracy", "elbo", "eval/recon"):
        assert collect.higher_is_better(name), name
    for name in ("loss", "image_quality/fid_fmnist", "text/memorised_share",
                 "novelty/near_copies", "bits_per_char", "eval/elbo_bpd", "nll_bpd"):
        assert not collect.higher_is_better(name), name


def test_best_is_the_best_periodic_eval_never_the_final_whole_split_one(tmp_path):
    """Periodic evals cover config.eval_batches, the final one the whole split: a subset's
    lucky 2.0 and a whole split's 1.9 are not the same measurement. The final value stands
    in only where a run had no periodic eval."""
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": 5, "eval/loss": 2.4}, {"step": 10, "eval/loss": 2.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "final_metrics.json").write_text(json.dumps({"loss": 1.9}))
    entry = {"name": "a", "overrides": {}, "seed": 0, "workdir": "run"}
    rec = collect.run_record(str(tmp_path), entry, ["loss"])
    assert rec["final loss"] == 1.9 and rec["best loss"] == 2.0
    (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "loss": 2.5}) + "\n")
    assert collect.run_record(str(tmp_path), entry, ["loss"])["best loss"] == 1.9


# ---------------------------------------------------------------------- end to end
def _small_text(path):
    rng = np.random.default_rng(0)
    words = "the king queen lord love death night day sword crown heart fair sweet".split()
    lines = [" ".join(rng.choice(words, 7)).capitalize() + "." for _ in range(600)]
    path.write_text("\n".join(lines) + "\n")


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


@pytest.mark.slow
def test_sweep_end_to_end_kill_rerun_collect(tmp_path, data_dir):
    """2 values x 2 seeds of the tiny LM: kill -9 the sweep mid-way, re-run, re-run, collect."""
    from genjax.data.text_builders import prepare
    text = tmp_path / "text.txt"
    _small_text(text)
    prepare(str(text), data_dir)  # once, before several processes want it
    root = tmp_path / "sweeps"
    args = ["--sweep=norm", "--seeds=2", f"--root={root}", "--config.total_steps=20",
            "--config.log_every_steps=1", "--config.ckpt_every_steps=5",
            "--config.eval_every_steps=10", "--config.data.name=text",
            f"--config.data.text_file={text}"]
    env = subproc.env(GENJAX_DATA_DIR=data_dir)
    base = root / "lm_shakespeare.tiny"
    first, second = base / "model.norm=layernorm/seed=0", base / "model.norm=layernorm/seed=1"

    # 1. kill -9 the sweep once its second run has started training (metrics.jsonl is
    # opened after the SIGTERM handler is installed): that child checkpoints and exits.
    proc = subprocess.Popen(sweep_cmd(*args, "--parallel=1"), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 240
    try:
        while not (second / "metrics.jsonl").exists() and proc.poll() is None:
            assert time.time() < deadline, "sweep did not reach its second run"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    assert (first / "final_metrics.json").exists()
    child = int((second / "sweep_run.pid").read_text())
    for _ in range(1200):  # the orphan gets SIGTERM (PR_SET_PDEATHSIG) and saves
        if not _alive(child):
            break
        time.sleep(0.05)
    assert "preempted: saved step" in (second / "train.log").read_text()
    assert not (second / "final_metrics.json").exists()

    # 2. the same command finishes the sweep without redoing the finished run.
    done = subproc.run(sweep_cmd(*args, "--parallel=2"), env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 done" in done.stdout or "2 done" in done.stdout
    assert "4/4 done" in done.stdout
    starts = [ln for ln in (first / "train.log").read_text().splitlines() if ln.startswith("# ")]
    assert len(starts) == 1  # never restarted
    assert "resumed from step" in (second / "train.log").read_text()

    # 3. again: nothing to do.
    again = subproc.run(sweep_cmd(*args), env, timeout=120)
    assert again.returncode == 0 and "4 done" in again.stdout
    assert "nothing to run" in again.stdout

    # 4. one table, mean +- std over the two seeds.
    out = subproc.run([sys.executable, "-m", "experiments.collect", str(root)], env,
                      timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| layernorm")
            or line.startswith("| rmsnorm")]
    assert len(rows) == 2 and all("±" in r and r.endswith("| 2 |") for r in rows), out.stdout
    assert (base / "norm.png").exists() and (base / "norm.tex").exists()


def test_each_ablation_commands_its_tables_grid():
    """configs/ablations/*.py: the docstring's sweep command names a sweep (without
    --sweep, experiments.sweep runs the base config alone) that is more than one run."""
    import glob
    import importlib
    import re
    paths = sorted(glob.glob(os.path.join(subproc.ROOT, "configs", "ablations", "*.py")))
    assert paths
    for path in paths:
        module = importlib.import_module(f"configs.ablations.{os.path.basename(path)[:-3]}")
        names = re.findall(r"experiments\.sweep --config=\S+ --sweep=(\w+)", module.__doc__)
        assert names, f"{path}: its sweep command names no --sweep"
        assert len(sweep_lib.collect(module.get_sweep, names[0])) > 1, path


@pytest.mark.parametrize("relative", [True, False])
def test_a_live_run_in_a_workdir_is_found_whether_the_root_was_relative_or_not(
        tmp_path, monkeypatch, relative):
    """The default --root=runs/sweeps is relative: the child's --workdir is then relative
    to its cwd, and a rerun must still see it (it started a second writer)."""
    from experiments import sweep
    monkeypatch.chdir(tmp_path)
    w = "runs/x/seed=0" if relative else str(tmp_path / "runs/x/seed=0")
    os.makedirs(w)
    p = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); "
                          "time.sleep(60)", "-m", "genjax.train", f"--workdir={w}"],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "up\n"  # started (a loaded machine starts it slowly)
        (tmp_path / "runs/x/seed=0/sweep_run.pid").write_text(str(p.pid))
        seen = (pathlib.Path(f"/proc/{p.pid}/cmdline").read_text().split("\0"),
                os.getcwd())
        assert sweep._alive_elsewhere("runs/x/seed=0") == p.pid, seen
        assert sweep._alive_elsewhere(str(tmp_path / "runs/x/seed=0")) == p.pid
        os.makedirs("runs/x/seed=1")
        (tmp_path / "runs/x/seed=1/sweep_run.pid").write_text(str(p.pid))
        assert sweep._alive_elsewhere("runs/x/seed=1") is None  # another workdir's run
    finally:
        p.kill()
        p.wait()
        p.stdout.close()


def _run_local(script: str, tmp_path) -> tuple[int, str]:
    """experiments.sweep.run_local in a fresh process (it forks its children; a pytest
    worker has JAX's threads): `script` sets `runs` and `sweep.train_command`, and the
    process exits with run_local's code."""
    code = ("import os, signal, sys, threading\n"
            "from experiments import sweep\n"
            f"tmp = {str(tmp_path)!r}\n" + script +
            "\nsys.exit(sweep.run_local({}, runs, parallel=2))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode, p.stdout


def _runs(names) -> str:
    return (f"runs = [dict(name=n, workdir=os.path.join(tmp, n), status='new', overrides={{}}, "
            f"total_steps=1) for n in {list(names)!r}]\n")


def test_a_run_preempted_from_outside_makes_the_sweep_exit_143_not_0(tmp_path):
    """A child that checkpointed and exited 143 (its own SIGTERM, e.g. a scheduler's) is
    unfinished: the sweep says so and exits 143; children that finished exit it 0."""
    (tmp_path / "child.py").write_text(  # a train that finishes (0) or was preempted (143)
        "import json, os, sys\n"
        "w, code = sys.argv[1], int(sys.argv[2])\n"
        "if code == 0:\n"
        "    json.dump({'total_steps': 1}, open(os.path.join(w, 'config.json'), 'w'))\n"
        "    json.dump({'step': 1}, open(os.path.join(w, 'final_metrics.json'), 'w'))\n"
        "sys.exit(code)\n")
    child = ("sweep.train_command = lambda p, run, python: [python, os.path.join(tmp, 'child.py'),"
             " run['workdir'], str({exits}[run['name']])]\n")
    rc, out = _run_local(_runs("ab") + child.format(exits={"a": 0, "b": 143}), tmp_path)
    assert rc == 143 and "saved  b (interrupted; re-run resumes)" in out, out
    assert "1 runs stopped" in out
    rc, out = _run_local(_runs("b") + child.format(exits={"a": 0, "b": 0}), tmp_path)
    assert rc == 0, out


def test_children_stopped_by_ctrl_c_before_their_handler_are_interrupted_not_failed(tmp_path):
    """The sweep gets SIGTERM while its children are still starting (no handler of
    theirs yet: they die of the signal, exit -15): they are reported as stopped and the
    sweep exits 143, as for children that checkpointed."""
    script = _runs("ab") + (
        "sweep.train_command = lambda p, run, python: [python, '-c', "
        "'import time; time.sleep(60)']\n"
        "threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()\n")
    rc, out = _run_local(script, tmp_path)
    assert rc == 143, out
    assert out.count("(interrupted while starting") == 2 and "FAILED" not in out, out
