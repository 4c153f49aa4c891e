"""Reference data of targets with an exact sampler (GMM-40, Many-Well-32): independent draws,
checked against the exact mean energy and by the configurational temperature."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from eqbg.data import diagnostics as dg
from eqbg.data.settings import SPLITS

__all__ = ["describe", "sample"]


def describe(settings: Mapping[str, Any]) -> str:
    """One line for ``provenance.json``."""
    return "exact sampler of the system"


def sample(system, s: dict[str, Any], seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(splits {train, val, test: (N, n, d)}, diagnostics)``, ``system.sample`` per split."""
    gen = torch.Generator().manual_seed(seed)
    data = {}
    for split in SPLITS:
        data[split] = system.sample(s["splits"][split], generator=gen).detach().to(torch.float64).cpu().numpy()
    diag: dict[str, Any] = {"sampler": "exact", "log_z": float(system.log_z)}
    all_x = torch.as_tensor(np.concatenate([data[k] for k in SPLITS]))
    with torch.no_grad():
        e = system.energy(all_x).numpy()
    diag["energy"] = {"mean": float(e.mean()), "std": float(e.std()), "min": float(e.min()), "max": float(e.max()),
                      "se": float(e.std() / math.sqrt(len(e)))}
    exact_mean = getattr(system, "mean_energy", None)  # System.mean_energy: None if unknown
    if exact_mean is not None:
        m = float(exact_mean)
        diag["energy"]["exact_mean"] = m
        diag["energy"]["mean_z"] = (diag["energy"]["mean"] - m) / diag["energy"]["se"]
    n_ct = min(s["conf_temp_samples"], len(all_x))
    if n_ct > 0:
        # independent draws: a batch-means error is exact enough; this checks sample() against energy()
        diag["conf_temp"] = dg.configurational_temperature(system.energy, all_x[:n_ct])
    return data, diag
