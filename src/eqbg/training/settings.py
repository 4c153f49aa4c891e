"""Settings of training runs: a dataclass with documented defaults.

Settings arrive as plain dicts (from ``config.yaml`` through Snakemake); :func:`eqbg.settings.
resolve` fills in defaults and rejects unknown keys with a message that lists the valid ones.
Every field below is one config key (section ``train:``); its comment is the documentation the
JSON schema is written from.

``train_run(..., settings)`` takes ``{"model": {...}, "ode": {...}, "training": {...}}``.
Model settings depend on the model (:mod:`eqbg.flows.registry`), ODE settings are
:class:`eqbg.flows.ODESettings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eqbg.flows.solver import ODESettings, ODESolver
from eqbg.sampling.ais import AISSettings
from eqbg.settings import SettingsError, asdict, resolve, resolve_device, resolve_dtype

__all__ = ["TrainingSettings", "resolve_run_settings"]


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
    warmup_steps: int = 0  #: linear warmup (used by all schedules when > 0)
    warmup_init_ratio: float = 0.0  #: warm-up starts at this fraction of lr (EACF: 2e-5/2e-4 = 0.1)
    min_lr_ratio: float = 0.0  #: cosine floor as a fraction of lr
    grad_clip: float | None = None  #: max global grad norm (None: no clipping)
    #: gradient control (eqbg.training.gradients): norm (clip at grad_clip; a non-finite loss or
    #: norm stops the run) or dynamic (the EACF authors': skip the update when the norm exceeds
    #: grad_skip_factor x the median of the last grad_window norms or is non-finite, else clip
    #: it to grad_clip_factor x that median; non-finite losses are skipped, not fatal)
    grad_clip_mode: str = "norm"
    grad_window: int = 100  #: dynamic mode: gradient norms in the median
    grad_clip_factor: float = 2.0  #: dynamic mode: clip at this many medians
    grad_skip_factor: float = 10.0  #: dynamic mode: skip above this many medians
    ema_decay: float | None = None  #: EMA of weights (e.g. 0.999); the EMA weights are saved
    sigma: float = 0.01  #: flow-matching noise: x_t = (1-t) x0 + t x1 + sigma * eps (EFM 0.01)
    n_train: int | None = None  #: use this many training samples (random subset; None: all)
    #: rotate (proper rotations) and relabel (within atom types) every training configuration
    #: at random each step: teaches a non-equivariant model the target's symmetries
    augment: bool = False
    checkpoint_every: int = 500  #: write run_dir/checkpoint.pt every K steps (and at the end)
    val_every: int = 500  #: validation NLL every V steps (0: never; model.pt = final weights)
    val_size: int = 256  #: held-out val configurations used for the validation NLL
    val_exact: bool = True  #: exact divergence for validation (else Hutchinson)
    val_method: str = "dopri5"  #: solver for validation NLL
    val_atol: float = 1e-4  #: loose validation tolerances: fast, still ranks checkpoints
    val_rtol: float = 1e-4  #: see val_atol
    val_n_steps: int | None = None  #: uniform steps when val_method is a fixed-step solver
    val_batch_size: int | None = None  #: integrate the val set in chunks (None: all at once)
    ml_method: str = "dopri5"  #: solver for maximum-likelihood training (adjoint)
    ml_atol: float = 1e-4  #: ML training tolerance (E-NF used 1e-4)
    ml_rtol: float = 1e-4  #: see ml_atol
    ml_n_steps: int | None = None  #: uniform steps when ml_method is a fixed-step solver
    #: ML divergence: exact, hutchinson, or auto (exact for closed-form fields and for systems
    #: with at most ml_exact_max_dim degrees of freedom, Hutchinson otherwise)
    ml_divergence: str = "auto"
    #: see ml_divergence. The exact trace costs one backward pass per degree of freedom: on DW4
    #: (6) a training step took 3.5x as long as with Hutchinson (EGNN 64x5, batch 64, dopri5
    #: 1e-3), so by default only 1-2 dimensional targets (GMM-40) get it.
    ml_exact_max_dim: int = 2
    eqot_init: str = "pca"  #: equivariant-OT local-search start: pca, pca-all, identity
    eqot_max_iter: int = 20  #: cap on Hungarian/Kabsch alternations per pair
    eqot_exhaustive_limit: int = 120  #: enumerate within-type permutations up to this many
    #: further descents of the equivariant-OT local search, each from another starting rotation
    #: (the other principal-axes sign choices, then random rotations, seeded); each pair keeps
    #: its best. 3 = all four proper sign choices in 3D; time ~ (1 + restarts) x one descent.
    #: bench/README.md: 3 makes the median excess over the exhaustive optimum 0 on 6-7
    #: particles (57-84 % of pairs exact, vs 32-57 % with 0); >= 90 % exact needs 8 (2D) / 64 (3D)
    eqot_restarts: int = 3
    #: align by rotations and reflections (O(d)) instead of rotations only; only for
    #: reflection-invariant targets and reflection-equivariant fields (not alanine dipeptide)
    eqot_reflections: bool = False
    # FAB (eqbg.losses.fab) and its annealed importance sampling (eqbg.sampling.ais); the
    # defaults are the EACF paper's DW4 settings (EACF_FAB.md part B)
    fab_buffer: bool = True  #: prioritised replay buffer (False: FAB without buffer)
    fab_buffer_batches: int = 512  #: buffer capacity, in batches of batch_size
    fab_buffer_min_batches: int = 64  #: initial AIS fill of the buffer, in batches
    fab_updates_per_ais: int = 8  #: gradient steps per AIS pass with the buffer
    fab_weight_clip: float = 10.0  #: cap of the buffer's importance ratios q_old/q
    fab_alpha: float = 2.0  #: the alpha-divergence: AIS targets p^alpha q^(1-alpha)
    ais_n_intermediate: int = 2  #: AIS intermediate distributions M
    ais_spacing: str = "linear"  #: AIS beta spacing: linear or geometric
    ais_transition: str = "hmc"  #: hmc or metropolis
    ais_n_leapfrog: int = 5  #: leapfrog steps per HMC step
    ais_n_outer: int = 1  #: transition steps per intermediate distribution
    ais_step_size: float = 1.0  #: initial HMC step size (Metropolis: proposal scale)
    ais_adapt: bool = True  #: tune HMC step sizes towards ais_target_accept
    ais_target_accept: float = 0.65  #: HMC acceptance the step sizes are tuned towards
    ais_adapt_factor: float = 1.02  #: multiplicative step-size update
    device: str = "auto"  #: cpu, cuda, cuda:N or auto
    dtype: str = "float32"  #: float32 or float64
    num_threads: int | None = None  #: torch.set_num_threads for this run (None: leave)
    progress: bool = True  #: tqdm progress bar
    #: "smoke" when the run was made at smoke size (eqbg.scale; set by the top-level scale,
    #: recorded in config.json); "full" otherwise
    scale: str = "full"


    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise SettingsError(msg)

        if self.steps < 0:
            bad(f"steps must be >= 0, got {self.steps}")
        if self.batch_size < 1:
            bad(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            bad(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in ("adam", "adamw"):
            bad(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine", "warmup"):
            bad(f"schedule must be constant, cosine or warmup, got {self.schedule!r}")
        if self.grad_clip_mode not in ("norm", "dynamic"):
            bad(f"grad_clip_mode must be 'norm' or 'dynamic', got {self.grad_clip_mode!r}")
        if self.grad_window < 1 or not (0 < self.grad_clip_factor <= self.grad_skip_factor):
            bad("grad_window must be >= 1 and 0 < grad_clip_factor <= grad_skip_factor")
        if not 0.0 <= self.warmup_init_ratio <= 1.0:
            bad(f"warmup_init_ratio must lie in [0, 1], got {self.warmup_init_ratio}")
        if self.checkpoint_every < 1:
            bad(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.scale not in ("full", "smoke"):
            bad(f"scale must be full or smoke, got {self.scale!r}")
        if self.val_every < 0:
            bad(f"val_every must be >= 0, got {self.val_every}")
        if self.eqot_init not in ("pca", "pca-all", "identity"):
            bad(f"eqot_init must be pca, pca-all or identity, got {self.eqot_init!r}")
        if self.eqot_restarts < 0:
            bad(f"eqot_restarts must be >= 0, got {self.eqot_restarts}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            bad(f"ema_decay must lie in (0, 1), got {self.ema_decay}")
        if self.sigma < 0:
            bad(f"sigma must be >= 0, got {self.sigma}")
        if self.ml_divergence not in ("auto", "exact", "hutchinson"):
            bad(f"ml_divergence must be auto, exact or hutchinson, got {self.ml_divergence!r}")
        for prefix in ("ml", "val"):
            try:
                getattr(self, f"{prefix}_solver")
            except SettingsError as err:
                bad(f"{prefix}_method/{prefix}_n_steps: {err}")
        try:
            self.ais_settings.validate()
        except SettingsError as err:
            bad(f"ais_*: {err}")
        if min(self.fab_buffer_batches, self.fab_buffer_min_batches, self.fab_updates_per_ais) < 1:
            bad("fab_buffer_batches, fab_buffer_min_batches and fab_updates_per_ais must be >= 1")
        if self.fab_buffer_min_batches > self.fab_buffer_batches:
            bad("fab_buffer_min_batches must not exceed fab_buffer_batches")
        if self.fab_updates_per_ais > self.fab_buffer_min_batches:
            bad("fab_updates_per_ais must not exceed fab_buffer_min_batches (distinct draws per iteration)")
        resolve_dtype(self.dtype)
        resolve_device(self.device)

    @property
    def ais_settings(self) -> AISSettings:
        """Annealed importance sampling of FAB training."""
        return AISSettings(
            n_intermediate=self.ais_n_intermediate, spacing=self.ais_spacing,
            transition=self.ais_transition, n_leapfrog=self.ais_n_leapfrog,
            n_outer=self.ais_n_outer, step_size=self.ais_step_size, adapt=self.ais_adapt,
            target_accept=self.ais_target_accept, adapt_factor=self.ais_adapt_factor,
            alpha=self.fab_alpha,
        )

    @property
    def ml_solver(self) -> ODESolver:
        """Solver of maximum-likelihood training."""
        return ODESolver(self.ml_method, float(self.ml_atol), float(self.ml_rtol), self.ml_n_steps)

    @property
    def val_solver(self) -> ODESolver:
        """Solver of the validation NLL."""
        return ODESolver(self.val_method, float(self.val_atol), float(self.val_rtol), self.val_n_steps)

    def result_key(self) -> dict[str, Any]:
        """The settings that change what training produces: everything but thread counts,
        progress bars and checkpoint intervals (a checkpoint stays valid when only those
        change)."""
        key = asdict(self)
        for name in ("num_threads", "progress", "checkpoint_every"):
            key.pop(name)
        if key["scale"] == "full":
            key.pop("scale")  # checkpoints written before scales existed stay valid
        return key


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
