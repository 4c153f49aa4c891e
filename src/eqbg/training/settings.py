"""Settings for training and sampling runs: dataclasses with documented defaults.

Settings arrive as plain dicts (from ``config.yaml`` through Snakemake); :func:`resolve` fills in
defaults and rejects unknown keys with a message that lists the valid ones, so a typo fails at
once instead of silently using a default. Every field below is one config key; its comment is
the documentation the JSON schema is written from.

``train_run(..., settings)`` takes ``{"model": {...}, "ode": {...}, "training": {...}}``;
``sample_run(..., settings)`` takes a flat dict of :class:`SamplingSettings` keys.
Model settings depend on the model name (see :mod:`eqbg.training.models`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

__all__ = [
    "ODESettings",
    "TrainingSettings",
    "SamplingSettings",
    "resolve",
    "resolve_run_settings",
    "resolve_device",
    "resolve_dtype",
    "LOSSES",
    "SettingsError",
]

#: Training objectives implemented by :mod:`eqbg.training.losses`.
LOSSES = ("ml", "fm", "otfm", "eqotfm")


class SettingsError(ValueError):
    """Invalid or unknown settings key/value."""


@dataclass
class ODESettings:
    """How the CNF is integrated for validation/evaluation (the flow's stored defaults)."""

    method: str = "dopri5"  #: torchdiffeq solver: dopri5, dopri8, bosh3, ... or euler/midpoint/rk4
    atol: float = 1e-5  #: absolute tolerance (adaptive solvers)
    rtol: float = 1e-5  #: relative tolerance (adaptive solvers)
    n_steps: int | None = None  #: uniform steps for fixed-step solvers (None for adaptive)
    trace_method: str = "auto"  #: exact trace implementation (auto, loop, batched_vjp, jacrev, jvp)
    trace_chunk_size: int | None = None  #: vmap chunk for the exact trace (memory bound)
    probe: str = "rademacher"  #: Hutchinson probe for ML training (rademacher, gaussian)
    adjoint_seminorm: bool = True  #: seminorm in the adjoint pass (fewer backward steps)


@dataclass
class TrainingSettings:
    """Optimisation, checkpointing and validation of one training run."""

    steps: int = 2000  #: optimiser steps (total, including resumed ones)
    batch_size: int = 128  #: samples per step (the minibatch the couplings pair up)
    lr: float = 5e-4  #: peak learning rate
    optimizer: str = "adam"  #: adam or adamw
    weight_decay: float = 0.0  #: decoupled for adamw, L2 for adam
    betas: tuple[float, float] = (0.9, 0.999)  #: Adam betas
    schedule: str = "cosine"  #: constant, cosine or warmup (linear warmup then constant)
    warmup_steps: int = 0  #: linear warmup from 0 (used by all schedules when > 0)
    min_lr_ratio: float = 0.0  #: cosine floor as a fraction of lr
    grad_clip: float | None = None  #: max global grad norm (None: no clipping)
    ema_decay: float | None = None  #: EMA of weights (e.g. 0.999); the EMA weights are saved
    sigma: float = 0.01  #: flow-matching noise: x_t = (1-t) x0 + t x1 + sigma * eps (EFM 0.01)
    n_train: int | None = None  #: use this many training samples (random subset; None: all)
    checkpoint_every: int = 500  #: write run_dir/checkpoint.pt every K steps (and at the end)
    val_every: int = 500  #: validation NLL every V steps (0: never; model.pt = final weights)
    val_size: int = 256  #: held-out val configurations used for the validation NLL
    val_exact: bool = True  #: exact divergence for validation (else Hutchinson)
    val_method: str = "dopri5"  #: solver for validation NLL
    val_atol: float = 1e-4  #: loose validation tolerances: fast, still ranks checkpoints
    val_rtol: float = 1e-4  #: see val_atol
    val_batch_size: int | None = None  #: integrate the val set in chunks (None: all at once)
    ml_method: str = "dopri5"  #: solver for maximum-likelihood training (adjoint)
    ml_atol: float = 1e-4  #: ML training tolerance (E-NF used 1e-4)
    ml_rtol: float = 1e-4  #: see ml_atol
    eqot_init: str = "pca"  #: equivariant-OT local-search start: pca, pca-all, identity
    eqot_max_iter: int = 20  #: cap on Hungarian/Kabsch alternations per pair
    eqot_exhaustive_limit: int = 120  #: enumerate within-type permutations up to this many
    device: str = "auto"  #: cpu, cuda, cuda:N or auto
    dtype: str = "float32"  #: float32 or float64
    num_threads: int | None = None  #: torch.set_num_threads for this run (None: leave)
    progress: bool = True  #: tqdm progress bar


@dataclass
class SamplingSettings:
    """Drawing samples with exact log densities from a trained flow (``sample_run``)."""

    method: str = "dopri5"  #: torchdiffeq solver
    atol: float = 1e-5  #: absolute tolerance (adaptive)
    rtol: float = 1e-5  #: relative tolerance (adaptive)
    n_steps: int | None = None  #: steps for fixed-step solvers
    batch_size: int | None = 1000  #: samples integrated at once
    exact: bool = True  #: exact divergence (required for importance weights)
    device: str = "auto"  #: cpu, cuda, cuda:N or auto
    dtype: str = "float32"  #: float32 or float64
    num_threads: int | None = None  #: torch.set_num_threads (None: leave)


T = TypeVar("T")


def resolve(cls: type[T], given: Mapping[str, Any] | None, where: str) -> T:
    """Instantiate settings dataclass ``cls`` from ``given``, rejecting unknown keys."""
    given = dict(given or {})
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise SettingsError(f"unknown {where} setting(s) {unknown}; valid keys: {sorted(names)}")
    if "betas" in given and given["betas"] is not None:
        given["betas"] = tuple(float(b) for b in given["betas"])
    obj = cls(**given)
    _validate(obj, where)
    return obj


def _validate(obj: Any, where: str) -> None:
    def bad(msg: str) -> None:
        raise SettingsError(f"{where}: {msg}")

    if isinstance(obj, TrainingSettings):
        if obj.steps < 0:
            bad(f"steps must be >= 0, got {obj.steps}")
        if obj.batch_size < 1:
            bad(f"batch_size must be >= 1, got {obj.batch_size}")
        if not obj.lr > 0:
            bad(f"lr must be > 0, got {obj.lr}")
        if obj.optimizer not in ("adam", "adamw"):
            bad(f"optimizer must be 'adam' or 'adamw', got {obj.optimizer!r}")
        if obj.schedule not in ("constant", "cosine", "warmup"):
            bad(f"schedule must be constant, cosine or warmup, got {obj.schedule!r}")
        if obj.checkpoint_every < 1:
            bad(f"checkpoint_every must be >= 1, got {obj.checkpoint_every}")
        if obj.val_every < 0:
            bad(f"val_every must be >= 0, got {obj.val_every}")
        if obj.eqot_init not in ("pca", "pca-all", "identity"):
            bad(f"eqot_init must be pca, pca-all or identity, got {obj.eqot_init!r}")
        if obj.ema_decay is not None and not 0.0 < obj.ema_decay < 1.0:
            bad(f"ema_decay must lie in (0, 1), got {obj.ema_decay}")
        if obj.sigma < 0:
            bad(f"sigma must be >= 0, got {obj.sigma}")
    if hasattr(obj, "dtype") and obj.dtype not in ("float32", "float64"):
        bad(f"dtype must be float32 or float64, got {obj.dtype!r}")
    if hasattr(obj, "device"):
        resolve_device(obj.device)


def resolve_run_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Split ``{"model", "ode", "training"}`` and resolve the ``ode``/``training`` parts."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - {"model", "ode", "training"})
    if unknown:
        raise SettingsError(
            f"unknown top-level training setting(s) {unknown}; valid: ['model', 'ode', 'training']"
        )
    return {
        "model": dict(settings.get("model") or {}),
        "ode": resolve(ODESettings, settings.get("ode"), "ode"),
        "training": resolve(TrainingSettings, settings.get("training"), "training"),
    }


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SettingsError(f"device {device!r} requested but CUDA is not available")
    if not (device == "cpu" or device.startswith("cuda")):
        raise SettingsError(f"device must be cpu, cuda, cuda:N or auto, got {device!r}")
    return torch.device(device)


def resolve_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


def asdict(obj: Any) -> dict[str, Any]:
    """Dataclass to a JSON-friendly dict (tuples become lists)."""
    out = dataclasses.asdict(obj)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
