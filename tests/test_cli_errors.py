"""Bad input gets one clear error line (exit 2, no traceback) and loses nothing."""
import os
import re

import pytest

from tests.subproc import assert_one_line_error, run_module as run
from tests.families import one_error_line

TINY = "--config=configs/lm_shakespeare.py:tiny"


def test_unknown_config_key_names_the_override_and_the_nearest_key(tmp_path):
    proc = run("genjax.train", TINY, "--config.optim.lrr=1", f"--workdir={tmp_path}")
    assert_one_line_error(proc, "unknown config key --config.optim.lrr;",
                          "did you mean --config.optim.lr?")
    assert "\\" not in proc.stderr  # no escaped reprs of nested exceptions
    assert os.listdir(tmp_path) == []


def test_bad_config_type(tmp_path):
    proc = run("genjax.train", TINY, "--config.batch_size=many", f"--workdir={tmp_path}")
    assert_one_line_error(proc, "batch_size")


def test_unknown_preset(tmp_path):
    proc = run("genjax.train", "--config=configs/lm_shakespeare.py:huge", f"--workdir={tmp_path}")
    assert_one_line_error(proc, "unknown preset 'huge'; choose one of", "'tiny'")


def test_help_prints_the_usage_and_the_commands_own_flags():
    proc = run("genjax.train", "--help")
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr[-2000:]
    out = proc.stdout
    assert out.startswith("The one training loop, for every family.")
    assert "python -m genjax.train --config=configs/lm_shakespeare.py:cpu" in out
    for line in ("  --config: configs/<name>.py[:preset]",
                 "  --workdir: run directory (resumes if it holds checkpoints)",
                 "  --config.<key>=<value>: "):
        assert line in out, out
    assert "--verbosity" not in out and "orbax" not in out  # absl's / orbax's own flags


def test_sampling_from_an_empty_workdir(tmp_path):
    proc = run("genjax.sample", f"--workdir={tmp_path}", "--prompt=ROMEO:")
    assert_one_line_error(proc, "no checkpoints")
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("tiny_lm")
    proc = run("genjax.train", TINY, f"--workdir={workdir}",
               env_extra={"GENJAX_DATA_DIR": data_dir})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return workdir


def _snapshot(path):
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, path)] = os.path.getsize(p)
    return out


@pytest.mark.parametrize("prompt,needle", [("", "empty"), ("ROMEO\u2603:", "\u2603")])
def test_bad_prompt(trained_tiny, prompt, needle):
    proc = run("genjax.sample", f"--workdir={trained_tiny}", f"--prompt={prompt}")
    assert_one_line_error(proc, needle)


def test_a_sample_count_below_one_is_a_flag_error(trained_tiny):
    """--num_samples, --steps (>= 1) and --guidance (>= 0) are bounded flags."""
    proc = run("genjax.sample", f"--workdir={trained_tiny}", "--num_samples=0")
    assert_one_line_error(proc, "--num_samples=0", "positive integer")


def test_sampling_prints_samples(trained_tiny):
    proc = run("genjax.sample", f"--workdir={trained_tiny}", "--prompt=ROMEO:",
               "--num_samples=2", "--max_new_tokens=20", "--seed=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("ROMEO:") >= 2


def test_checkpoint_of_another_model_is_refused_and_kept(trained_tiny, data_dir):
    before = _snapshot(trained_tiny)
    proc = run("genjax.train", TINY, "--config.model.num_layers=3", f"--workdir={trained_tiny}",
               env_extra={"GENJAX_DATA_DIR": data_dir})
    assert_one_line_error(proc, "different model", "model.num_layers")
    after = _snapshot(trained_tiny)
    assert {k: v for k, v in after.items() if "metrics" not in k} == \
        {k: v for k, v in before.items() if "metrics" not in k}


@pytest.mark.parametrize("tool, launch, needle", [
    ("sample", {"JAX_COORDINATOR_ADDRESS": "localhost:1", "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": "1"}, "JAX_NUM_PROCESSES=2"),
    ("evaluate", {"GENJAX_DISTRIBUTED": "1"}, "GENJAX_DISTRIBUTED=1")])
def test_a_one_process_tool_launched_as_several_processes_is_one_line(
        tool, launch, needle, tmp_path, monkeypatch, capsys):
    """genjax.sample/evaluate never join jax.distributed: started by a multi-process launch,
    every process would write the same files. One line, exit 2, before anything is read."""
    import importlib
    import logging
    from genjax import cli
    main = importlib.import_module(f"genjax.{tool}").main
    for k, v in launch.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(logging, "shutdown", lambda: None)  # pytest's log handlers stay open
    (tmp_path / "keep").write_text("x")
    with pytest.raises(SystemExit) as e:
        cli.run(main, [f"genjax.{tool}", f"--workdir={tmp_path}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert e.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: genjax.{tool} runs as one process") and needle in err[0]
    assert sorted(os.listdir(tmp_path)) == ["keep"]


def test_the_data_builders_launched_as_several_processes_are_one_line(
        tmp_path, monkeypatch, capsys):
    """genjax.data prepare would have every host build and write the same dataset."""
    from genjax.data import __main__ as data_cli
    monkeypatch.setenv("GENJAX_DISTRIBUTED", "1")
    with pytest.raises(SystemExit) as e:
        data_cli.run(["prepare", "shakespeare", f"--data_dir={tmp_path}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert e.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("error: genjax.data runs as one process"), err
    assert os.listdir(tmp_path) == []


def test_a_launch_of_one_process_is_not_a_multi_process_launch():
    from genjax import runtime
    runtime.refuse_multi_process_launch("genjax.sample", {"JAX_NUM_PROCESSES": "1"})
    runtime.refuse_multi_process_launch("genjax.sample", {"GENJAX_DISTRIBUTED": "0"})
    runtime.refuse_multi_process_launch("genjax.sample", {})


def test_the_log_level_comes_from_the_environment_and_a_bad_one_is_one_line(monkeypatch):
    import logging
    from genjax import runtime
    from genjax.errors import UserError
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root.level)  # restored after the test
    monkeypatch.setenv("GENJAX_LOG_LEVEL", "info")
    runtime.setup_logging()
    assert root.level == logging.INFO  # even with a handler already on the root logger
    monkeypatch.setenv("GENJAX_LOG_LEVEL", "bogus")
    with one_error_line(UserError, match="GENJAX_LOG_LEVEL='bogus': use DEBUG, INFO"):
        runtime.setup_logging()


def test_clis_other_than_aot_do_not_load_libtpu_without_tpus():
    """With the tpu-aot extra installed and JAX_PLATFORMS unset, a CLI on a machine
    without TPUs must not start libtpu (it prints `E0000 ... unexpected worker hostname`)."""
    import importlib.util
    import subprocess
    import sys
    from tests import subproc
    if importlib.util.find_spec("libtpu") is None:
        pytest.skip("libtpu (the tpu-aot extra) is not installed")
    if any(os.path.exists(p) for p in ("/dev/accel0", "/dev/vfio/0")):
        pytest.skip("this machine has TPU chips")
    env = {k: v for k, v in subproc.env().items() if k != "JAX_PLATFORMS"}
    code = ("import jax; from genjax import cli; cli.run(lambda rest: "
            "print(jax.devices()[0].platform, 'libtpu.so' in open('/proc/self/maps').read()), "
            "argv=['cli'])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=subproc.ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["cpu", "False"], proc.stdout  # libtpu.so never loaded
    assert "worker hostname" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("process_id", [None, "first"])
def test_a_multi_process_launch_without_an_integer_process_id_is_one_line(
        monkeypatch, process_id):
    """The coordinator and process count set, the process id missing or not a number: one
    error naming it (was a KeyError / ValueError traceback), before any connection."""
    from genjax import runtime
    from genjax.errors import UserError
    monkeypatch.setattr(runtime, "_initialized", False)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    if process_id is None:
        monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
    else:
        monkeypatch.setenv("JAX_PROCESS_ID", process_id)
    with one_error_line(UserError, match="JAX_PROCESS_ID="):
        runtime.initialize_distributed()


@pytest.mark.parametrize("env, needle", [
    ({"JAX_PROCESS_ID": "5"}, "JAX_PROCESS_ID='5' with JAX_NUM_PROCESSES='2'"),
    ({"JAX_NUM_PROCESSES": "0", "JAX_PROCESS_ID": "0"}, "JAX_NUM_PROCESSES='0'"),
    ({"JAX_COORDINATOR_ADDRESS": "localhost"}, "give host:port"),
    ({"GENJAX_INIT_TIMEOUT": "5m"}, "GENJAX_INIT_TIMEOUT='5m': seconds")])
def test_a_launch_environment_out_of_range_is_one_error_line_before_connecting(
        monkeypatch, env, needle):
    from genjax import runtime
    from genjax.errors import UserError
    monkeypatch.setattr(runtime, "_initialized", False)
    monkeypatch.setattr(runtime.jax.distributed, "initialize", None)  # never reached
    for k, v in {"JAX_COORDINATOR_ADDRESS": "localhost:1", "JAX_NUM_PROCESSES": "2",
                 "JAX_PROCESS_ID": "1", **env}.items():
        monkeypatch.setenv(k, v)
    with one_error_line(UserError, match=re.escape(needle)):
        runtime.initialize_distributed()


_WARN_ONCE = '''
import sys
from absl import app, logging
from genjax.errors import warn
def main(argv):
    if "--log_dir" in " ".join(sys.argv):
        logging.get_absl_handler().use_absl_log_file()
    warn("checkpoint 7 is unreadable")
app.run(main)
'''


@pytest.mark.parametrize("log_dir", [False, True])
def test_a_warning_shows_once_on_the_terminal_and_in_a_log_file(tmp_path, log_dir):
    import subprocess
    import sys
    args = [f"--log_dir={tmp_path}"] if log_dir else []
    p = subprocess.run([sys.executable, "-c", _WARN_ONCE, *args], capture_output=True,
                       text=True, timeout=60, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert p.returncode == 0, p.stderr
    terminal = p.stdout + p.stderr
    assert terminal.count("checkpoint 7 is unreadable") == 1, terminal
    assert "warning: checkpoint 7 is unreadable" in p.stdout
    logged = "".join(f.read_text() for f in tmp_path.glob("*.log*") if f.is_file())
    assert ("checkpoint 7 is unreadable" in logged) == log_dir
