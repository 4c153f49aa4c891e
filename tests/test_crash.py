"""Crash safety end to end.

Fast unit tests: a truncated or corrupt dataset, samples file, checkpoint or model file fails
with an error that names the file and says it is truncated or corrupt.

Pipeline tests (``pipeline``, ``slow``): Snakemake is started as its own process group on tiny
configs and the whole group is killed with SIGKILL while a training, sampling or MD job is in
the middle of its work. The user's recovery is what README says: ``snakemake --unlock``, then the
same command again (the default workflow profile has ``rerun-incomplete: true``). The result
must equal an uninterrupted run's bit for bit (CPU, same seeds; wall-clock fields aside), no
half-written output may be taken as complete, and training resumes from ``checkpoint.pt``.
One uninterrupted reference run per config is shared through module-scoped fixtures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).resolve().parent / "configs"
RUN = "results/runs/dw4/egnn/fm/seed0"


# =============================================================================================
# Truncated or corrupt files: the error names the file and the problem (fast)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A real dataset, checkpoint, model and samples file from a few-step DW4 run (~10 s)."""
    from eqbg.data import make_reference_data
    from eqbg.sampling import sample_run
    from eqbg.training import train_run

    root = tmp_path_factory.mktemp("small_run")
    data, run = root / "data", root / "run"
    make_reference_data(
        "dw4",
        {"splits": {"train": 64, "val": 32, "test": 32}, "check_convergence": False,
         "n_chains": 8, "burn_in": 100, "thin": 5},
        0, data,
    )
    training = {"steps": 2, "batch_size": 16, "checkpoint_every": 1, "val_every": 0,
                "progress": False, "device": "cpu"}
    train_run("dw4", "egnn", "fm", 0, {"model": {"hidden": 8, "n_layers": 1}, "training": training},
              data, run)
    sample_run(run, 8, {"method": "rk4", "n_steps": 2, "device": "cpu"}, run / "samples.npz", 0)
    return data, run


EVAL_SETTINGS = {"nll_n": 4, "bootstrap_reps": 10, "distance_n": 8, "device": "cpu"}


def damage(path: Path, how: str) -> None:
    """Overwrite ``path`` with its first half (a write cut short) or with garbage."""
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if how == "truncated" else b"\x00garbage, not a file " * 20)


def problem(path: Path) -> str:
    """What every such error must say: the file's path and that it is truncated or corrupt."""
    return re.escape(str(path)) + r": .*truncated.*corrupt"


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_damaged_dataset_names_the_file(small_run, tmp_path, how):
    from eqbg.data import DatasetError, load_dataset

    data, _ = small_run
    assert load_dataset(data / "train.npz", system="dw4", split="train").shape == (64, 4, 2)
    bad = tmp_path / "train.npz"
    shutil.copy(data / "train.npz", bad)
    damage(bad, how)
    with pytest.raises(DatasetError, match=problem(bad)):
        load_dataset(bad, system="dw4", split="train")


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_damaged_samples_file_names_the_file(small_run, tmp_path, how):
    from eqbg.evaluation.run import evaluate_run

    data, run = small_run
    bad = tmp_path / "samples.npz"
    shutil.copy(run / "samples.npz", bad)
    damage(bad, how)
    with pytest.raises(ValueError, match=problem(bad)):
        evaluate_run("dw4", run, data, EVAL_SETTINGS, tmp_path / "metrics.json", samples_path=bad)
    assert not (tmp_path / "metrics.json").exists()
    # the intact file evaluates (the damage, not the set-up, made the error)
    evaluate_run("dw4", run, data, EVAL_SETTINGS, tmp_path / "metrics.json")
    assert json.loads((tmp_path / "metrics.json").read_text())["ess_n"] == 8


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_damaged_checkpoint_names_the_file(small_run, tmp_path, how):
    from eqbg.training.state import read_checkpoint

    _, run = small_run
    assert read_checkpoint(run / "checkpoint.pt", torch.device("cpu"))["step"] == 2
    bad = tmp_path / "checkpoint.pt"
    shutil.copy(run / "checkpoint.pt", bad)
    damage(bad, how)
    with pytest.raises(ValueError, match=problem(bad)):
        read_checkpoint(bad, torch.device("cpu"))


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_damaged_model_file_names_the_file(small_run, tmp_path, how):
    from eqbg.rundir import load_flow

    _, run = small_run
    for name in ("model.pt", "config.json"):
        shutil.copy(run / name, tmp_path / name)
    load_flow(tmp_path)
    damage(tmp_path / "model.pt", how)
    with pytest.raises(ValueError, match=problem(tmp_path / "model.pt")):
        load_flow(tmp_path)


# =============================================================================================
# kill -9 of the whole Snakemake process group, then the user's recovery


def snakemake_args(workdir: Path, configfile: Path, *extra: str) -> list[str]:
    # like tests/test_pipeline.py; the default workflow profile (profiles/default:
    # rerun-incomplete) is found beside the Snakefile
    return [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(ROOT / "Snakefile"),
        "--configfile", str(configfile),
        "--directory", str(workdir),
        "--cores", "2",
        *extra,
    ]


def snakemake(workdir: Path, configfile: Path, *extra: str, ok: bool = True) -> str:
    result = subprocess.run(
        snakemake_args(workdir, configfile, *extra), capture_output=True, text=True, timeout=600
    )
    out = result.stdout + result.stderr
    if ok:
        assert result.returncode == 0, out[-6000:]
    return out


def group_processes(pgid: int) -> list[tuple[int, str]]:
    """``(pid, command line)`` of the live (non-zombie) processes of process group ``pgid``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append((int(proc.name), cmdline))
    return found


def cpu_seconds(pgid: int, fragment: str) -> float:
    """CPU seconds used so far by the processes of group ``pgid`` whose command line holds
    ``fragment``."""
    total = 0
    for pid, cmd in group_processes(pgid):
        if fragment in cmd:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def kill_when(
    workdir: Path, configfile: Path, targets: list[str], ready: Callable[[int], bool],
    job: str, timeout: float = 400,
) -> list[str]:
    """Start Snakemake as its own process group, wait until ``ready(pgid)``, SIGKILL the group.

    ``job``: a fragment of the command line of the job's script (``train.py``, ...), which must
    still be running at the kill. Returns the command lines of its processes at the kill;
    asserts that no process of the group outlives it."""
    log = open(workdir / "killed_snakemake.log", "w")
    proc = subprocess.Popen(
        snakemake_args(workdir, configfile, *targets), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    pgid = os.getpgid(proc.pid)
    try:
        deadline = time.monotonic() + timeout
        while not ready(pgid):
            assert proc.poll() is None, (
                "snakemake ended before the kill point:\n"
                + (workdir / "killed_snakemake.log").read_text()[-4000:]
            )
            assert time.monotonic() < deadline, "kill point never reached"
            time.sleep(0.05)
        running = [cmd for _, cmd in group_processes(pgid) if job in cmd]
        os.killpg(pgid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(pgid, signal.SIGKILL)
        proc.wait()
        log.close()
    assert running, f"no {job} job was running at the kill point"
    for _ in range(100):  # every process of the group dies: none keeps writing outputs
        if not group_processes(pgid):
            break
        time.sleep(0.05)
    assert not group_processes(pgid), group_processes(pgid)
    return running


def snakemake_watched(
    workdir: Path, configfile: Path, targets: list[str], watch: Callable[[int], None]
) -> None:
    """Run Snakemake to the end as its own process group, calling ``watch(pgid)`` meanwhile."""
    log = workdir / "snakemake.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            snakemake_args(workdir, configfile, *targets), stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        pgid = os.getpgid(proc.pid)
        while proc.poll() is None:
            watch(pgid)
            time.sleep(0.05)
    assert proc.returncode == 0, log.read_text()[-6000:]


def incomplete(workdir: Path) -> set[str]:
    """Outputs Snakemake has marked incomplete (``.snakemake/incomplete``, base64 names)."""
    import base64

    folder = workdir / ".snakemake" / "incomplete"
    names = folder.iterdir() if folder.is_dir() else []
    return {base64.urlsafe_b64decode(p.name).decode() for p in names if p.is_file()}


def jobs_run(out: str) -> set[str]:
    return set(re.findall(r"^(?:local)?rule (\w+):", out, flags=re.M))


def timing(key: str) -> bool:
    """Wall-clock fields differ between any two runs; everything else must be equal."""
    return key.endswith(("_time_s", "_per_s", "wall_s")) or key in ("ns_per_day", "created_utc")


def assert_same_npz(a: Path, b: Path) -> None:
    with np.load(a) as fa, np.load(b) as fb:
        assert sorted(fa.files) == sorted(fb.files), (a, b)
        for key in fa.files:
            if not timing(key):
                np.testing.assert_array_equal(fa[key], fb[key], err_msg=f"{a.name}: {key}")


def assert_same_model(a: Path, b: Path) -> None:
    ma, mb = (torch.load(p, map_location="cpu", weights_only=False) for p in (a, b))
    assert ma.keys() == mb.keys()
    sa, sb = ma.pop("state_dict"), mb.pop("state_dict")
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), f"{a.name}: {key} differs"
    assert ma == mb  # system, settings, best step and its validation NLL


def numbers(obj, prefix=""):
    """``{dotted key: value}`` of every number in a JSON tree, timing fields dropped."""
    if isinstance(obj, dict):
        items = [(k, v) for k, v in obj.items() if not timing(k)]
    elif isinstance(obj, list):
        items = list(enumerate(obj))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return {prefix[:-1]: obj}
    else:
        return {}
    out = {}
    for k, v in items:
        out.update(numbers(v, f"{prefix}{k}."))
    return out


def assert_same_numbers(a: Path, b: Path) -> None:
    na, nb = (numbers(json.loads(p.read_text())) for p in (a, b))
    assert na.keys() == nb.keys()
    differ = {k: (na[k], nb[k]) for k in na if na[k] != nb[k]}
    assert not differ, differ


def assert_same_run(run: Path, reference: Path) -> None:
    """Model, samples, evaluation arrays, metrics and curve equal the uninterrupted run's."""
    assert_same_model(run / "model.pt", reference / "model.pt")
    assert_same_npz(run / "samples.npz", reference / "samples.npz")
    assert_same_npz(run / "eval.npz", reference / "eval.npz")
    assert_same_numbers(run / "metrics.json", reference / "metrics.json")
    ca, cb = (pd.read_csv(p / "train.csv").drop(columns="wall_time_s") for p in (run, reference))
    pd.testing.assert_frame_equal(ca, cb, check_exact=True)
    assert json.loads((run / "config.json").read_text())["status"] == "done"


# --- training and sampling: DW4, one flow-matching run ---------------------------------------

TRAIN_STEPS, CHECKPOINT_EVERY = 150, 5

# What the sample job does before it samples (Snakemake's script preamble, the script's imports,
# loading the model), then its CPU seconds so far.
SAMPLE_JOB_PREAMBLE = """
import sys, time
import snakemake.logging, snakemake.iocontainers, snakemake.shell, snakemake.io
from eqbg.pipeline import setup_logging
from eqbg.sampling import sample_run
from eqbg.rundir import load_flow
load_flow(sys.argv[1], device="cpu")
print(time.process_time())
"""
TARGET = [f"{RUN}/metrics.json"]


def dw4_config(tmp: Path) -> Path:
    """tiny.yaml with one run that trains long enough to be caught mid-training (checkpoints
    every 5 of 150 steps, validation every 50) and draws enough samples that sampling takes
    seconds."""
    config = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    config["grid"] = [{"system": "dw4", "models": ["egnn"], "losses": ["fm"], "seeds": [0]}]
    config["defaults"]["train"].update(
        steps=TRAIN_STEPS, checkpoint_every=CHECKPOINT_EVERY, val_every=50
    )
    # 1024 samples: a few seconds of sampling, so the kill lands inside it even on a loaded machine
    config["defaults"]["sample"].update(n_samples=1024)
    path = tmp / "crash_dw4.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def dw4(tmp_path_factory):
    """``(config, workdir of an uninterrupted run, CPU seconds of its sample job when its
    samples were drawn)``. A test copies the workdir (``.snakemake`` metadata included, mtimes
    kept) and deletes the outputs of the stage it interrupts: where a real run stands when that
    job starts."""
    base = tmp_path_factory.mktemp("dw4")
    config = dw4_config(base)
    reference = base / "reference"
    reference.mkdir()
    samples = reference / RUN / "samples.npz"
    cpu = [0.0]

    def watch(pgid: int) -> None:
        if not samples.exists():
            cpu[0] = max(cpu[0], cpu_seconds(pgid, ".sample.py"))

    snakemake_watched(reference, config, TARGET, watch)
    return config, reference, cpu[0]


def start_from(reference: Path, work: Path, remove: list[str]) -> Path:
    shutil.copytree(reference, work, symlinks=True)
    run = work / RUN
    for name in remove:
        target = run / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return run


@pytest.mark.pipeline
@pytest.mark.slow
def test_kill_during_training_resumes_from_the_checkpoint_and_ends_bit_identical(dw4, tmp_path):
    from eqbg.training.state import read_checkpoint

    config, reference, _ = dw4
    work = tmp_path / "work"
    run = start_from(reference, work, remove=[p.name for p in (reference / RUN).iterdir()])
    written = lambda pgid: (run / "checkpoint.pt").exists() and (run / "train.csv").exists()
    kill_when(work, config, TARGET, written, ".train.py")

    # Mid-training: a whole checkpoint (written atomically), a partial curve and config.json
    # ("running") on disk, no model; Snakemake has marked the job's outputs incomplete.
    assert not (run / "model.pt").exists()
    step = read_checkpoint(run / "checkpoint.pt", torch.device("cpu"))["step"]
    assert 0 < step < TRAIN_STEPS and step % CHECKPOINT_EVERY == 0
    assert json.loads((run / "config.json").read_text())["status"] == "running"
    assert len(pd.read_csv(run / "train.csv")) < TRAIN_STEPS
    assert incomplete(work) == {f"{RUN}/{name}" for name in ("model.pt", "train.csv", "config.json")}

    # The same command again is refused while the killed run's lock remains, and says how to
    # remove it; after `--unlock` it redoes the incomplete job, which resumes from the checkpoint.
    refused = snakemake(work, config, *TARGET, ok=False)
    assert "LockException" in refused and "--unlock" in refused, refused[-3000:]
    snakemake(work, config, "--unlock")
    out = snakemake(work, config, *TARGET)
    assert jobs_run(out) == {"train", "sample", "evaluate"}, out
    log = (run / "train.log").read_text()
    assert re.search(rf"resuming \S+ from step {step}\b", log), log
    assert_same_run(run, reference / RUN)
    assert len(pd.read_csv(run / "train.csv")) == TRAIN_STEPS
    assert not incomplete(work)


@pytest.mark.pipeline
@pytest.mark.slow
def test_kill_during_sampling_leaves_no_samples_file_and_rerun_is_identical(dw4, tmp_path):
    config, reference, cpu_sampled = dw4
    work = tmp_path / "work"
    downstream = ["samples.npz", "sample.log", "sample.benchmark.tsv", "metrics.json", "eval.npz"]
    run = start_from(reference, work, remove=downstream)
    # Kill halfway through drawing the samples, measured in the job's CPU time (load does not
    # move it): from what a sample job spends before it samples (its script's imports and
    # loading the model, measured here) to where the reference job had drawn its samples.
    cpu_loaded = float(subprocess.run(
        [sys.executable, "-c", SAMPLE_JOB_PREAMBLE, str(reference / RUN)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout.split()[-1])
    assert cpu_sampled > cpu_loaded + 1.0, (cpu_loaded, cpu_sampled)  # sampling is real work
    kill_at = 0.5 * (cpu_loaded + cpu_sampled)
    print(f"sample job CPU: {cpu_loaded:.1f} s loaded, {cpu_sampled:.1f} s sampled; kill at {kill_at:.1f} s")
    print(f"sample job CPU: {cpu_loaded:.1f} s loaded, {cpu_sampled:.1f} s sampled; kill at {kill_at:.1f} s")
    kill_when(work, config, TARGET, lambda pgid: cpu_seconds(pgid, ".sample.py") >= kill_at,
              ".sample.py")

    assert not (run / "samples.npz").exists()
    assert incomplete(work) == {f"{RUN}/samples.npz"}
    snakemake(work, config, "--unlock")
    out = snakemake(work, config, *TARGET)
    assert jobs_run(out) == {"sample", "evaluate"}, out
    assert_same_run(run, reference / RUN)


# --- MD: alanine dipeptide reference data ----------------------------------------------------


def aldp_config(tmp: Path) -> Path:
    """tiny_data.yaml's alanine dipeptide alone (two 5 + 104 ps Reference-platform
    trajectories in two worker processes)."""
    config = yaml.safe_load((CONFIGS / "tiny_data.yaml").read_text())
    config["systems"] = {"aldp": config["systems"]["aldp"]}
    path = tmp / "crash_aldp.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


ALDP = "results/data/aldp"
ALDP_FILES = ("train.npz", "val.npz", "test.npz", "provenance.json")


@pytest.fixture(scope="module")
def aldp(tmp_path_factory):
    base = tmp_path_factory.mktemp("aldp")
    config = aldp_config(base)
    reference = base / "reference"
    reference.mkdir()
    snakemake(reference, config, f"{ALDP}/provenance.json")
    return config, reference


@pytest.mark.pipeline
@pytest.mark.slow
def test_kill_during_md_leaves_no_partial_data_and_rerun_is_identical(aldp, tmp_path):
    config, reference = aldp
    work = tmp_path / "work"
    work.mkdir()
    folder = work / ALDP
    md_s = json.loads((reference / ALDP / "provenance.json").read_text())["diagnostics"]["md_wall_time_s"]
    log = work / "results/logs/data/aldp.log"
    started: list[float] = []

    def mid_md(pgid: int) -> bool:  # 40 % into the reference run's MD time
        if not started and log.exists() and "generating reference data" in log.read_text():
            started.append(time.monotonic())
        return bool(started) and time.monotonic() - started[0] > 0.4 * md_s

    job = kill_when(work, config, [f"{ALDP}/provenance.json"], mid_md, ".reference_data.py")
    assert len(job) >= 3, job  # the job's script and its two forked MD workers
    assert not any((folder / name).exists() for name in ALDP_FILES)
    assert incomplete(work) == {f"{ALDP}/{name}" for name in ALDP_FILES}
    snakemake(work, config, "--unlock")
    out = snakemake(work, config, f"{ALDP}/provenance.json")
    assert jobs_run(out) == {"reference_md"}, out

    # OpenMM's Reference platform with fixed seeds is bit-reproducible: the same frames, the
    # same (passing) diagnostics, the same file hashes in provenance.json.
    for name in ALDP_FILES[:3]:
        assert_same_npz(folder / name, reference / ALDP / name)
    assert_same_numbers(folder / "provenance.json", reference / ALDP / "provenance.json")
    new, old = (json.loads((d / ALDP / "provenance.json").read_text()) for d in (work, reference))
    assert new["diagnostics"]["converged"] is True and not new["diagnostics"]["failed_checks"]
    assert new["files"] == old["files"]
    assert not incomplete(work)
