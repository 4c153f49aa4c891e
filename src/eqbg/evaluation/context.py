"""What every metric of one set of samples reads: the samples, the test split, their energies,
failures and importance weights, computed once (:meth:`EvaluationContext.build`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch

from eqbg.evaluation.nll import subset_indices
from eqbg.evaluation.weights import (
    FailedSamples,
    find_failed_samples,
    kish_ess,
    log_importance_weights,
    normalised_weights,
)
from eqbg.flows import DENSITY_KINDS
from eqbg.systems.observables import HasChirality

__all__ = ["EvaluationContext", "compute_energies", "log_q_density"]


def compute_energies(
    system, x: np.ndarray | torch.Tensor, batch_size: int = 4096, device: str = "cpu"
) -> np.ndarray:
    """Reduced target energies ``u(x)`` (kT) in float64, batched, without autograd.

    Args:
        system: an ``eqbg.systems.System``.
        x: ``(N, n, d)`` positions.

    Returns:
        ``(N,)`` float64 energies (non-finite values are passed through, not hidden).
    """
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(device=device, dtype=torch.float64)
            out.append(system.energy(xb).detach().cpu().double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def log_q_density(samples: Mapping[str, Any]) -> tuple[str, int | None]:
    """``(kind, K)`` of the samples' ``log_q``: their ``density`` field (older files say only
    ``exact``: true means an exact trace, false a Hutchinson estimate).

    Raises:
        ValueError: a ``stochastic`` log q, which must never enter importance weights.
    """
    if "density" in samples:
        density = str(np.asarray(samples["density"]))
    else:
        density = "exact" if bool(np.asarray(samples.get("exact", True))) else "stochastic"
    if density not in DENSITY_KINDS:
        raise ValueError(f"samples: unknown log_q density kind {density!r}; known: {DENSITY_KINDS}")
    if density == "stochastic":
        raise ValueError(
            "samples: log_q is a stochastic estimate (e.g. a Hutchinson trace), which cannot be "
            "used for importance weights; sample with the exact density (sample: {exact: true})"
        )
    k = int(np.asarray(samples.get("density_k", 0)))
    return density, (k if density == "estimate" else None)


@dataclass
class EvaluationContext:
    """One set of samples against the test split, with what the metrics share.

    ``u_data_all`` is ``NaN`` where a test energy was not computed; a metric that needs more of
    them fills them in (the NLL's subset), and the count of energy evaluations reads the result.
    """

    system: Any  #: the target (``eqbg.systems.System``, energies in kT)
    samples: Mapping[str, Any]  #: ``samples.npz`` contents (timings, NFE, path length)
    x: np.ndarray  #: ``(N, n, d)`` samples
    log_q: np.ndarray  #: ``(N,)`` float64 model log density of the samples
    x_test: np.ndarray  #: ``(M, n, d)`` test configurations
    cfg: dict[str, Any]  #: resolved evaluation settings (``eqbg.evaluation.settings``)
    flow: Any | None  #: the trained model (test NLL, forward ESS), or None
    loss: str | None  #: the training loss' name
    train_curve: pd.DataFrame | None  #: ``train.csv``
    u_flow: np.ndarray  #: ``(N,)`` energies of the samples, kT
    u_data: np.ndarray  #: energies of the energy subset of the test split, kT
    u_data_all: np.ndarray  #: ``(M,)`` test energies, NaN where not computed
    failed: FailedSamples  #: samples with non-finite or capped energy or non-finite log q
    log_w: np.ndarray  #: ``(N,)`` log importance weights ``-u - log q``
    flow_energy_time_s: float  #: seconds spent on the samples' energies
    energy_time_s: float  #: seconds spent on the samples' and the test subset's energies

    @classmethod
    def build(cls, system, samples: Mapping[str, Any], x_test: np.ndarray | torch.Tensor, cfg: dict[str, Any],
              *, flow=None, loss: str | None = None, train_curve: pd.DataFrame | None = None,
              ) -> EvaluationContext:
        """Check the arrays, compute the energies and the importance weights.

        Raises:
            ValueError: the samples' ``x`` and ``log_q`` or the test data do not fit together.
        """
        x = np.asarray(samples["x"])
        log_q = np.asarray(samples["log_q"], dtype=np.float64)
        if x.ndim != 3 or x.shape[0] != log_q.shape[0]:
            raise ValueError(f"samples: x {x.shape} and log_q {log_q.shape} do not describe the same batch")
        x_test = x_test.detach().cpu().numpy() if isinstance(x_test, torch.Tensor) else np.asarray(x_test)
        if x_test.shape[1:] != x.shape[1:]:
            raise ValueError(f"test data {x_test.shape} and samples {x.shape} differ in configuration shape")
        t0 = time.perf_counter()
        u_flow = compute_energies(system, x, cfg["energy_batch_size"], cfg["device"])
        flow_energy_time = time.perf_counter() - t0
        m = x_test.shape[0]
        i_energy = subset_indices(m, cfg["energy_test_n"], cfg["nll_seed"])
        u_data = compute_energies(system, x_test[i_energy], cfg["energy_batch_size"], cfg["device"])
        u_data_all = np.full(m, np.nan)
        u_data_all[i_energy] = u_data
        energy_time = time.perf_counter() - t0
        return cls(
            system=system, samples=samples, x=x, log_q=log_q, x_test=x_test, cfg=cfg, flow=flow, loss=loss,
            train_curve=train_curve, u_flow=u_flow, u_data=u_data, u_data_all=u_data_all,
            failed=find_failed_samples(u_flow, log_q, cfg["energy_cap"]),
            log_w=log_importance_weights(u_flow, log_q),
            flow_energy_time_s=flow_energy_time, energy_time_s=energy_time,
        )

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.x.shape[0])

    @property
    def m(self) -> int:
        """Number of test configurations."""
        return int(self.x_test.shape[0])

    @property
    def ok(self) -> np.ndarray:
        """``(N,)`` bool: the samples that did not fail."""
        return ~self.failed.mask

    @cached_property
    def ess(self) -> float:
        """Kish's ESS of the importance weights, a fraction of ``n`` (failed samples weigh ~0)."""
        return kish_ess(self.log_w)[0]

    @cached_property
    def weights(self) -> np.ndarray:
        """``(N,)`` self-normalised importance weights; zeros when no weight is finite."""
        return normalised_weights(self.log_w) if np.isfinite(self.log_w).any() else np.zeros(self.n)

    @cached_property
    def observable_positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(x, x_test, was_d, was_d_test)`` for the dihedral observables: chiral systems'
        D-configurations mirrored into L (``system.map_to_l``, exact for the symmetrised target),
        others unchanged (``was_d`` all false)."""
        if not isinstance(self.system, HasChirality):
            return self.x, self.x_test, np.zeros(self.n, bool), np.zeros(self.m, bool)
        x_obs, was_d = self.system.map_to_l(self.x)
        x_test_obs, was_d_test = self.system.map_to_l(self.x_test)
        return x_obs, x_test_obs, was_d, was_d_test
