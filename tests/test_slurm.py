"""The SLURM profile on a real one-node SLURM cluster started on this machine.

The fixture starts munged, slurmctld and slurmd (Debian's packages; `.ci/run` installs them with
apt-get when it runs as root) as root, in the foreground, with every state, spool, log and socket
path in a temporary directory, on free ports and with their own `slurm.conf`: one node = this
host with the CPUs and memory `slurmd -C` reports, partitions `cpu` (default) and `gpu` (the names
in profiles/slurm/config.yaml) and two fake GPUs (gres files that link to /dev/null), so that
`--gpus=1` is accepted, scheduled and recorded although the host has no GPU. No slurmdbd: the jobs'
status comes from `squeue` (MinJobAge is an hour, so finished jobs stay visible) and
jobcomp/filetxt keeps a record of every finished job.

The test runs the tiny config through the real profile (a copy in which only what this node cannot
give is changed: 1 CPU and at most 2 GB per job instead of 4 CPUs and 8-32 GB; plus the executor
settings of a cluster without accounting), then checks that every job went through SLURM in the
partition the profile names, that train/sample/evaluate carried the GPU request, and that the
results equal a local `--cores` run of the same config bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).resolve().parent / "configs"
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"

pytestmark = [pytest.mark.slurm, pytest.mark.pipeline, pytest.mark.slow]

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sinfo", "sbatch", "squeue", "scontrol", "scancel", "srun")
N_FAKE_GPUS = 2  # enough for the two tiny trainings to run side by side on two cores
GPU_RULES = {"train", "sample", "evaluate"}  # `gpu: 1` and the gpu partition in the profile


def _skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "SLURM test needs Linux"
    if os.geteuid() != 0:
        return "SLURM test needs root (it starts munged, slurmctld and slurmd); CI runs .ci/run as root"
    missing = [b for b in DAEMONS + CLIENTS if shutil.which(b) is None]
    if missing:
        return (
            f"SLURM binaries missing ({', '.join(missing)}): install Debian's munge slurmctld slurmd "
            "slurm-client (.ci/run does it with apt-get when run as root)"
        )
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_hardware() -> dict[str, str]:
    """This host as slurmd sees it (`slurmd -C`): CPUs, sockets, cores, threads, RealMemory."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("NodeName="))
    fields = dict(item.split("=", 1) for item in line.split())
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    return {k: fields[k] for k in keep if k in fields}


class Cluster:
    """A one-node SLURM cluster whose every file lives under `root`; clients see it through `env`."""

    def __init__(self, root: Path):
        self.root = root
        self.host = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.log = root / "log"
        self.jobcomp = self.log / "jobcomp.txt"
        # The jobstep plugin drops SLURM_CONF (with most SLURM_* variables) before the srun it
        # runs inside each job; a real cluster's slurm.conf sits where srun finds it by itself,
        # this one does not, so jobs find an srun on PATH that sets it and runs the real one.
        self.env = {
            **os.environ,
            "SLURM_CONF": str(self.conf),
            "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.env.pop("SLURM_JOB_ID", None)
        self.procs: dict[str, subprocess.Popen] = {}
        self.hardware = _node_hardware()

    def write_config(self) -> None:
        r = self.root
        for sub in ("munge", "state", "spool", "log", "bin"):
            (r / sub).mkdir(mode=0o755)
        srun = r / "bin" / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {shutil.which("srun")} "$@"\n')
        srun.chmod(0o755)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        gpus = []
        for i in range(N_FAKE_GPUS):
            (r / f"fakegpu{i}").symlink_to("/dev/null")  # gres files must be character devices
            gpus.append(str(r / f"fakegpu{i}"))
        hw = " ".join(f"{k}={v}" for k, v in self.hardware.items())
        self.conf.write_text(
            f"""\
ClusterName=eqbgtest
SlurmctldHost={self.host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/munge/munge.socket.2
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={self.log}/slurmctld.log
SlurmdLogFile={self.log}/slurmd.log
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
# No slurmdbd: squeue answers the executor's status queries (finished jobs stay for MinJobAge)
# and jobcomp/filetxt records every finished job.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
MinJobAge=3600
GresTypes=gpu
NodeName={self.host} NodeAddr=127.0.0.1 {hw} Gres=gpu:{N_FAKE_GPUS} State=UNKNOWN
PartitionName=cpu Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={self.host} MaxTime=INFINITE State=UP
"""
        )
        (r / "gres.conf").write_text(f"NodeName={self.host} Name=gpu File={','.join(gpus)}\n")

    def _start(self, name: str, *args: str) -> None:
        out = open(self.log / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(
            [name, *args], env=self.env, cwd=self.root, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        out.close()

    def start(self) -> None:
        self.write_config()
        m = self.root / "munge"
        self._start(
            "munged", "--foreground", f"--key-file={m}/munge.key", f"--socket={m}/munge.socket.2",
            f"--pid-file={m}/munged.pid", f"--seed-file={m}/munged.seed",
            f"--log-file={self.log}/munged.log",
        )
        self._wait(lambda: (m / "munge.socket.2").exists(), 20, "munged never made its socket")
        self._start("slurmctld", "-D", "-i")  # -i: ignore (absent) saved state
        self._start("slurmd", "-D", "-N", self.host)
        self._wait(self._node_idle, 90, "the node never became idle in sinfo")

    def _node_idle(self) -> bool:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}\n{self.logs()}")
        r = self.run("sinfo", "-h", "-N", "-o", "%t", check=False)
        return r.returncode == 0 and r.stdout.split() == ["idle"] * 2  # one line per partition

    def _wait(self, ready, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > end:
                raise RuntimeError(f"{what} within {timeout} s\n{self.logs()}")
            time.sleep(0.5)

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}" for p in sorted(self.log.glob("*"))
        )

    def _processes_of_this_cluster(self) -> list[int]:
        """Every process whose environment names this cluster's slurm.conf: the daemons, their
        slurmstepd and the jobs (sbatch exports the environment)."""
        marker = f"SLURM_CONF={self.conf}".encode()
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    pids.append(int(proc.name))
            except OSError:
                pass
        return pids

    def stop(self) -> list[int]:
        """Cancel the jobs, stop the daemons; returns the pids that had to be killed afterwards."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--user", "root", check=False)
            end = time.monotonic() + 30
            while time.monotonic() < end:
                r = self.run("squeue", "-h", "-t", "PD,R,CG", "-o", "%i", check=False)
                if r.returncode != 0 or not r.stdout.strip():
                    break
                time.sleep(1)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        leftovers = self._processes_of_this_cluster()
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return leftovers


@pytest.fixture(scope="module")
def slurm_cluster():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    # Not under pytest's tmp_path: munged wants every directory above its socket to be
    # traversable by all users, and /tmp/pytest-of-root is not.
    root = Path(tempfile.mkdtemp(prefix="eqbg-slurm-"))
    root.chmod(0o755)
    cluster = Cluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        leftovers = cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not leftovers, f"processes of the test cluster still ran after teardown: {leftovers}"


def _test_profile(folder: Path, hardware: dict[str, str]) -> Path:
    """profiles/slurm/config.yaml with only what this one small node cannot give replaced: no job
    asks for more CPUs than the node has or more than 2 GB (the profile asks up to 8 CPUs and 32
    GB). Partitions, GPU requests, runtimes, executor and the rest are the real profile's. Added:
    the status command of a cluster without slurmdbd (squeue), short status polling, and keeping
    SLURM's job logs. No account is given: the plugin's guess (sacct) fails and it submits without
    one, which this cluster accepts."""
    profile = yaml.safe_load(PROFILE.read_text())
    mem_cap = min(2000, int(hardware["RealMemory"]) // 4)
    cpus = int(hardware["CPUs"])
    for resources in [profile.get("default-resources", {}), *profile.get("set-resources", {}).values()]:
        if "cpus_per_task" in resources:
            resources["cpus_per_task"] = min(int(resources["cpus_per_task"]), cpus)
        if "mem_mb" in resources:
            resources["mem_mb"] = min(int(resources["mem_mb"]), mem_cap)
    for rule, threads in profile.get("set-threads", {}).items():
        profile["set-threads"][rule] = min(int(threads), cpus)
    profile.update(
        {
            "slurm-status-command": "squeue",
            "slurm-init-seconds-before-status-checks": 2,
            "seconds-between-status-checks": 2,
            "slurm-keep-successful-logs": True,
        }
    )
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


def _start_snakemake(workdir: Path, *args: str, env=None) -> subprocess.Popen:
    """snakemake on the tiny config in `workdir`, its output in `workdir`/snakemake.out."""
    with open(workdir / "snakemake.out", "w") as out:
        return subprocess.Popen(
            [
                sys.executable, "-m", "snakemake",
                "--snakefile", str(ROOT / "Snakefile"),
                "--configfile", str(CONFIGS / "tiny.yaml"),
                "--directory", str(workdir),
                *args,
            ],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=workdir,
        )


def _finish(proc: subprocess.Popen, workdir: Path, timeout: float = 1800) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = (workdir / "snakemake.out").read_text(errors="replace")
    assert proc.returncode == 0, out[-8000:]
    return out


def _scontrol_job(cluster: Cluster, jobid: str) -> dict[str, str]:
    out = cluster.run("scontrol", "show", "job", "-d", "-o", jobid).stdout
    return dict(m.groups() for m in re.finditer(r"(\w[\w/:]*)=(\S*)", out))


RUNS = [f"results/runs/dw4/egnn/{loss}/seed0" for loss in ("fm", "eqotfm")]
# What may differ between two runs of the same config: timings, and the run's stamp (when, at
# which commit: others may commit while it runs).
VOLATILE = re.compile(r"time|per_s|created_utc|git_commit")


def _stable(value):
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if not VOLATILE.search(k)}
    return value


def test_tiny_pipeline_through_a_real_slurm_cluster_equals_a_local_run(slurm_cluster, tmp_path):
    cluster = slurm_cluster
    slurm_dir, local_dir = tmp_path / "slurm", tmp_path / "local"
    slurm_dir.mkdir()
    local_dir.mkdir()
    profile = _test_profile(tmp_path / "profile", cluster.hardware)

    # The local run of the same config (only as far as the compared files) runs meanwhile: the
    # SLURM run spends most of its time starting job steps and waiting for status checks.
    local = _start_snakemake(local_dir, "--cores", "2", *[f"{run}/metrics.json" for run in RUNS])
    try:
        out = _finish(_start_snakemake(slurm_dir, "--workflow-profile", str(profile), env=cluster.env), slurm_dir)
    except BaseException:
        local.kill()
        local.wait()
        raise
    local_out = _finish(local, local_dir)
    assert "has been submitted with SLURM jobid" not in local_out

    # Every job but `all` was submitted to SLURM: snakemake's job id -> SLURM job id -> rule.
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", out))
    rule_of = {}
    for m in re.finditer(r"^rule (\w+):\n((?:    .*\n)+)", out, flags=re.M):
        jid = re.search(r"^    jobid: (\d+)$", m.group(2), flags=re.M)
        if jid:
            rule_of[jid.group(1)] = m.group(1)
    expected = {"reference_data": 1, "coupling_cost": 1, "train": 2, "sample": 2, "evaluate": 2, "mcmc": 2,
                "collect": 1, "table": 1, "plot": 1, "headline": 1, "claims": 1, "html_report": 1}
    counts: dict[str, int] = {}
    for job in submitted:
        counts[rule_of[job]] = counts.get(rule_of[job], 0) + 1
    assert counts == expected, (counts, out[-4000:])
    assert re.search(r"^localrule all:", out, flags=re.M)

    # SLURM's own record of each job: finished, in the profile's partition, GPUs where promised.
    listed = cluster.run("squeue", "-h", "-t", "all", "-o", "%i %P %T").stdout.split("\n")
    listed = {line.split()[0]: line for line in listed if line.strip()}
    assert set(listed) == set(submitted.values()), listed
    records = {}
    for job, slurm_id in submitted.items():
        info = _scontrol_job(cluster, slurm_id)
        rule = rule_of[job]
        records[slurm_id] = (rule, info)
        assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (rule, info)
        assert info["Comment"].startswith(f"rule_{rule}"), info["Comment"]
        if rule in GPU_RULES:
            assert info["Partition"] == "gpu", (rule, info)
            assert info.get("TresPerJob") == "gres:gpu:1", (rule, info)  # what sbatch asked
            assert info.get("JOB_GRES") == "gpu:1", (rule, info)  # what the node gave
        else:
            assert info["Partition"] == "cpu", (rule, info)
            assert "gpu" not in info.get("TresPerJob", "") + info.get("JOB_GRES", ""), (rule, info)
        assert listed[slurm_id].split()[1:] == [info["Partition"], "COMPLETED"], listed[slurm_id]
    # ...and in the job-completion log slurmctld wrote (it outlives the controller's memory).
    jobcomp = {
        m.group(1): m.group(0)
        for m in re.finditer(r"^JobId=(\d+) .*$", cluster.jobcomp.read_text(), flags=re.M)
    }
    for slurm_id, (rule, info) in records.items():
        line = jobcomp[slurm_id]
        assert "JobState=COMPLETED" in line and f"Partition={info['Partition']}" in line, line
    train_id = next(i for i, (rule, _) in records.items() if rule == "train")
    print(f"\nSLURM job {train_id} (train):\n" + cluster.run("scontrol", "show", "job", "-d", train_id).stdout)
    print("jobcomp:", jobcomp[train_id])
    print("squeue -t all:", *listed.values(), sep="\n  ")

    # The same numbers as the local run, bit for bit (CPU runs are deterministic): the data, the
    # trained weights, the samples and every metric but timings and the run's stamp.
    import torch

    with np.load(slurm_dir / "results/data/dw4/train.npz") as s, np.load(local_dir / "results/data/dw4/train.npz") as l:
        assert sorted(s.files) == sorted(l.files)
        for name in s.files:
            np.testing.assert_array_equal(s[name], l[name], err_msg=f"data {name}")
    for run in RUNS:
        s_model = torch.load(slurm_dir / run / "model.pt", map_location="cpu", weights_only=False)
        l_model = torch.load(local_dir / run / "model.pt", map_location="cpu", weights_only=False)
        assert s_model["state_dict"].keys() == l_model["state_dict"].keys()
        for name, tensor in s_model["state_dict"].items():
            assert torch.equal(tensor, l_model["state_dict"][name]), f"{run} {name}"
        with np.load(slurm_dir / run / "samples.npz") as s, np.load(local_dir / run / "samples.npz") as l:
            assert sorted(s.files) == sorted(l.files)
            for name in s.files:
                if not VOLATILE.search(name):
                    np.testing.assert_array_equal(s[name], l[name], err_msg=f"{run} {name}")
        s_metrics = json.loads((slurm_dir / run / "metrics.json").read_text())
        l_metrics = json.loads((local_dir / run / "metrics.json").read_text())
        assert _stable(s_metrics) == _stable(l_metrics), run
        assert len(_stable(s_metrics)) > 50  # nearly all of them are compared
    # The SLURM run went on to the tables, figures and report.
    from test_pipeline import assert_report_embeds_the_figures_and_tables

    assert_report_embeds_the_figures_and_tables((slurm_dir / "results" / "report.html").read_text(), "dw4")
    assert "eqotfm" in (slurm_dir / "results" / "tables" / "dw4" / "summary.md").read_text()
