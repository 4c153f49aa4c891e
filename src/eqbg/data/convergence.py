"""Convergence of the reference samplers: the energy chains' IAT, ESS, split R-hat and drift,
the thresholds that decide whether a dataset is written, and the one-line log of them."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from eqbg.data import diagnostics as dg

__all__ = ["check_convergence", "energy_chain_diagnostics", "log_diagnostics"]

log = logging.getLogger(__name__)


def check_convergence(diag: Mapping[str, Any], thresholds: Mapping[str, float]) -> list[str]:
    """List of failed checks (empty when converged); each entry names the diagnostic and value."""
    fails: list[str] = []
    rhat = diag.get("rhat")
    if rhat is not None and not (rhat <= thresholds["rhat_max"]):
        fails.append(f"split R-hat of the energy {rhat:.4f} > rhat_max {thresholds['rhat_max']}")
    ct = diag.get("conf_temp")
    if ct is not None:
        v, se = ct["value"], ct["se"]
        dev = abs(v - 1.0)
        if not math.isfinite(v):
            fails.append(f"configurational temperature is not finite ({v})")
        elif dev > thresholds["conf_temp_k_se"] * se and dev > thresholds["conf_temp_tol"]:
            fails.append(
                f"configurational temperature {v:.4f} +- {se:.4f} is more than "
                f"{thresholds['conf_temp_k_se']} SE and {thresholds['conf_temp_tol']} away from 1"
            )
    ess = diag.get("ess")
    if ess is not None and not (ess >= thresholds["min_ess"]):
        fails.append(f"effective sample size of the energy {ess:.1f} < min_ess {thresholds['min_ess']}")
    acc = diag.get("acceptance")
    if acc is not None:
        if acc["min"] < thresholds["acceptance_min"]:
            fails.append(f"lowest chain acceptance {acc['min']:.3f} < acceptance_min {thresholds['acceptance_min']}")
        if acc["max"] > thresholds["acceptance_max"]:
            fails.append(f"highest chain acceptance {acc['max']:.3f} > acceptance_max {thresholds['acceptance_max']}")
    agreement = diag.get("phi_positive_agreement")
    if agreement is not None and not agreement["agree"] and thresholds.get("phi_agreement") == "fail":
        fails.append(
            f"the phi > 0 state was entered {agreement.get('entries', '?')} times and trajectories "
            f"or splits disagree on its fraction by up to "
            f"{max(agreement['max_z_trajectories'], agreement['max_z_splits']):.1f} standard errors "
            f"(limit {agreement['z_max']}; per split: "
            + ", ".join(f"{k} {v['fraction']:.3f}" for k, v in agreement["per_split"].items())
            + "): the slow coordinate is not converged"
        )
    phi = diag.get("phi_positive_fraction")
    if phi is not None and phi > thresholds["max_phi_positive"]:
        fails.append(
            f"fraction of frames with phi > 0 is {phi:.3f} > max_phi_positive {thresholds['max_phi_positive']} "
            "(D-alanine or a broken setup?)"
        )
    return fails


def energy_chain_diagnostics(e: np.ndarray, thin: int, method: str, rank: bool) -> dict[str, Any]:
    """IAT / ESS / R-hat of ``(n_chains, n)`` energies sampled every ``thin`` steps."""
    tau = np.atleast_1d(dg.integrated_autocorrelation_time(e, method=method))
    pooled = float(dg.integrated_autocorrelation_time(e, method=method, pooled=True))
    return {
        "iat": {
            "unit": "saved samples",
            "mean": float(tau.mean()),
            "median": float(np.median(tau)),
            "max": float(tau.max()),
            "pooled": pooled,
            "mean_in_steps": float(tau.mean() * thin),
        },
        "ess": float(np.sum(e.shape[1] / np.maximum(tau, 1e-12))),
        "rhat": dg.split_rhat(e, rank_normalised=False),
        "rhat_rank": dg.split_rhat(e, rank_normalised=True) if rank else None,
        "energy": {
            "mean": float(e.mean()),
            "std": float(e.std()),
            "min": float(e.min()),
            "max": float(e.max()),
            # drift: mean of the second minus the first half of the saved samples, in units of
            # its standard error (chains as independent replicas)
            "half_drift_z": _half_drift_z(e),
        },
    }


def _half_drift_z(e: np.ndarray) -> float:
    n = e.shape[1] // 2
    if n < 1 or e.shape[0] < 2:
        return math.nan
    d = e[:, n:].mean(axis=1) - e[:, :n].mean(axis=1)
    se = d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean() / se) if se > 0 else 0.0


def log_diagnostics(name: str, diag: Mapping[str, Any]) -> None:
    parts = [f"{name}: sampler={diag.get('sampler')}"]
    if "acceptance" in diag:
        a = diag["acceptance"]
        parts.append(f"acceptance mean {a['mean']:.3f} [{a['min']:.3f}, {a['max']:.3f}]")
    if "iat" in diag:
        parts.append(f"IAT(energy) mean {diag['iat']['mean']:.2f} {diag['iat']['unit']}")
    if "ess" in diag:
        parts.append(f"ESS {diag['ess']:.0f}")
    if diag.get("rhat") is not None:
        parts.append(f"split R-hat {diag['rhat']:.4f}")
    if diag.get("rhat_rank") is not None:
        parts.append(f"rank R-hat {diag['rhat_rank']:.4f}")
    if diag.get("conf_temp") is not None:
        ct = diag["conf_temp"]
        parts.append(f"T_conf {ct['value']:.4f} +- {ct['se']:.4f} (n={ct['n']})")
    if diag.get("phi_positive_fraction") is not None:
        parts.append(f"phi>0 fraction {diag['phi_positive_fraction']:.4f}")
    if "energy" in diag:
        parts.append(f"energy {diag['energy']['mean']:.3f} +- {diag['energy']['std']:.3f}")
    if "wall_time_s" in diag:
        parts.append(f"wall {diag['wall_time_s']:.1f} s")
    log.info("; ".join(parts))
