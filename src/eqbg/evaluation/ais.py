"""Annealed importance sampling as a refinement of a trained flow at evaluation.

For a flow with a cheap differentiable density of its sampling state (coupling flows: ``eacf``,
``realnvp``), AIS with ``alpha = 1`` from fresh flow samples towards the target gives importance
weights of the refined samples (FAB's "flow + AIS" ESS). Step sizes: the ones a FAB run trained
(read from its checkpoint, when the number of intermediate distributions and the transition
match), else tuned towards the target acceptance on ``tune_passes`` batches first; they are
frozen while the reported samples are drawn. The cost is reported in target evaluations.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eqbg.evaluation.weights import kish_ess
from eqbg.flows.base import Flow
from eqbg.sampling.ais import AISSettings, AnnealedImportanceSampler
from eqbg.settings import SettingsError, resolve

__all__ = ["RefinementSettings", "supports_ais", "trained_step_sizes", "ais_refinement"]


@dataclass
class RefinementSettings(AISSettings):
    """AIS towards the target from a trained flow's samples (config ``evaluate.ais``): the AIS
    (:class:`~eqbg.sampling.ais.AISSettings`, alpha 1) and how many samples it refines."""

    alpha: float = 1.0  #: the refinement targets p itself: must be 1
    n: int = 1000  #: refined samples reported
    batch_size: int = 500  #: samples per AIS pass
    tune_passes: int = 20  #: HMC step-size tuning passes first (untrained step sizes only)
    seed: int = 0  #: seed of the refinement

    def validate(self) -> None:
        super().validate()
        if self.alpha != 1.0:
            raise SettingsError(f"the refinement targets p: alpha must be 1, got {self.alpha}")
        if self.n < 1 or self.batch_size < 1 or self.tune_passes < 0:
            raise SettingsError("n and batch_size must be >= 1, tune_passes >= 0")


def supports_ais(flow: Any) -> bool:
    """Whether the flow has the differentiable state density AIS needs."""
    return isinstance(flow, Flow) and type(flow).state_log_prob is not Flow.state_log_prob


def trained_step_sizes(checkpoint: str | Path, settings: AISSettings) -> list[float] | None:
    """The HMC step sizes a FAB run adapted (the loss state in its ``checkpoint.pt``), when its
    AIS had the same number of intermediate distributions; else ``None``."""
    path = Path(checkpoint)
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False).get("loss") or {}
    sizes = (state.get("ais") or {}).get("step_sizes")
    return list(sizes) if sizes is not None and len(sizes) == settings.n_intermediate else None


def ais_refinement(
    flow: Any,
    energy: Any,
    options: Mapping[str, Any],
    *,
    checkpoint: str | Path | None = None,
    log_z: float | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """AIS (alpha = 1) from ``n`` flow samples; returns ``(metrics, log_w)``.

    Args:
        flow: a trained flow with ``state_log_prob`` (see :func:`supports_ais`).
        energy: the target's reduced energy ``u(x)``.
        options: :class:`RefinementSettings` keys.
        checkpoint: the run's ``checkpoint.pt``: a FAB run's trained HMC step sizes are taken
            from it (:func:`trained_step_sizes`) instead of tuning.
        log_z: the target's exact log normaliser, where known (adds ``log_z_ais_error``).

    Returns:
        Metrics ``ess_ais`` (Kish, fraction), ``ess_ais_n``, ``ais_n_intermediate``,
        ``ais_transition``, ``ais_step_sizes``, ``ais_step_sizes_from``, ``n_energy_evals_ais``
        (reported samples only), ``n_energy_evals_ais_tuning``, ``ais_time_s``,
        ``ais_n_invalid``, ``ais_acceptance``, ``log_z_ais_estimate`` (and ``log_z_ais_error``);
        and the log weights.
    """
    settings = resolve(RefinementSettings, options, "evaluate.ais")
    ais = AnnealedImportanceSampler(settings)
    _, device = flow.dtype_device()
    gen = torch.Generator(device=device).manual_seed(int(settings.seed))

    def run(num: int, adapt: bool):
        return ais.run_from_flow(flow, energy, num, generator=gen, adapt=adapt)

    step_sizes = trained_step_sizes(checkpoint, settings) if checkpoint is not None else None
    tuning_evals, source = 0, "initial"
    if step_sizes is not None:
        ais.step_sizes, source = [float(e) for e in step_sizes], "trained (FAB checkpoint)"
    elif settings.transition == "hmc" and settings.n_intermediate > 0 and settings.tune_passes > 0:
        for _ in range(int(settings.tune_passes)):
            tuning_evals += run(int(settings.batch_size), adapt=True).n_target_evals
        source = f"tuned on {settings.tune_passes} batches"
    start = time.perf_counter()
    log_w, evals, invalid, acc = [], 0, 0, []
    n, bs = int(settings.n), int(settings.batch_size)
    for s in range(0, n, bs):
        res = run(min(bs, n - s), adapt=False)
        log_w.append(res.log_w.double().cpu())
        evals, invalid = evals + res.n_target_evals, invalid + res.n_invalid
        acc.append(res.acceptance)
    log_w_all = torch.cat(log_w).numpy()
    ess, ess_n = kish_ess(log_w_all)
    metrics = {
        "ess_ais": ess, "ess_ais_n": ess_n,
        "ais_n_intermediate": settings.n_intermediate, "ais_transition": settings.transition,
        "ais_step_sizes": [float(e) for e in ais.step_sizes], "ais_step_sizes_from": source,
        "n_energy_evals_ais": int(evals), "n_energy_evals_ais_tuning": int(tuning_evals),
        "ais_time_s": time.perf_counter() - start, "ais_n_invalid": int(invalid),
        "ais_acceptance": [float(np.mean(a)) for a in zip(*acc)] if acc and acc[0] else [],
    }
    finite = log_w_all[np.isfinite(log_w_all)]
    metrics["log_z_ais_estimate"] = float(np.logaddexp.reduce(finite) - math.log(len(log_w_all))) if finite.size else None
    if log_z is not None and metrics["log_z_ais_estimate"] is not None:
        metrics["log_z_ais_error"] = metrics["log_z_ais_estimate"] - float(log_z)
    return metrics, log_w_all
