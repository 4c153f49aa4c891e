"""A metric of a run with its bootstrap replicates, the raw material of a claim's interval.

With one seed, a metric's replicates come from the run's own data: the samples (ESS: the
evaluation's bootstrap replicates; log Z; modes reached), the test points (NLL), the fixed subset
of single-sample ODE solves (path length and NFE, ``eqbg.evaluation.run``) or the training steps
(seconds per step, from ``train.csv``). With several seeds, the replicates resample the seeds'
point values (bootstrap over seeds). A metric with neither is a point estimate, and the table
says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from eqbg.evaluation.distributions import wasserstein_1d
from eqbg.evaluation.weights import normalised_weights

__all__ = ["Estimate", "RunData", "SeedData", "estimate", "ESTIMATORS", "BOOTSTRAP_REPS"]

#: bootstrap replicates of every estimate
BOOTSTRAP_REPS = 2000


@dataclass(frozen=True)
class Estimate:
    """A metric's point value, its replicates (None: a point estimate) and how they were made."""

    value: float
    replicates: np.ndarray | None
    how: str
    n_samples: int | None = None  #: the run's sample count (for a ``1/n`` threshold)


@dataclass
class SeedData:
    """What the claims read of one seed's run folder."""

    folder: Path
    metrics: dict[str, Any]
    _arrays: Mapping[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def arrays(self) -> Mapping[str, np.ndarray]:
        """``eval.npz`` (empty when absent)."""
        if self._arrays is None:
            path = self.folder / "eval.npz"
            self._arrays = dict(np.load(path, allow_pickle=False)) if path.exists() else {}
        return self._arrays

    def curve(self) -> pd.DataFrame | None:
        path = self.folder / "train.csv"
        return pd.read_csv(path) if path.exists() else None


@dataclass
class RunData:
    """All seeds of one run (``system/model/loss[/variant]``) that have a ``metrics.json``."""

    seeds: list[SeedData]
    #: estimates made so far, by (metric, seed): a run is compared in several checks
    _estimates: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_folder(cls, run_folder: str | Path) -> "RunData":
        """Seeds ``run_folder/seed*/metrics.json``."""
        folders = sorted(Path(run_folder).glob("seed*/metrics.json"))
        return cls([SeedData(p.parent, json.loads(p.read_text())) for p in folders])


def _bootstrap(values: np.ndarray, stat: Callable[[np.ndarray], float], rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, len(values), size=(BOOTSTRAP_REPS, len(values)))
    return np.array([stat(values[i]) for i in idx])


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


Estimator = Callable[[SeedData, np.random.Generator], tuple[float, np.ndarray | None, str]]


def _ess(s: SeedData, rng: np.random.Generator):
    reps = s.arrays.get("ess_bootstrap")
    n = s.metrics.get("ess_n")
    return _number(s.metrics.get("ess")), reps, f"bootstrap over the {n} samples"


def _forward_ess(s: SeedData, rng: np.random.Generator):
    reps = s.arrays.get("forward_ess_bootstrap")
    return _number(s.metrics.get("forward_ess")), reps, f"bootstrap over {s.metrics.get('forward_ess_n')} test points"


def _nll(s: SeedData, rng: np.random.Generator):
    log_q = s.arrays.get("log_q_test")
    if log_q is None or not np.isfinite(log_q).all():
        return _number(s.metrics.get("nll")), None, "point (no per-point log q)"
    return float(-log_q.mean()), _bootstrap(-log_q, np.mean, rng), f"bootstrap over {len(log_q)} test points"


def _subset_mean(key: str, metric: str) -> Estimator:
    def est(s: SeedData, rng: np.random.Generator):
        values = s.arrays.get(key)
        if values is None or len(values) < 2:
            return _number(s.metrics.get(metric)), None, "point (no per-sample values)"
        what = "minibatches" if key.startswith("eqot") else "single-sample solves"
        return float(values.mean()), _bootstrap(values, np.mean, rng), f"bootstrap over {len(values)} {what}"
    return est


def _modes(s: SeedData, rng: np.random.Generator):
    modes = s.arrays.get("mode_index")
    if modes is None:
        return _number(s.metrics.get("modes_reached")), None, "point (no per-sample modes)"

    def reached(m: np.ndarray) -> float:
        return float(np.unique(m[m >= 0]).size)

    return reached(modes), _bootstrap(modes, reached, rng), f"bootstrap over the {len(modes)} samples"


def _abs_log_z_error(s: SeedData, rng: np.random.Generator):
    # an MCMC run's log Z comes from its own AIS chains (eqbg.baselines.log_z), a flow's from its samples
    log_w = s.arrays.get("log_w_log_z", s.arrays.get("log_w"))
    log_z = _number(s.metrics.get("log_z"))
    if log_w is None or not math.isfinite(log_z):
        return abs(_number(s.metrics.get("log_z_error"))), None, "point"

    def err(lw: np.ndarray) -> float:
        return abs(float(logsumexp(lw) - math.log(len(lw))) - log_z)

    return err(log_w), _bootstrap(log_w, err, rng), f"bootstrap over the {len(log_w)} samples"


def _energy_w2_reweighted(s: SeedData, rng: np.random.Generator):
    u, log_w, u_data = (s.arrays.get(k) for k in ("energy_flow", "log_w", "energy_data"))
    if u is None or log_w is None or u_data is None or not np.isfinite(log_w).any():
        return _number(s.metrics.get("energy_w2_reweighted")), None, "point (no per-sample energies)"

    def w2(idx: np.ndarray) -> float:
        lw = log_w[idx]
        if not np.isfinite(lw).any():
            return math.nan
        return wasserstein_1d(u[idx], u_data, normalised_weights(lw), None, p=2)

    # correlated MCMC states are resampled in blocks of their chains (eqbg.baselines.evaluate), a
    # flow's independent samples one by one
    cluster = s.arrays.get("sample_block")
    if cluster is None:
        members = [np.array([i]) for i in range(len(u))]
        what = f"bootstrap over the {len(u)} samples"
    else:
        members = [np.flatnonzero(cluster == c) for c in np.unique(cluster)]
        what = f"block bootstrap over {len(members)} blocks of {len(np.unique(s.arrays['sample_chain']))} chains"
    picks = rng.integers(0, len(members), size=(BOOTSTRAP_REPS, len(members)))
    reps = np.array([w2(np.concatenate([members[j] for j in pick])) for pick in picks])
    return w2(np.arange(len(u))), reps, what


def _seconds_per_step(s: SeedData, rng: np.random.Generator):
    curve = s.curve()
    if curve is None or len(curve) < 3:
        return math.nan, None, "point (no training curve)"
    # per-step wall time; the first steps carry set-up and the validation steps their pass
    dt = np.diff(curve["wall_time_s"].to_numpy(dtype=float))[1:]
    if "val_nll" in curve:
        validated = pd.to_numeric(curve["val_nll"], errors="coerce").notna().to_numpy()[2:]
        dt = dt[~validated] if (~validated).sum() >= 2 else dt
    return float(dt.mean()), _bootstrap(dt, np.mean, rng), f"bootstrap over {len(dt)} training steps"


#: metric name -> estimator; any other metric is read from metrics.json as a point estimate
ESTIMATORS: dict[str, Estimator] = {
    "ess": _ess,
    "forward_ess": _forward_ess,
    "nll": _nll,
    "path_length": _subset_mean("path_length_subset", "path_length"),
    "nfe": _subset_mean("nfe_subset", "nfe"),
    "modes_reached": _modes,
    "abs_log_z_error": _abs_log_z_error,
    "seconds_per_step": _seconds_per_step,
    "energy_w2_reweighted": _energy_w2_reweighted,
    # the data's minibatch couplings (rule coupling_cost): per-batch values
    "eqot_minus_ot": _subset_mean("eqot_minus_ot", "eqot_minus_ot"),
    "eqot_reduction": _subset_mean("eqot_reduction", "eqot_reduction"),
}


def _one_seed(s: SeedData, metric: str, rng: np.random.Generator) -> tuple[float, np.ndarray | None, str]:
    if metric in ESTIMATORS:
        return ESTIMATORS[metric](s, rng)
    return _number(s.metrics.get(metric)), None, "point"


def estimate(run: RunData, metric: str, seed: int = 0) -> Estimate | None:
    """The run's ``metric`` with replicates (one seed: its own data; several: over seeds); None
    when the run has no seed with a finite value."""
    if (metric, seed) not in run._estimates:
        run._estimates[metric, seed] = _estimate(run, metric, seed)
    return run._estimates[metric, seed]


def _estimate(run: RunData, metric: str, seed: int) -> Estimate | None:
    rng = np.random.default_rng(seed)
    per_seed = [(s, *_one_seed(s, metric, rng)) for s in run.seeds]
    per_seed = [p for p in per_seed if math.isfinite(p[1])]
    if not per_seed:
        return None
    n = min(int(p[0].metrics.get("ess_n") or p[0].metrics.get("n_samples") or 0) for p in per_seed) or None
    if len(per_seed) == 1:
        _, value, reps, how = per_seed[0]
        reps = None if reps is None else np.asarray(reps, dtype=float)
        return Estimate(value, reps, how, n)
    values = np.array([p[1] for p in per_seed])
    return Estimate(float(values.mean()), _bootstrap(values, np.mean, rng), f"bootstrap over {len(values)} seeds", n)
