"""Backbone dihedrals (alanine dipeptide): the phi > 0 basin's free-energy difference, and the KL
of the Ramachandran histogram and of the 1-D phi and psi marginals (EACF: 200 bins on [-pi, pi]).

"flow": what the flow draws, every sample with defined dihedrals (also those whose energy failed:
a poorly trained flow's backbone is still informative); "reweighted": importance weights, zero
for failed samples and for samples whose dihedral is undefined (NaN positions)."""

from __future__ import annotations

import numpy as np

from eqbg.evaluation.context import EvaluationContext
from eqbg.evaluation.dihedrals import basin_free_energy_difference, ramachandran_histogram
from eqbg.evaluation.distributions import density_histogram, histogram_kl
from eqbg.evaluation.metric import MetricResult

KEYS = (
    "delta_f_data", "delta_f_data_err", "delta_f_flow", "delta_f_flow_err", "delta_f_reweighted",
    "delta_f_reweighted_err", "ramachandran_kl_flow", "ramachandran_kl_reweighted",
    "phi_kl_flow", "phi_kl_reweighted", "psi_kl_flow", "psi_kl_reweighted",
)


def dihedral_observables(ctx: EvaluationContext) -> MetricResult:
    """Free energies and KLs above; arrays ``phi_*``/``psi_*`` (rad) and ``rama_hist_*``."""
    x_obs, x_test_obs, _, _ = ctx.observable_positions
    phi_d, psi_d = ctx.system.dihedrals(x_test_obs)
    phi_f, psi_f = ctx.system.dihedrals(x_obs)
    arrays = {"phi_data": phi_d, "psi_data": psi_d, "phi_flow": phi_f, "psi_flow": psi_f}
    drawn = np.isfinite(phi_f) & np.isfinite(psi_f)
    good = ctx.ok & drawn
    wbar, bins = ctx.weights, ctx.cfg["rama_bins"]
    h_data, _ = ramachandran_histogram(phi_d, psi_d, bins=bins)
    h_flow, _ = ramachandran_histogram(phi_f[drawn], psi_f[drawn], bins=bins)
    h_rw, _ = ramachandran_histogram(phi_f[good], psi_f[good], wbar[good], bins=bins)
    arrays.update(rama_hist_data=h_data, rama_hist_flow=h_flow, rama_hist_reweighted=h_rw)
    rama_area = (2 * np.pi / bins) ** 2
    metrics = _basin_free_energies(ctx, phi_d, phi_f, drawn)
    metrics.update(
        ramachandran_kl_flow=histogram_kl(h_data, h_flow, rama_area),
        ramachandran_kl_reweighted=histogram_kl(h_data, h_rw, rama_area),
    )
    n_bins = ctx.cfg["marginal_bins"]
    edges_1d = np.linspace(-np.pi, np.pi, n_bins + 1)
    for name, data_angle, flow_angle in (("phi", phi_d, phi_f), ("psi", psi_d, psi_f)):
        h_d = density_histogram(data_angle, edges_1d)
        for kind, mask, w in (("flow", drawn, None), ("reweighted", good, wbar[good])):
            metrics[f"{name}_kl_{kind}"] = histogram_kl(
                h_d, density_histogram(flow_angle[mask], edges_1d, w), 2 * np.pi / n_bins)
    return metrics, arrays


def _basin_free_energies(ctx: EvaluationContext, phi_d: np.ndarray, phi_f: np.ndarray,
                         drawn: np.ndarray) -> dict[str, float]:
    """``delta_f_{data,flow,reweighted}`` and their errors (kT)."""
    df_data, df_data_err, _ = basin_free_energy_difference(phi_d)
    df_flow, df_flow_err, _ = (
        basin_free_energy_difference(phi_f[drawn]) if drawn.any() else (np.nan, np.nan, np.nan)
    )
    if ctx.weights.sum() > 0:
        df_rw, df_rw_err, _ = basin_free_energy_difference(
            np.nan_to_num(phi_f), np.where(np.isfinite(phi_f), ctx.log_w, -np.inf)
        )
    else:
        df_rw, df_rw_err = float("nan"), float("nan")
    return {
        "delta_f_data": df_data, "delta_f_data_err": df_data_err,
        "delta_f_flow": df_flow, "delta_f_flow_err": df_flow_err,
        "delta_f_reweighted": df_rw, "delta_f_reweighted_err": df_rw_err,
    }
