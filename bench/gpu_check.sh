#!/usr/bin/env bash
# The GPU check (issue 24): one unattended command for a fresh, offline GPU box that has only this
# repository, its own Python 3.12 with a CUDA build of torch, and the wheelhouse that
# bench/gpu_wheelhouse.sh built. About 8 minutes on one GPU. Each step has a time limit, runs on
# when an earlier one failed, and is recorded as ok / failed / skipped (with the reason) in
# OUT/gpu_check.json and OUT/summary.txt; the benchmark JSONs and logs are under OUT too.
#
#   bash bench/gpu_check.sh --wheelhouse DIR [--out DIR] [--python python3.12]
#   bash bench/gpu_check.sh --no-install [--out DIR]   (use the current environment, e.g. .venv)
#
# Steps: install (a venv with the box's site packages, so its torch stays; every wheel of the
# wheelhouse with --no-deps, no network); tests/test_cuda.py; the paper preset at smoke size on
# CUDA (scale: smoke, smoke_device: cuda, eqbg.scale); exact-divergence methods on LJ13 and
# alanine dipeptide EGNNs, CUDA and CPU (what AUTO in eqbg.flows.divergence should say); EACF
# against EGNN CNF sampling with log q; flow-matching training steps per second; the
# equivariant-OT coupling on CUDA (torch-linear-assignment) and on the CPU. Without CUDA the
# CUDA steps are skipped with that reason and the CPU steps run.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="gpu-check-$(date +%Y%m%dT%H%M%S)"
wheelhouse="" install=1 python=${PYTHON:-python3}
while [ $# -gt 0 ]; do
  case $1 in
    --wheelhouse) wheelhouse=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --no-install) install=0; shift ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out/logs" "$out/bench"
out=$(cd "$out" && pwd)
steps="$out/steps.tsv"
: > "$steps"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$steps"; }

# step NAME LIMIT_S COMMAND...: run with a time limit, log, record status and seconds
step() {
  local name=$1 limit=$2 start rc; shift 2
  start=$(date +%s)
  timeout "$limit" "$@" > "$out/logs/$name.log" 2>&1
  rc=$?
  local took=$(( $(date +%s) - start ))
  if [ $rc -eq 0 ]; then record "$name" ok "$took" ""
  elif [ $rc -eq 124 ]; then record "$name" failed "$took" "time limit ${limit}s"
  else record "$name" failed "$took" "exit $rc: $(tail -n 1 "$out/logs/$name.log" | tr '\t' ' ')"
  fi
  echo "$name: $(tail -n 1 "$steps" | cut -f2) (${took}s)"
}
skip() { record "$1" skipped 0 "$2"; echo "$1: skipped ($2)"; }

if [ $install -eq 1 ]; then
  if [ -z "$wheelhouse" ]; then echo "--wheelhouse DIR or --no-install" >&2; exit 2; fi
  step install 300 bash -c "'$python' -m venv --system-site-packages '$out/venv' && \
    '$out/venv/bin/pip' install -q --no-index --no-deps '$wheelhouse'/*.whl"
  py="$out/venv/bin/python"
else
  py=$(command -v python3)
  [ -x "$root/.venv/bin/python" ] && py="$root/.venv/bin/python"
  skip install "--no-install: the current environment ($py)"
fi

cuda=$("$py" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
"$py" - > "$out/environment.json" <<'EOF'
import json, platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
print(json.dumps({"python": platform.python_version(), "torch": torch.__version__,
                  "cuda": torch.version.cuda, "gpu": gpu}))
EOF
no_cuda="no CUDA device (torch.cuda.is_available() is False)"

step test_cuda 240 "$py" -m pytest -q -rs -p no:cacheprovider "$root/tests/test_cuda.py"

if [ "$cuda" = 1 ]; then
  step smoke_paper_cuda 300 "$py" -m snakemake --snakefile "$root/Snakefile" --directory "$out/smoke" \
    --configfile "$root/config.yaml" "$root/workflow/presets/paper.yaml" \
    --config scale=smoke smoke_device=cuda --cores all --resources gpu=8
else
  skip smoke_paper_cuda "$no_cuda; the CPU smoke run of every preset is tests/test_smoke_presets.py"
fi

bench() {  # bench NAME DEVICE LIMIT SCRIPT ARGS...: run bench/SCRIPT, keep its JSON as NAME.json
  local name=$1 device=$2 limit=$3 script=$4; shift 4
  if [ "$device" = cuda ] && [ "$cuda" != 1 ]; then skip "$name" "$no_cuda"; return; fi
  step "$name" "$limit" "$py" "$root/bench/$script" --device "$device" "$@"
  local json="$root/bench/out/${script%.py}.json"
  [ -f "$json" ] && cp "$json" "$out/bench/$name.json"
}

bench divergence_cuda cuda 120 bench_divergence.py --systems lj13 aldp --batches 32 256 \
  --out "$root/bench/out/bench_divergence.json"
bench divergence_cpu cpu 120 bench_divergence.py --systems lj13 aldp --batches 4 --repeats 2 \
  --out "$root/bench/out/bench_divergence.json"
bench sampling_speed_cuda cuda 150 bench_sampling_speed.py --systems dw4 lj13 --n 256 --repeats 2
bench training_cuda cuda 120 bench_training.py --systems dw4 lj13 --losses fm eqotfm --steps 20
bench coupling_cuda cuda 120 bench_coupling.py --systems lj13 lj55 --batch-sizes 64 256 --repeats 2
bench coupling_cpu cpu 120 bench_coupling.py --systems lj13 --batch-sizes 64 --repeats 1 \
  --variants default

"$py" - "$out" <<'EOF'
import csv, json, sys
from pathlib import Path

out = Path(sys.argv[1])
steps = [dict(zip(("step", "status", "seconds", "reason"), row))
         for row in csv.reader(open(out / "steps.tsv"), delimiter="\t")]
benches = {p.stem: json.loads(p.read_text()) for p in sorted((out / "bench").glob("*.json"))}
env = json.loads((out / "environment.json").read_text())
(out / "gpu_check.json").write_text(json.dumps({"environment": env, "steps": steps, "bench": benches}, indent=1))
lines = [f"GPU check: python {env['python']}, torch {env['torch']}, CUDA {env['cuda']}, GPU {env['gpu']}", ""]
lines += [f"{s['step']:22s} {s['status']:8s} {s['seconds']:>5s} s  {s['reason']}" for s in steps]
div = benches.get("divergence_cuda", {}).get("divergence", [])
for row in div:
    best = min((m for m in ("loop", "batched_vjp", "jacrev", "jvp") if row.get(f"{m}_ms")),
               key=lambda m: row[f"{m}_ms"], default=None)
    lines.append(f"divergence {row['system']} B={row['batch']} on CUDA: fastest {best}")
(out / "summary.txt").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
