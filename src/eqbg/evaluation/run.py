"""Evaluate one trained run: reweighting, ESS, NLL, distribution metrics, observables and cost.

:func:`evaluate_samples` does the computation on arrays (no files); :func:`evaluate_run` reads a
run folder (``samples.npz``, ``model.pt`` via ``eqbg.rundir.load_flow``, ``train.csv``,
``config.json``) and the test split, and writes ``metrics.json`` plus ``eval.npz`` (everything the
figures need, so they regenerate without the model).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import logsumexp

from eqbg.data import load_dataset
from eqbg.evaluation.ais import ais_refinement, supports_ais
from eqbg.evaluation.cost import run_cost
from eqbg.evaluation.expectation import quadratic_bias_metrics
from eqbg.evaluation.paths import integration_subset
from eqbg.evaluation.dihedrals import basin_free_energy_difference, ramachandran_histogram
from eqbg.evaluation.distributions import (
    common_bins,
    density_histogram,
    histogram_kl,
    pairwise_distances,
    wasserstein_1d,
)
from eqbg.evaluation.nll import (
    NLL_CONVENTIONS,
    convert_nll,
    model_log_prob,
    nll_from_log_prob,
    prior_log_normaliser,
    subset_indices,
)
from eqbg.evaluation.weights import (
    DEFAULT_ENERGY_CAP,
    bootstrap_ess,
    find_failed_samples,
    forward_ess,
    kish_ess,
    log_importance_weights,
    normalised_weights,
    reweighted_mean,
)
from eqbg.flows import DENSITY_KINDS
from eqbg.io import provenance, read_json
from eqbg.losses import LOSSES
from eqbg.rundir import RunDir, load_flow, run_identifiers
from eqbg.settings import resolve_device
from eqbg.systems import get_system

log = logging.getLogger(__name__)

#: Evaluation settings and their defaults (``settings`` passed to :func:`evaluate_run` override
#: them; unknown keys raise so typos cannot silently fall back to a default).
DEFAULT_SETTINGS: dict[str, Any] = {
    # test-set NLL with the exact divergence on a random subset of this many test points
    # (None = whole test split); the same subset gives the forward ESS.
    "nll_n": 1000,
    "nll_batch_size": 256,
    "nll_seed": 0,
    # test configurations (random subset) whose energies enter the energy metrics and
    # histograms; None = the whole test split (aldp energies cost an OpenMM call each)
    "energy_test_n": None,
    # samples with u > energy_cap (kT), non-finite u, or non-finite log q count as failed.
    "energy_cap": DEFAULT_ENERGY_CAP,
    # percentile bootstrap of the Kish ESS
    "bootstrap_level": 0.9,
    "bootstrap_reps": 1000,
    "bootstrap_seed": 0,
    # configurations (random subset, per side) whose pooled pair distances enter distance_w2
    "distance_n": 5000,
    "distance_seed": 0,
    "hist_bins": 100,
    "rama_bins": 64,
    # bins of the 1-D phi / psi marginals on [-pi, pi] whose KL is reported (EACF: 200)
    "marginal_bins": 200,
    # batch size for target energy evaluation
    "energy_batch_size": 4096,
    # "cpu", "cuda", "cuda:N" or "auto"; a full run-settings dict's top-level "device" is used
    # when this is not given in its "evaluate" section
    "device": "cpu",
    # skip the model-based test NLL / forward ESS (e.g. when no model is available)
    "compute_nll": True,
    # ODE overrides for the test NLL, passed to eqbg.rundir.load_flow(ode=...) (e.g.
    # {"atol": 1e-7, "rtol": 1e-7} as E-NF's test protocol); None = the run's training ODE
    "nll_ode": None,
    # dtype of the model for the test NLL ("float32"/"float64"); None = the training dtype
    "nll_dtype": None,
    # prior draws integrated one at a time with the evaluation ODE (eqbg.evaluation.paths): the
    # per-sample NFE and path length behind the claims' intervals; 0 = off
    "path_subset_n": 32,
    # annealed importance sampling as a refinement of flows with a differentiable state density
    # (eqbg.evaluation.ais): None = off, else AISSettings keys (alpha is 1) and n, batch_size,
    # tune_passes, seed; reports ess_ais beside the flow's ess and its target evaluations
    "ais": None,
}

#: File beside ``test.npz`` with the umbrella-sampling reference of the phi populations
#: (``eqbg.data.population``), read by :func:`evaluate_run` when present.
REFERENCE_POPULATION_FILE = "md_population.json"

#: Sections of a full run-settings dict (``eqbg.pipeline.run_settings``).
RUN_SECTIONS = ("model", "train", "ode", "sample", "evaluate")

#: Keys every metrics.json written by :func:`evaluate_run` holds (more are added per system:
#: ``delta_f_*`` (``delta_f_reference`` from the umbrella-sampling reference when present),
#: ``ramachandran_kl_*``, ``{phi,psi}_kl_*``, ``frac_d_chirality_*`` for aldp; ``log_z_*``,
#: ``forward_kl`` for exact systems; ``modes_reached``, ``mode_coverage`` for targets with known
#: modes; ``quadratic_bias_*`` for GMM-40; ``ess_ais`` and ``ais_*`` with ``evaluate.ais``;
#: ``distance_*`` for particle systems).  Values that could
#: not be computed are ``null`` (JSON has no NaN).
METRIC_KEYS: tuple[str, ...] = (
    "system", "model", "loss", "variant", "seed", "run_dir", "provenance",
    "log_q_density", "log_q_k",
    "n_samples", "n_test", "n_failed", "frac_failed", "n_failed_nonfinite_energy",
    "n_failed_energy_above_cap", "n_failed_nonfinite_log_q", "energy_cap",
    "ess", "ess_n", "ess_ci_low", "ess_ci_high", "ess_ci_level", "ess_bootstrap_reps",
    "forward_ess", "forward_ess_n", "forward_ess_ci_low", "forward_ess_ci_high",
    "forward_ess_density_k", "nll_density_k",
    "nll", "nll_sem", "nll_n", "nll_efm", "nll_convention", "nll_convention_description",
    "nll_prior_log_normaliser", "nll_time_s",
    "energy_test_n", "energy_w1", "energy_w2", "energy_w1_reweighted", "energy_w2_reweighted",
    "mean_energy_data", "mean_energy_data_err", "mean_energy_flow", "mean_energy_flow_err",
    "mean_energy_reweighted", "mean_energy_reweighted_err",
    "sampling_wall_time_s", "samples_per_s", "ess_per_s", "nfe", "nfe_total", "path_length",
    "energy_eval_time_s", "flow_energy_time_s", "energies_per_s", "n_energy_evals_eval", "n_energy_evals_train",
    "train_time_s", "train_steps", "final_val_nll", "n_train", "n_train_setting",
)

#: Arrays in eval.npz (figures regenerate from these without the model).  Always:
#: ``energy_data``/``energy_flow`` (kT), ``log_w``, ``failed`` (bool), ``ess_bootstrap``,
#: ``energy_edges`` + ``energy_hist_{data,flow,reweighted}`` (densities), identifiers
#: ``system``/``model``/``loss``/``seed`` (0-d strings); with a model: ``log_q_test``; particle
#: systems: ``distance_edges`` + ``distance_hist_{data,flow,reweighted}``; aldp:
#: ``phi_*``/``psi_*`` (rad), ``rama_hist_{data,flow,reweighted}`` (probability per bin),
#: ``chirality_flow``.


def split_run_settings(settings: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(evaluation settings, system options)`` from either a flat dict of evaluation settings
    or a full run-settings dict (sections ``model``, ``train``, ``ode``, ``sample``,
    ``evaluate`` plus ``system_options`` and ``device``, as ``eqbg.pipeline.run_settings``
    returns it), in which case only the ``evaluate`` section (and ``device``) is used."""
    s = dict(settings or {})
    system_options = dict(s.pop("system_options", None) or {})
    if any(key in s for key in RUN_SECTIONS):
        device = s.get("device")
        unknown = set(s) - set(RUN_SECTIONS) - {"device"}
        if unknown:
            raise ValueError(f"unknown run-settings keys {sorted(unknown)}")
        s = dict(s.get("evaluate") or {})
        if device is not None:
            s.setdefault("device", device)
    return s, system_options


def resolve_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults updated with ``settings``; unknown keys raise ``ValueError``."""
    resolved = dict(DEFAULT_SETTINGS)
    for key, value in (settings or {}).items():
        if key not in DEFAULT_SETTINGS:
            raise ValueError(f"unknown evaluation setting {key!r}; known: {sorted(DEFAULT_SETTINGS)}")
        resolved[key] = value
    resolved["device"] = str(resolve_device(str(resolved["device"])))
    return resolved


def compute_energies(system, x: np.ndarray | torch.Tensor, batch_size: int = 4096, device: str = "cpu") -> np.ndarray:
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


def _scalar(value: Any) -> float:
    """Mean of a scalar-or-array statistic stored in samples.npz (NaN if absent/empty)."""
    if value is None:
        return float("nan")
    arr = np.asarray(value, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def evaluate_samples(
    system,
    samples: Mapping[str, Any],
    x_test: np.ndarray | torch.Tensor,
    *,
    flow=None,
    settings: Mapping[str, Any] | None = None,
    loss: str | None = None,
    train_curve: pd.DataFrame | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """All metrics of one set of flow samples against the test split.

    Args:
        system: ``eqbg.systems.System`` (energy in kT).
        samples: mapping with ``x`` ``(N, n, d)``, ``log_q`` ``(N,)`` and optionally
            ``density`` (``exact``, ``estimate`` with ``density_k``, or ``stochastic``; see
            :func:`log_q_density`), ``nfe``, ``path_length``, ``wall_time_s`` (the
            ``samples.npz`` contents).
        x_test: ``(M, n, d)`` test configurations (CoM-free where the system is).
        flow: model with ``log_prob(x, batch_size=...)``; needed for ``nll`` and
            ``forward_ess`` (both NaN when None or ``compute_nll`` is False).
        settings: overrides of :data:`DEFAULT_SETTINGS`.
        loss: training loss name (decides the training energy-evaluation count when the curve
            does not record it).
        train_curve: ``train.csv`` as a data frame (training time, energy evaluations).

    Returns:
        ``(metrics, arrays)``: JSON-ready scalar metrics and the arrays for ``eval.npz``.

    Raises:
        ValueError: the samples' ``log_q`` is ``stochastic`` (a noisy estimate cannot enter
            importance weights), or the arrays do not fit together.
    """
    cfg = resolve_settings(settings)
    density, density_k = log_q_density(samples)
    x = np.asarray(samples["x"])
    log_q = np.asarray(samples["log_q"], dtype=np.float64)
    if x.ndim != 3 or x.shape[0] != log_q.shape[0]:
        raise ValueError(f"samples: x {x.shape} and log_q {log_q.shape} do not describe the same batch")
    x_test_np = x_test.detach().cpu().numpy() if isinstance(x_test, torch.Tensor) else np.asarray(x_test)
    if x_test_np.shape[1:] != x.shape[1:]:
        raise ValueError(f"test data {x_test_np.shape} and samples {x.shape} differ in configuration shape")
    n, m = x.shape[0], x_test_np.shape[0]
    # an estimated log q (importance-sampled marginal) gives consistent but, for finite K,
    # biased weights: every metric built on it is labelled with its kind and K
    metrics: dict[str, Any] = {"log_q_density": density, "log_q_k": density_k}
    arrays: dict[str, np.ndarray] = {}

    # --- energies, failures, weights
    t0 = time.perf_counter()
    u_flow = compute_energies(system, x, cfg["energy_batch_size"], cfg["device"])
    flow_energy_time = time.perf_counter() - t0
    i_energy = subset_indices(m, cfg["energy_test_n"], cfg["nll_seed"])
    u_data_sub = compute_energies(system, x_test_np[i_energy], cfg["energy_batch_size"], cfg["device"])
    # test energies are needed on the NLL subset as well (forward ESS); NaN marks "not computed"
    u_data_all = np.full(m, np.nan)
    u_data_all[i_energy] = u_data_sub
    energy_time = time.perf_counter() - t0
    failed = find_failed_samples(u_flow, log_q, cfg["energy_cap"])
    log_w = log_importance_weights(u_flow, log_q)
    ok = ~failed.mask
    metrics.update(
        n_samples=n,
        n_test=m,
        n_failed=failed.n_failed,
        frac_failed=failed.frac_failed,
        n_failed_nonfinite_energy=failed.nonfinite_energy,
        n_failed_energy_above_cap=failed.energy_above_cap,
        n_failed_nonfinite_log_q=failed.nonfinite_log_q,
        energy_cap=failed.energy_cap,
    )

    # --- reverse ESS (failed samples stay in n with weight ~0)
    ess, ess_n = kish_ess(log_w)
    low, high, reps = bootstrap_ess(
        log_w, level=cfg["bootstrap_level"], reps=cfg["bootstrap_reps"], seed=cfg["bootstrap_seed"]
    )
    metrics.update(
        ess=ess, ess_n=ess_n, ess_ci_low=low, ess_ci_high=high,
        ess_ci_level=cfg["bootstrap_level"], ess_bootstrap_reps=cfg["bootstrap_reps"],
    )
    arrays["ess_bootstrap"] = reps
    # exact systems (gmm40, manywell32) know log Z: importance-sampling estimate and its error
    # (FAB/fab-jax report |log Z_hat - log Z|)
    log_z = getattr(system, "log_z", None)
    if log_z is not None and np.isfinite(log_w).any():
        log_z_hat = float(logsumexp(log_w) - math.log(n))
        metrics.update(log_z=float(log_z), log_z_estimate=log_z_hat, log_z_error=log_z_hat - float(log_z))

    # mode coverage of targets with known modes (GMM-40: 40 means; Many-Well-32: 2^16 sign
    # patterns): how many distinct modes the valid samples reach (FAB's point: ESS alone hides
    # dropped modes)
    if "modes" in system.observables:
        modes = system.mode_index(torch.as_tensor(x[ok]))
        arrays["mode_index"] = modes.cpu().numpy()  # per valid sample (the claims bootstrap it)
        reached = int(torch.unique(modes[modes >= 0]).numel())
        # with fewer valid samples than modes (Many-Well-32: 2^16) the coverage cannot exceed
        # n_valid / n_modes: report that bound beside it
        n_valid = int(ok.sum())
        metrics.update(modes_reached=reached, n_modes=int(system.n_modes),
                       mode_coverage=reached / int(system.n_modes),
                       mode_coverage_bound=min(n_valid, int(system.n_modes)) / int(system.n_modes))

    # FAB's bias of a quadratic expectation (GMM-40), in our convention and in FAB's
    # (eqbg.evaluation.expectation)
    if "test_function" in system.observables:
        metrics.update(quadratic_bias_metrics(system, x, log_w))

    # --- NLL and forward ESS on a test subset, exact divergence
    metrics.update(nll_density_k=None, forward_ess_density_k=None)
    metrics.update(nll=float("nan"), nll_sem=float("nan"), nll_n=0, nll_efm=float("nan"),
                   forward_ess=float("nan"), forward_ess_n=0, nll_time_s=float("nan"),
                   forward_ess_ci_low=float("nan"), forward_ess_ci_high=float("nan"))
    metrics["nll_convention"] = "eqbg"
    metrics["nll_convention_description"] = NLL_CONVENTIONS["eqbg"].description
    metrics["nll_prior_log_normaliser"] = prior_log_normaliser(system.dim)
    if flow is not None and cfg["compute_nll"]:
        idx = subset_indices(m, cfg["nll_n"], cfg["nll_seed"])
        xt = torch.as_tensor(x_test_np[idx])
        params = list(flow.parameters()) if hasattr(flow, "parameters") else []
        if params:
            xt = xt.to(device=params[0].device, dtype=params[0].dtype)
        t0 = time.perf_counter()
        log_q_test = model_log_prob(flow, xt, batch_size=cfg["nll_batch_size"], seed=cfg["nll_seed"])
        metrics["nll_time_s"] = time.perf_counter() - t0
        nll, nll_sem = nll_from_log_prob(log_q_test)
        missing = idx[np.isnan(u_data_all[idx])]
        if missing.size:
            u_data_all[missing] = compute_energies(system, x_test_np[missing], cfg["energy_batch_size"], cfg["device"])
        # An importance-sampled marginal (augmented flows): the NLL uses the flow's K, the
        # forward ESS one augmented sample per test point, as the EACF paper defines it.
        log_q_forward = log_q_test
        metrics["nll_density_k"] = getattr(flow, "marginal_k", None) if getattr(flow, "density", "exact") == "estimate" else None
        metrics["forward_ess_density_k"] = None
        if getattr(flow, "density", "exact") == "estimate":
            log_q_forward = model_log_prob(flow, xt, batch_size=cfg["nll_batch_size"],
                                           seed=cfg["nll_seed"] + 1, marginal_k=1)
            metrics["forward_ess_density_k"] = 1
        log_w_test = log_importance_weights(u_data_all[idx], log_q_forward)
        fess, fess_n = forward_ess(log_w_test)
        if not np.isfinite(log_w_test).all():
            fess_low = fess_high = float("nan")  # the forward ESS is 0; an interval says nothing
        else:
            fess_low, fess_high, arrays["forward_ess_bootstrap"] = bootstrap_ess(
                log_w_test, level=cfg["bootstrap_level"], reps=cfg["bootstrap_reps"],
                seed=cfg["bootstrap_seed"], forward=True,
            )
        metrics.update(forward_ess_ci_low=fess_low, forward_ess_ci_high=fess_high)
        metrics.update(
            nll=nll, nll_sem=nll_sem, nll_n=int(idx.size),
            nll_efm=convert_nll(nll, system.dim, source="eqbg", target="efm") if math.isfinite(nll) else nll,
            forward_ess=fess, forward_ess_n=fess_n,
        )
        arrays["log_q_test"] = log_q_test
        if log_z is not None and math.isfinite(nll):
            # forward KL(p || q) = E_p[log p - log q] = NLL - E_p[u] - log Z on the same subset
            metrics["forward_kl"] = float(nll - u_data_all[idx].mean() - float(log_z))

    u_data = u_data_sub
    metrics["energy_test_n"] = int(u_data.size)

    # --- energy distributions (failed samples excluded from the unweighted flow histogram/W;
    #     they carry zero weight in the reweighted ones)
    wbar = normalised_weights(log_w) if np.isfinite(log_w).any() else np.zeros(n)
    u_ok = u_flow[ok]
    if u_ok.size:
        metrics["energy_w1"] = wasserstein_1d(u_ok, u_data, p=1)
        metrics["energy_w2"] = wasserstein_1d(u_ok, u_data, p=2)
    else:
        metrics["energy_w1"] = metrics["energy_w2"] = float("nan")
    if wbar.sum() > 0:
        # zero-weight samples are ignored, so failed (non-finite) energies cannot leak in
        metrics["energy_w1_reweighted"] = wasserstein_1d(u_flow, u_data, wbar, None, p=1)
        metrics["energy_w2_reweighted"] = wasserstein_1d(u_flow, u_data, wbar, None, p=2)
        mean_rw, err_rw = reweighted_mean(u_flow, log_w)
    else:
        metrics["energy_w1_reweighted"] = metrics["energy_w2_reweighted"] = float("nan")
        mean_rw, err_rw = float("nan"), float("nan")
    metrics["mean_energy_data"] = float(u_data.mean())
    metrics["mean_energy_data_err"] = (
        float(u_data.std(ddof=1) / math.sqrt(u_data.size)) if u_data.size > 1 else float("nan")
    )
    metrics["mean_energy_flow"] = float(u_ok.mean()) if u_ok.size else float("nan")
    metrics["mean_energy_flow_err"] = (
        float(u_ok.std(ddof=1) / math.sqrt(u_ok.size)) if u_ok.size > 1 else float("nan")
    )
    metrics["mean_energy_reweighted"] = mean_rw
    metrics["mean_energy_reweighted_err"] = err_rw
    edges = energy_bins(u_data, u_ok, cfg["hist_bins"])
    arrays.update(
        energy_data=u_data,
        energy_flow=u_flow,
        log_w=log_w,
        failed=failed.mask,
        energy_edges=edges,
        energy_hist_data=density_histogram(u_data, edges),
        energy_hist_flow=density_histogram(u_ok, edges),
        energy_hist_reweighted=density_histogram(u_flow, edges, wbar),
    )

    # --- interatomic distances (pooled over all pairs of a random subset of configurations)
    # pair distances are physical only for particle systems (not for gmm40/manywell32 coordinates)
    if x.shape[1] >= 2 and system.com_free:
        i_flow = subset_indices(n, cfg["distance_n"], cfg["distance_seed"])
        i_flow = i_flow[ok[i_flow]]
        i_data = subset_indices(m, cfg["distance_n"], cfg["distance_seed"])
        d_data = pairwise_distances(x_test_np[i_data])
        d_flow = pairwise_distances(x[i_flow]) if i_flow.size else np.zeros((0, d_data.shape[1]))
        w_pairs = np.repeat(wbar[i_flow][:, None], d_data.shape[1], axis=1)
        if d_flow.size:
            metrics["distance_w2"] = wasserstein_1d(d_flow, d_data, p=2)
            metrics["distance_w2_reweighted"] = (
                wasserstein_1d(d_flow, d_data, w_pairs, None, p=2) if w_pairs.sum() > 0 else float("nan")
            )
        else:
            metrics["distance_w2"] = metrics["distance_w2_reweighted"] = float("nan")
        metrics["distance_n_data"] = int(i_data.size)
        metrics["distance_n_flow"] = int(i_flow.size)
        dedges = common_bins(d_data, bins=cfg["hist_bins"], quantile_range=(0.0, 1.0))
        dedges = np.linspace(0.0, dedges[-1] * 1.25, cfg["hist_bins"] + 1)
        arrays.update(
            distance_edges=dedges,
            distance_hist_data=density_histogram(d_data, dedges),
            distance_hist_flow=density_histogram(d_flow, dedges),
            distance_hist_reweighted=density_histogram(d_flow, dedges, w_pairs if d_flow.size else None),
        )

    # --- chiral systems (alanine dipeptide): E(3)-equivariant flows also generate D-alanine
    # (mirror images); the force field cannot tell them apart, so reweighting does not remove
    # them: report their share, and mirror them into L before the dihedral observables, weights
    # unchanged (exact for the symmetrised target: eqbg.systems.aldp.map_d_to_l); test data alike.
    x_obs, x_test_obs = x, x_test_np
    if "chirality" in system.observables:
        chir_flow = system.chirality(x)
        # of every drawn sample (failed energies included), as the unweighted dihedral observables
        finite = np.isfinite(chir_flow)
        metrics["frac_d_chirality_flow"] = float(np.mean(chir_flow[finite] < 0)) if finite.any() else float("nan")
        metrics["frac_d_chirality_data"] = float(np.mean(system.chirality(x_test_np) < 0))
        arrays["chirality_flow"] = chir_flow
        x_obs, was_d = system.map_to_l(x)
        x_test_obs, was_d_test = system.map_to_l(x_test_np)
        metrics.update(n_mapped_d_to_l=int(was_d.sum()), n_mapped_d_to_l_test=int(was_d_test.sum()))

    # --- systems with backbone dihedrals (alanine dipeptide): Ramachandran, basin free energy
    if "dihedrals" in system.observables:
        phi_d, psi_d = system.dihedrals(x_test_obs)
        phi_f, psi_f = system.dihedrals(x_obs)
        arrays.update(phi_data=phi_d, psi_data=psi_d, phi_flow=phi_f, psi_flow=psi_f)
        df_data, df_data_err, _ = basin_free_energy_difference(phi_d)
        # "flow": what the flow draws, every sample with defined dihedrals (also those whose
        # energy failed: a poorly trained flow's backbone is still informative); "reweighted":
        # importance weights, zero for failed samples
        drawn = np.isfinite(phi_f) & np.isfinite(psi_f)
        df_flow, df_flow_err, _ = (
            basin_free_energy_difference(phi_f[drawn]) if drawn.any() else (np.nan, np.nan, np.nan)
        )
        if wbar.sum() > 0:
            # a sample whose dihedral is undefined (NaN positions) gets zero weight
            df_rw, df_rw_err, _ = basin_free_energy_difference(
                np.nan_to_num(phi_f), np.where(np.isfinite(phi_f), log_w, -np.inf)
            )
        else:
            df_rw, df_rw_err = float("nan"), float("nan")
        good = ok & drawn
        h_data, _ = ramachandran_histogram(phi_d, psi_d, bins=cfg["rama_bins"])
        rama_area = (2 * np.pi / cfg["rama_bins"]) ** 2
        h_flow, _ = ramachandran_histogram(phi_f[drawn], psi_f[drawn], bins=cfg["rama_bins"])
        h_rw, _ = ramachandran_histogram(phi_f[good], psi_f[good], wbar[good], bins=cfg["rama_bins"])
        arrays.update(rama_hist_data=h_data, rama_hist_flow=h_flow, rama_hist_reweighted=h_rw)
        metrics.update(
            delta_f_data=df_data, delta_f_data_err=df_data_err,
            delta_f_flow=df_flow, delta_f_flow_err=df_flow_err,
            delta_f_reweighted=df_rw, delta_f_reweighted_err=df_rw_err,
            ramachandran_kl_flow=histogram_kl(h_data, h_flow, rama_area),
            ramachandran_kl_reweighted=histogram_kl(h_data, h_rw, rama_area),
        )
        # KL of the 1-D phi and psi marginals (EACF: 200 bins on [-pi, pi])
        edges_1d = np.linspace(-np.pi, np.pi, cfg["marginal_bins"] + 1)
        for name, data_angle, flow_angle in (("phi", phi_d, phi_f), ("psi", psi_d, psi_f)):
            h_d = density_histogram(data_angle, edges_1d)
            for kind, mask, w in (("flow", drawn, None), ("reweighted", good, wbar[good])):
                metrics[f"{name}_kl_{kind}"] = histogram_kl(
                    h_d, density_histogram(flow_angle[mask], edges_1d, w), 2 * np.pi / cfg["marginal_bins"])

    # --- cost
    wall = _scalar(samples.get("wall_time_s"))
    metrics["sampling_wall_time_s"] = wall
    metrics["samples_per_s"] = n / wall if wall and math.isfinite(wall) and wall > 0 else float("nan")
    # What a user of a Boltzmann generator pays for: effective samples per second of the whole
    # sampling stage, the target energies of every sample included.
    cost_s = wall + flow_energy_time
    metrics["ess_per_s"] = ess * n / cost_s if math.isfinite(cost_s) and cost_s > 0 else float("nan")
    # sample_run sums NFE over integration batches: report it per batch (comparable across
    # batch sizes) and keep the total
    nfe_total = _scalar(samples.get("nfe"))
    n_batches = _scalar(samples.get("n_batches"))
    metrics["nfe_total"] = nfe_total
    metrics["nfe"] = nfe_total / n_batches if math.isfinite(n_batches) and n_batches > 0 else nfe_total
    metrics["path_length"] = _scalar(samples.get("path_length"))
    metrics["energy_eval_time_s"] = energy_time
    metrics["flow_energy_time_s"] = flow_energy_time
    # target energies of the flow's samples per second (OpenMM for alanine dipeptide)
    metrics["energies_per_s"] = n / flow_energy_time if flow_energy_time > 0 else float("nan")
    metrics["n_energy_evals_eval"] = int(n + np.isfinite(u_data_all).sum())
    metrics.update(training_cost(train_curve, loss))
    return metrics, arrays


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


def energy_bins(u_data: np.ndarray, u_flow: np.ndarray, bins: int) -> np.ndarray:
    """Histogram edges covering the central 99.8 % of the data energies and the central 98 % of
    the flow energies, reaching at most two data spans beyond the data (a bad model, or a long
    data tail, must not squash the plot; mass outside the edges still counts in the densities'
    normalisation)."""
    lo, hi = (float(v) for v in np.quantile(u_data, [0.001, 0.999]))
    span = max(hi - lo, 1e-6)
    if u_flow.size:
        qlo, qhi = np.quantile(u_flow, [0.01, 0.99])
        lo = max(min(lo, float(qlo)), lo - 2 * span)
        hi = min(max(hi, float(qhi)), hi + 2 * span)
    return np.linspace(lo, hi, bins + 1)


def training_cost(train_curve: pd.DataFrame | None, loss: str | None) -> dict[str, Any]:
    """Training time and target-energy evaluations from ``train.csv``.

    ``train_time_s`` is the largest ``wall_time_s`` (the curve records cumulative wall time).
    ``n_energy_evals_train`` is the last ``n_energy_evals`` entry when the curve records it,
    else 0 for a registered loss that never evaluates the energy, NaN (unknown) otherwise.
    """
    out: dict[str, Any] = {"train_time_s": float("nan"), "train_steps": 0, "final_val_nll": float("nan")}
    if train_curve is not None and len(train_curve):
        if "wall_time_s" in train_curve:
            out["train_time_s"] = float(pd.to_numeric(train_curve["wall_time_s"], errors="coerce").max())
        if "step" in train_curve:
            out["train_steps"] = int(pd.to_numeric(train_curve["step"], errors="coerce").max())
        if "val_nll" in train_curve:
            val = pd.to_numeric(train_curve["val_nll"], errors="coerce").dropna()
            if len(val):
                out["final_val_nll"] = float(val.iloc[-1])
                out["best_val_nll"] = float(val.min())
    if train_curve is not None and "n_energy_evals" in train_curve and len(train_curve):
        out["n_energy_evals_train"] = float(pd.to_numeric(train_curve["n_energy_evals"], errors="coerce").max())
    elif loss in LOSSES and not LOSSES[loss].cls.needs_energy:
        out["n_energy_evals_train"] = 0
    else:
        out["n_energy_evals_train"] = float("nan")
    return out


def evaluate_run(
    system: str,
    run_dir: str | Path,
    data_dir: str | Path,
    settings: Mapping[str, Any] | None,
    out_path: str | Path,
    *,
    samples_path: str | Path | None = None,
    eval_npz_path: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate one run and write ``metrics.json`` (atomically) and ``eval.npz`` beside it.

    Reads ``run_dir/samples.npz`` (or ``samples_path``), ``data_dir/test.npz``, the model via
    ``eqbg.rundir.load_flow(run_dir)`` (for the exact-divergence test NLL and forward ESS),
    ``run_dir/train.csv`` and the run's config.

    Args:
        system: system name (``eqbg.systems.get_system``).
        run_dir: ``results/runs/{system}/{model}/{loss}/seed{seed}``.
        data_dir: ``results/data/{system}`` holding ``test.npz``.
        settings: overrides of :data:`DEFAULT_SETTINGS`, flat, or a full run-settings dict
            (see :func:`split_run_settings`; its ``system_options`` go to ``get_system``).
        out_path: ``metrics.json`` path.
        eval_npz_path: where the figure arrays go (default ``out_path`` with name ``eval.npz``).

    Returns:
        The metrics dict that was written.
    """
    run, data_dir = RunDir(run_dir), Path(data_dir)
    eval_settings, system_options = split_run_settings(settings)
    cfg = resolve_settings(eval_settings)
    sys_obj = get_system(system, **system_options)

    samples_path = Path(samples_path) if samples_path else run.samples
    samples = run.read_samples(samples_path)
    x_test = load_dataset(data_dir / "test.npz", system=sys_obj, split="test")

    flow = None
    if cfg["compute_nll"]:
        flow, _ = load_flow(run.root, ode=cfg["nll_ode"], device=cfg["device"], dtype=cfg["nll_dtype"])
    config = run.read_config()
    ident = run_identifiers(config)
    if ident["system"] != system:
        raise ValueError(f"run {run.root} is for system {ident['system']!r}, not {system!r}")

    curve = run.read_train_curve()
    log.info("evaluating %s (%d samples)", run.root, len(samples["log_q"]))
    metrics, arrays = evaluate_samples(
        sys_obj, samples, x_test, flow=flow, settings=cfg, loss=ident.get("loss"), train_curve=curve
    )
    if flow is not None and cfg["path_subset_n"]:
        paths = integration_subset(flow, cfg["path_subset_n"], seed=cfg["nll_seed"])
        arrays.update(paths)
        if paths:
            metrics.update(nfe_subset=float(paths["nfe_subset"].mean()),
                           path_length_subset=float(paths["path_length_subset"].mean()),
                           path_subset_n=int(cfg["path_subset_n"]))
    if cfg["ais"]:
        if flow is not None and supports_ais(flow):
            ais_metrics, arrays["log_w_ais"] = ais_refinement(
                flow, sys_obj.energy, cfg["ais"], checkpoint=run.checkpoint,
                log_z=getattr(sys_obj, "log_z", None),
            )
            metrics.update(ais_metrics)
        else:
            metrics["ais_skipped"] = "the flow has no cheap differentiable density (AIS needs a coupling flow)"
    reference = data_dir / REFERENCE_POPULATION_FILE
    if "dihedrals" in sys_obj.observables and reference.is_file():
        # the converged phi > 0 free-energy difference by umbrella sampling (eqbg.data.population):
        # the laptop MD test data hardly visit phi > 0, so delta_f_data says little
        pop = read_json(reference)["intervals"]["phi_positive"]
        metrics.update(delta_f_reference=pop["delta_f_kt"], delta_f_reference_err=pop["delta_f_se"])
    metrics.update(ident)
    # smoke-size runs (eqbg.scale) are marked in every table
    metrics["scale"] = config.get("training", {}).get("scale", "full")
    # training-set size: the configurations the run trained on, and the n_train it asked for
    # (None: all of them); the training-set-size study plots NLL against the former
    metrics["n_train"] = config.get("n_train")
    metrics["n_train_setting"] = (config.get("training") or {}).get("n_train")
    metrics["run_dir"] = str(run.root)
    data_provenance = data_dir / "provenance.json"
    metrics.update(run_cost(metrics, read_json(data_provenance) if data_provenance.is_file() else None))
    metrics["provenance"] = provenance(
        stage="evaluate",
        settings=cfg,
        system_options=system_options,
        samples=str(samples_path),
        test_data=str(data_dir / "test.npz"),
        run_config=config,
    )
    run.write_evaluation(metrics, arrays, ident, metrics_path=out_path, eval_npz_path=eval_npz_path)
    return metrics

