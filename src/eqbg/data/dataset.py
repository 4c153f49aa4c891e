"""Reference datasets: generation by the system's reference sampler (:mod:`eqbg.data.samplers`),
convergence checks, files and validation.

``make_reference_data`` writes ``out_dir/{train,val,test}.npz`` and ``out_dir/provenance.json``
atomically. Splits never share a chain (MCMC), a time block (MD) or a draw (exact samplers),
because MCMC output contains correlated and repeated states: a random split of pooled chains puts
near-copies of test configurations into the training set (in the DW4 data shipped with DEM, 86 %
of the distinct test configurations also appear in the training set); :mod:`eqbg.data.splits`
makes and checks the splits.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eqbg import io
from eqbg.data.convergence import check_convergence, log_diagnostics
from eqbg.data.samplers import REFERENCE_SAMPLERS
from eqbg.data.settings import SPLITS, resolve_settings
from eqbg.data.splits import assign_chains, check_disjoint, duplicate_fraction
from eqbg.geometry import remove_mean
from eqbg.systems import get_system, system_spec

__all__ = [
    "DatasetError",
    "NotConvergedError",
    "make_reference_data",
    "load_dataset",
    "sampler_for",
    "sampler_description",
    "assign_chains",
    "check_disjoint",
    "check_convergence",
]

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset file is missing, unreadable, or does not match what the caller expects."""


class NotConvergedError(RuntimeError):
    """The reference sampler failed a convergence check; ``diagnostics`` holds all values."""

    def __init__(self, message: str, diagnostics: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.diagnostics = diagnostics or {}


# ----------------------------------------------------------------------------------------- #
# system lookup


def _get_system(system: Any, options: Mapping[str, Any]):
    if isinstance(system, str):
        return get_system(system, **dict(options))
    if options:
        raise ValueError("system_options can only be applied when the system is given by name")
    return system


def sampler_for(system: Any) -> str:
    """The system's ``reference_sampler``: ``"mcmc"``, ``"md"`` or ``"exact"``.

    Accepts a ``System`` (or any object with that attribute) or a registered name.
    """
    if isinstance(system, str):
        return system_spec(system).reference_sampler
    sampler = getattr(system, "reference_sampler", None)
    if sampler not in REFERENCE_SAMPLERS:
        raise ValueError(
            f"system {getattr(system, 'name', system)!r} declares no valid reference_sampler "
            f"({', '.join(map(repr, REFERENCE_SAMPLERS))}), got {sampler!r}"
        )
    return str(sampler)


# ----------------------------------------------------------------------------------------- #
# public entry points


def sampler_description(sampler: str, settings: Mapping[str, Any]) -> str:
    """One-line description of the reference sampler for ``provenance.json`` (the MCMC one names
    the proposal actually used, ``settings["proposal"]``)."""
    return REFERENCE_SAMPLERS[sampler].describe(settings)


def make_reference_data(
    system: Any, settings: Mapping[str, Any] | None, seed: int, out_dir: str | os.PathLike[str]
) -> dict[str, Any]:
    """Generate reference samples, split them, check convergence and write the dataset.

    Args:
        system: a name from ``eqbg.systems.KNOWN_SYSTEMS`` (``settings["system_options"]`` goes
            to ``get_system``) or a ``System`` instance.
        settings: see :mod:`eqbg.data.settings` (unknown keys raise ``ValueError``).
        seed: seeds every random number (torch, NumPy, OpenMM).
        out_dir: folder for ``{train,val,test}.npz`` and ``provenance.json``.

    Returns:
        The diagnostics dict (also in ``provenance.json``).

    Raises:
        NotConvergedError: a convergence check failed (``check_convergence`` true); the
            diagnostics are then written to ``out_dir/diagnostics.failed.json`` and no dataset
            file is written.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    options = dict((settings or {}).get("system_options", {}) or {})
    sys_obj = _get_system(system, options)
    name = sys_obj.name
    sampler = sampler_for(sys_obj)
    s = resolve_settings(sys_obj, sampler, settings)
    log.info("%s: generating reference data with %s (seed %d)", name, sampler, seed)
    torch.manual_seed(seed)
    fn = REFERENCE_SAMPLERS[sampler].sample
    old_threads = torch.get_num_threads()
    if s["num_threads"] is not None:
        torch.set_num_threads(s["num_threads"])
    try:
        data, diag = fn(sys_obj, s, seed)
    finally:
        torch.set_num_threads(old_threads)
    for k in SPLITS:
        x = torch.as_tensor(data[k])
        if sys_obj.com_free:
            x = remove_mean(x)
        data[k] = x.numpy().astype(np.float32)
    check_disjoint(
        {k: np.asarray(v) for k, v in diag.get("chains", {}).items()}, data
    )
    diag["n_samples"] = {k: len(data[k]) for k in SPLITS}
    diag["duplicate_fraction"] = {k: duplicate_fraction(data[k]) for k in SPLITS}
    diag["wall_time_s"] = time.perf_counter() - t0
    fails = check_convergence(diag, s["convergence"])
    diag["converged"] = not fails
    diag["failed_checks"] = fails
    log_diagnostics(name, diag)
    failed_path = out / "diagnostics.failed.json"
    if fails and s["check_convergence"]:
        io.write_json(failed_path, io.provenance(system=name, system_options=options, settings=s, seed=seed,
                                                 diagnostics=io.jsonable(diag)))
        msg = f"{name} reference data not converged: " + "; ".join(fails) + f" (diagnostics in {failed_path})"
        log.error(msg)
        raise NotConvergedError(msg, diag)
    if fails:
        log.warning("%s: convergence checks failed but check_convergence is off: %s", name, "; ".join(fails))
    files = {}
    for k in SPLITS:
        path = out / f"{k}.npz"
        io.save_npz(path, x=data[k], system=np.array(name), split=np.array(k))
        files[k] = {"n": len(data[k]), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    sampler_desc = sampler_description(sampler, s)
    io.write_json(out / "provenance.json", io.provenance(
        system=name, system_options=options, pair_convention=getattr(sys_obj, "pair_convention", None),
        sampler=sampler, sampler_description=sampler_desc, settings=s, seed=seed,
        diagnostics=io.jsonable(diag), files=files,
    ))
    if failed_path.exists():
        failed_path.unlink()
    return diag


def load_dataset(
    path: str | os.PathLike[str], system: Any = None, split: str | None = None
) -> torch.Tensor:
    """Load and validate a dataset file.

    Args:
        path: ``.npz`` written by :func:`make_reference_data`.
        system: expected system (``System`` or name); checks the recorded name, ``(n, d)``
            and, for CoM-free systems, that every configuration has zero mean.
        split: expected split name recorded in the file.

    Returns:
        ``(N, n, d)`` float32 tensor.

    Raises:
        DatasetError: naming the problem and the file.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: dataset file not found")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DatasetError(
            f"{p}: truncated, corrupt or unreadable dataset file ({type(exc).__name__}: {exc}); "
            "delete it to regenerate it"
        ) from exc
    if "x" not in arrays:
        raise DatasetError(f"{p}: no 'x' array (found {sorted(arrays)})")
    x = arrays["x"]
    if x.ndim != 3:
        raise DatasetError(f"{p}: 'x' must have shape (N, n, d), got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise DatasetError(f"{p}: 'x' must be floating point, got {x.dtype}")
    if x.shape[0] == 0:
        raise DatasetError(f"{p}: 'x' is empty")
    if split is not None:
        got = str(arrays["split"]) if "split" in arrays else None
        if got != split:
            raise DatasetError(f"{p}: expected split {split!r}, file says {got!r}")
    sys_obj = None
    if system is not None:
        if isinstance(system, str):
            sys_obj = get_system(system)
        else:
            sys_obj = system
        got = str(arrays["system"]) if "system" in arrays else None
        if got != sys_obj.name:
            raise DatasetError(f"{p}: expected system {sys_obj.name!r}, file says {got!r}")
        expected = (sys_obj.n_particles, sys_obj.spatial_dim)
        if tuple(x.shape[1:]) != expected:
            raise DatasetError(f"{p}: shape {x.shape} does not match system {sys_obj.name} (N, {expected[0]}, {expected[1]})")
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.all(np.isfinite(x.reshape(len(x), -1)), axis=1)))
        raise DatasetError(f"{p}: {bad} configuration(s) contain NaN or inf")
    if sys_obj is not None and sys_obj.com_free:
        com = np.abs(x.astype(np.float64).mean(axis=1)).max()
        scale = max(1.0, float(np.abs(x).max()))
        if com > 1e-4 * scale:
            raise DatasetError(f"{p}: not centre-of-mass free (max |mean position| = {com:.3g}) for CoM-free system {sys_obj.name}")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
