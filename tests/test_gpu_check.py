"""bench/gpu_check.sh on a machine without CUDA: its CPU steps run, its CUDA steps are skipped
with the reason, and the summary says which is which (issue 24)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the check runs its GPU steps (minutes)"),
]


def test_gpu_check_runs_its_cpu_steps_and_skips_the_cuda_ones(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--no-install", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    steps = {row[0]: row[1:] for row in csv.reader(open(out / "steps.tsv"), delimiter="\t")}
    assert steps["install"][0] == "skipped" and "--no-install" in steps["install"][2]
    cuda_steps = ("smoke_paper_cuda", "divergence_cuda", "sampling_speed_cuda", "training_cuda", "coupling_cuda")
    for name in cuda_steps:
        assert steps[name][0] == "skipped" and "no CUDA device" in steps[name][2], (name, steps[name])
    for name in ("test_cuda", "divergence_cpu", "coupling_cpu"):
        assert steps[name][0] == "ok", (name, steps[name], (out / "logs" / f"{name}.log").read_text()[-2000:])
    # test_cuda.py ran and skipped every test, with the reason
    assert "no CUDA device" in (out / "logs" / "test_cuda.log").read_text()
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["environment"]["gpu"] is None and len(report["steps"]) == len(steps)
    rows = report["bench"]["divergence_cpu"]["divergence"]
    assert {(r["system"], r["batch"]) for r in rows} == {("lj13", 4), ("aldp", 4)}
    # every method's divergence agrees with the plain per-coordinate loop
    assert max(r[f"{m}_maxdev"] for r in rows for m in ("loop", "batched_vjp", "jacrev", "jvp")) < 1e-3
    coupling = report["bench"]["coupling_cpu"]["rows"]
    assert coupling and all(r["system"] == "lj13" for r in coupling)
    summary = (out / "summary.txt").read_text()
    assert all(name in summary for name in steps) and "skipped" in summary
