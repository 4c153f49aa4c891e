"""Settings of training runs: a dataclass with documented defaults.

Settings arrive as plain dicts (from ``config.yaml`` through Snakemake); :func:`eqbg.settings.
resolve` fills in defaults and rejects unknown keys with a message that lists the valid ones.
Every field below is one config key (section ``train:``); its comment is the documentation the
JSON schema is written from.

``train_run(..., settings)`` takes ``{"model": {...}, "loss": {...}, "ode": {...}, "training":
{...}}``. Model settings depend on the model (:mod:`eqbg.flows.registry`), loss settings on the
loss (:mod:`eqbg.losses.registry`), ODE settings are :class:`eqbg.flows.ODESettings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eqbg.flows.solver import ODESettings, SolverSettings
from eqbg.losses import resolve_loss_settings
from eqbg.settings import SettingsError, asdict, resolve, resolve_device, resolve_dtype

__all__ = [
    "TrainingSettings", "MOVED_TRAINING_KEYS", "RENAMED_TRAINING_KEYS", "moved_training_key",
    "resolve_run_settings",
]

#: training keys of earlier configs that are a loss's settings now: old key -> (losses, new key)
MOVED_TRAINING_KEYS: dict[str, tuple[tuple[str, ...], str]] = {
    "sigma": (("fm", "otfm", "eqotfm"), "sigma"),
    **{f"ml_{k}": (("ml",), k) for k in ("method", "atol", "rtol", "n_steps", "divergence", "exact_max_dim")},
    **{f"eqot_{k}": (("eqotfm",), k) for k in ("init", "max_iter", "exhaustive_limit", "restarts", "reflections")},
    **{f"fab_{k}": (("fab",), k) for k in ("buffer", "buffer_batches", "buffer_min_batches", "updates_per_ais", "weight_clip")},
    "fab_alpha": (("fab",), "ais.alpha"),
    **{f"ais_{k}": (("fab",), f"ais.{k}") for k in (
        "n_intermediate", "spacing", "transition", "n_leapfrog", "n_outer", "step_size", "adapt",
        "target_accept", "adapt_factor")},
}


#: training keys of earlier configs that are in a section of the training settings now
RENAMED_TRAINING_KEYS: dict[str, str] = {
    f"val_{k}": f"val_solver.{k}" for k in ("method", "atol", "rtol", "n_steps")
}


def moved_training_key(key: str, where: str = "train") -> str | None:
    """What to write instead of the training key ``key`` of an earlier config (``None`` when it
    did not move): the loss settings or the training section that hold it now."""
    if key in RENAMED_TRAINING_KEYS:
        section, leaf = RENAMED_TRAINING_KEYS[key].split(".")
        return (f"{where}.{key} is {where}.{section}.{leaf} now: write "
                f"`{where.rsplit('.', 1)[-1]}: {{{section}: {{{leaf}: ...}}}}`")
    if key not in MOVED_TRAINING_KEYS:
        return None
    losses, new = MOVED_TRAINING_KEYS[key]
    *section, leaf = new.split(".")
    value = "{" + leaf + ": ...}"
    for name in reversed(section):
        value = "{" + f"{name}: {value}" + "}"
    return (
        f"{where}.{key} is a setting of the loss {' / '.join(losses)} now: write "
        f"`loss: {value}` in an override whose `when:` names the loss, or set "
        f"`defaults.loss.<{'|'.join(losses)}>.{new}`"
    )


@dataclass
class TrainingSettings:
    """Optimisation, checkpointing and validation of one training run."""

    steps: int = 2000  #: optimiser steps (total, including resumed ones)
    batch_size: int = 128  #: samples per step (the minibatch the couplings pair up)
    lr: float = 5e-4  #: peak learning rate
    optimizer: str = "adam"  #: adam or adamw
    weight_decay: float = 0.0  #: decoupled for adamw, L2 for adam
    betas: tuple[float, float] = (0.9, 0.999)  #: Adam betas
    amsgrad: bool = False  #: AMSGrad variant of Adam / AdamW (E-NF trains with it)
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
    n_train: int | None = None  #: use this many training samples (random subset; None: all)
    #: rotate (proper rotations) and relabel (within atom types) every training configuration
    #: at random each step: teaches a non-equivariant model the target's symmetries
    augment: bool = False
    checkpoint_every: int = 500  #: write run_dir/checkpoint.pt every K steps (and at the end)
    val_every: int = 500  #: validation NLL every V steps (0: never; model.pt = final weights)
    val_size: int = 256  #: held-out val configurations used for the validation NLL
    val_exact: bool = True  #: exact divergence for validation (else Hutchinson)
    #: solver of the validation NLL; loose tolerances by default: fast, still ranks checkpoints
    val_solver: SolverSettings = field(default_factory=lambda: SolverSettings(atol=1e-4, rtol=1e-4))
    val_batch_size: int | None = None  #: integrate the val set in chunks (None: all at once)
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
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            bad(f"ema_decay must lie in (0, 1), got {self.ema_decay}")
        try:
            self.val_solver.validate()
        except SettingsError as err:
            bad(f"val_solver: {err}")
        resolve_dtype(self.dtype)
        resolve_device(self.device)

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


def resolve_run_settings(settings: Mapping[str, Any] | None, loss: str) -> dict[str, Any]:
    """Split ``{"model", "loss", "ode", "training"}`` and resolve the ``loss`` (the settings of
    loss ``loss``), ``ode`` and ``training`` parts; a training key that moved to a loss's
    settings is refused with its new place."""
    settings = dict(settings or {})
    sections = ["model", "loss", "ode", "training"]
    unknown = sorted(set(settings) - set(sections))
    if unknown:
        raise SettingsError(f"unknown top-level training setting(s) {unknown}; valid: {sections}")
    training = dict(settings.get("training") or {})
    for key in training:
        message = moved_training_key(key, "training")
        if message is not None:
            raise SettingsError(message)
    return {
        "model": dict(settings.get("model") or {}),
        "loss": resolve_loss_settings(loss, settings.get("loss")),
        "ode": resolve(ODESettings, settings.get("ode"), "ode"),
        "training": resolve(TrainingSettings, training, "training"),
    }
