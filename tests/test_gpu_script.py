"""bench/gpu.sh, the script that proves the GPU paths, checked on the CPU: every step runs and writes its JSON.

    pytest tests/test_gpu_script.py -m slow
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXPERIMENTS, ROOT

STEPS = ("train_throughput", "generation_throughput", "vocab_memory", "causal_qlora", "nccl_train", "suite_gpu",
         "qlora_steps", "memory_check")


@pytest.mark.slow
def test_the_dry_run_runs_every_step_on_the_cpu_and_writes_its_json(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "bench/gpu.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    results = {name: json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8")) for name in STEPS}
    assert {results[n]["benchmark"] for n in ("train_throughput", "generation_throughput", "causal_qlora")} == {
        "train_throughput", "generation_throughput", "causal_qlora"}
    assert results["vocab_memory"]["device"] == "cpu"
    for name, step in (("nccl_train", "nccl"), ("suite_gpu", "suite"), ("qlora_steps", "qlora")):
        paths = results[name]
        assert paths["step"] == step and paths["device"] == "cpu" and paths["ok"] is True
        assert paths["checks"] and all(check["ok"] for check in paths["checks"]), paths["checks"]
    assert any("joined the gloo group" in c["check"] for c in results["nccl_train"]["checks"])
    memory = results["memory_check"]
    assert [row["config"] for row in memory["rows"]] == [path.stem for path in EXPERIMENTS]
    solar = next(row for row in memory["rows"] if row["config"].startswith("05_solar"))
    assert (solar["layers"], solar["full_layers"]) == (1, 2)  # measured at fewer layers, and said so
    for row in memory["rows"]:
        assert row["estimate_gb"] > 0 and row["allocated_gb"] is None and row["ratio"] is None  # nothing measured
        assert row["loss"] > 0 and row["micro_batch"] == 2
    assert "ratio = device / estimate" in (tmp_path / "memory_check.log").read_text(encoding="utf-8")
