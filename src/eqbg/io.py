"""Atomic file output and provenance records shared by every stage.

Every file a stage writes goes through these helpers so that an interrupted job never leaves a
half-written output behind, and every output can say what made it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

#: Distributions whose versions are recorded in every provenance block.
TRACKED_PACKAGES = (
    "eqbg",
    "torch",
    "torchdiffeq",
    "pot",
    "openmm",
    "mdtraj",
    "numpy",
    "scipy",
    "pandas",
    "snakemake",
)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; move it onto ``path`` only on success.

    The temporary name keeps the target's suffix so that writers which append one
    (``np.savez``, ``torch.save`` callers, matplotlib) produce exactly that file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.stem}.", suffix=target.suffix
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes 0600 files; give the output the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically. NumPy scalars and arrays are converted."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_to_builtin) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    return json.loads(Path(path).read_text())


def save_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    """Save arrays to an uncompressed ``.npz`` file, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def _to_builtin(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def git_commit(root: str | os.PathLike[str] | None = None) -> str:
    """The commit of the checkout that holds this package (``"unknown"`` outside git); ``+dirty``
    is appended when tracked files have uncommitted changes."""
    cwd = Path(root) if root is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    """Installed versions of :data:`TRACKED_PACKAGES` plus the Python version."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(**fields: Any) -> dict[str, Any]:
    """A provenance record: the caller's ``fields`` (config, seed, sampler settings, ...) plus
    package versions, git commit, host and UTC time."""
    record: dict[str, Any] = dict(fields)
    record["versions"] = package_versions()
    record["git_commit"] = git_commit()
    record["host"] = platform.node()
    record["created_utc"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return record


def jsonable(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Round-trip ``mapping`` through JSON so it can be embedded in another record."""
    return json.loads(json.dumps(dict(mapping), default=_to_builtin))
