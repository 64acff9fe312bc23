"""experiments/bench/decode.py on a run's workdir, plain and int8 (`genjax.quantize`), in
smoke form: the table is printed, the JSON has a row per batch size and cache setting,
says which weights it timed, and the int8 params take about a quarter of the bytes."""
import json

from experiments.bench import decode
from genjax import quantize


def _bench(workdir, out, capsys, *extra):
    decode.main([f"--workdir={workdir}", "--batch_sizes=1,2", "--prompt_len=4",
                 "--new_tokens=4", "--bon_prompts=0", f"--out={out}", *extra])
    return json.loads(out.read_text()), capsys.readouterr().out


def test_decode_bench_times_a_plain_and_a_quantized_workdir(tiny_run, tmp_path, capsys):
    src, w8 = tiny_run("lm"), tmp_path / "w8"
    quantize.quantize_workdir(str(src), str(w8))
    plain, _ = _bench(src, tmp_path / "plain.json", capsys, "--no_reference")
    q, printed = _bench(w8, tmp_path / "q.json", capsys)
    assert plain["quantized"] is False and q["quantized"] is True
    assert q["workdir"] == str(w8) and q["diffusion"] is None and q["step"] == plain["step"]
    assert [(r["batch"], r["kv_cache"]) for r in q["rows"]] == [
        (1, True), (1, False), (2, True), (2, False)]
    assert all(r["tokens_per_s"] > 0 and r["new_tokens"] == 4 for r in q["rows"])
    assert 3.5 < plain["param_bytes"] / q["param_bytes"] < 4.0
    assert "(int8 weights)" in printed and "new tok/s" in printed
