"""experiments/2026-12-01_finetune/diffusion_lora.py end to end on the tiny presets: a
tiny class-conditional diffusion run fine-tuned on Sneakers (full and LoRA r=8), measured
before and after with the tiny feature net (the session's, copied into a temporary
GENJAX_CACHE_DIR). Numbers are meaningless at this size; the test checks what is measured
against what."""
import json
import subprocess
import sys

import numpy as np
import pytest

from tests import subproc

SCRIPT = "experiments/2026-12-01_finetune/diffusion_lora.py"


@pytest.mark.slow
def test_diffusion_lora_demo_end_to_end_on_tiny(tiny_run, data_dir, copy_tiny_feature_net,
                                                tmp_path):
    from genjax.checkpoint import Checkpointer
    out, runs = tmp_path / "results.json", tmp_path / "runs"
    copy_tiny_feature_net(str(tmp_path / "cache" / "feature_net"))
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--preset=tiny", f"--source={tiny_run('diffusion')}",
         "--class_name=Sneaker", "--steps=4", "--num_samples=16", f"--root={runs}",
         "--settings=full,lora_r8",
         f"--out={out}"], cwd=subproc.ROOT, capture_output=True, text=True, timeout=1200,
        env=subproc.env(1, GENJAX_CACHE_DIR=str(tmp_path / "cache")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    rows = [r["before"], r["before"]["floor"], *r["settings"].values()]
    for row in rows:  # every score against the 1,000 Sneaker test images
        assert row["num_real"] == 1000 and row["num_samples"] == 16
        assert 0 <= row["class_share"] <= 1 and np.isfinite(row["fid_fmnist"])
        assert row["class_share"] == pytest.approx(row["class_mix"]["Sneaker"])
    full, lora = r["settings"]["full"], r["settings"]["lora_r8"]
    assert full["trainable_share"] == 1.0 and lora["trainable_share"] < 1.0
    for name, row in r["settings"].items():
        assert row["step"] == 4 and row["optimizer_bytes"] >= 8 * row["trainable_params"]
        meta = Checkpointer(str(runs / name), read_only=True).read_meta(4)
        assert meta["data"]["classes"] == ["Sneaker"]  # the run meta records the subset
    # scored on their trained weights: LoRA keeps no EMA, nor does `full` (the comparison)
    assert lora["which"] == full["which"] == "raw"
    md = (tmp_path / "results.md").read_text()
    assert "share Sneaker" in md and "lora_r8" in md and "(floor)" in md
