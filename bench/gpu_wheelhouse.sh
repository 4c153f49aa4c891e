#!/usr/bin/env bash
# Build, here (PyPI reachable), the wheelhouse an offline GPU box installs eqbg's dependencies
# from (bench/gpu_check.sh): every package of this checkout's .venv at its pinned version, and the
# `cuda` extra (torch-linear-assignment), as wheels for CPython 3.12 on manylinux x86-64 -- but
# not torch, its CUDA libraries or triton: the box keeps its own CUDA build of torch.
#
#   bash bench/gpu_wheelhouse.sh [OUT_DIR]        (default: wheelhouse-py312)
#
# A package with no 3.12 manylinux wheel on PyPI (a pure-Python sdist) is built here into a
# py3-none-any wheel. Needs the .venv of the README's test command.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-wheelhouse-py312}
pip=${PIP:-$root/.venv/bin/pip}
mkdir -p "$out"

# the pinned set: what the test command installed, plus the cuda extra; minus torch and its GPU stack
reqs=$(mktemp)
"$pip" freeze --exclude-editable --all \
  | grep -viE '^(torch|triton|nvidia-[a-z0-9-]+|eqbg|pip|setuptools|wheel)==' \
  | grep -v '^-e ' > "$reqs"
grep -E '^torch-linear-assignment==' <(python3 - "$root/pyproject.toml" <<'EOF'
import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["cuda"]))
EOF
) >> "$reqs"

# every manylinux tag a current x86-64 box accepts (pip matches --platform tags exactly:
# openmm, for one, ships manylinux_2_34 only)
platforms=(--platform any --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for glibc in $(seq 5 40); do platforms+=(--platform "manylinux_2_${glibc}_x86_64"); done
built=0 downloaded=0
tmp=$(mktemp -d)
trap 'rm -rf "$reqs" "$tmp"' EXIT
while IFS= read -r req; do
  [ -n "$req" ] || continue
  if "$pip" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --abi cp312 --abi abi3 --abi none "${platforms[@]}" -d "$out" "$req" 2>/dev/null; then
    downloaded=$((downloaded + 1))
    continue
  fi
  # no binary for 3.12: a pure-Python sdist, built into a universal wheel here; anything else
  # (a wheel for this machine's Python) would not install on the box
  rm -f "$tmp"/*
  "$pip" wheel -q --no-deps -w "$tmp" "$req"
  for wheel in "$tmp"/*.whl; do
    case $(basename "$wheel") in
      *-py3-none-any.whl | *-py2.py3-none-any.whl) mv "$wheel" "$out/" ;;
      *) echo "no CPython 3.12 manylinux x86-64 wheel for $req on PyPI (got $(basename "$wheel"))" >&2
         exit 1 ;;
    esac
  done
  built=$((built + 1))
done < "$reqs"
echo "wheelhouse $out: $downloaded wheels downloaded, $built built here ($(ls "$out" | wc -l) files)"
