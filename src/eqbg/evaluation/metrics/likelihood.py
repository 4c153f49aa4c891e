"""The test NLL and the forward ESS on a random test subset, with the exact divergence, and the
forward KL where log Z is known. Without a model (or with ``compute_nll`` off) they are NaN."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from eqbg.evaluation.context import EvaluationContext, compute_energies
from eqbg.evaluation.metric import MetricResult
from eqbg.evaluation.nll import (
    NLL_CONVENTIONS,
    convert_nll,
    model_log_prob,
    nll_from_log_prob,
    prior_log_normaliser,
    subset_indices,
)
from eqbg.evaluation.weights import bootstrap_ess, forward_ess, log_importance_weights

#: what the columns mean (under every per-system table)
NOTES = (
    "NLL (eqbg): -mean log q(x_test), exact divergence, CoM-free Gaussian prior normalised over (n-1)d dims "
    "(E-NF/EACF convention). NLL (EFM conv.) = NLL (eqbg) - (n-1)d/2 log(2π). Published NLLs are converted "
    "to the eqbg convention; the reference list gives them as reported.",
    "Augmented flows (eacf): NLL from the importance-sampled marginal over the augmented variables "
    "(K = marginal_k, 20 by default: biased high for finite K); ESS from the joint weights "
    "p(x)π(a|x)/q(x, a); fwd ESS with one augmented sample per test point (the EACF paper's definitions).",
)

KEYS = (
    "nll_density_k", "forward_ess_density_k", "nll", "nll_sem", "nll_n", "nll_efm",
    "forward_ess", "forward_ess_n", "nll_time_s", "forward_ess_ci_low", "forward_ess_ci_high",
    "nll_convention", "nll_convention_description", "nll_prior_log_normaliser",
)
OPTIONAL_KEYS = ("forward_kl",)  # targets with a known log Z


def nll_and_forward_ess(ctx: EvaluationContext) -> MetricResult:
    """NLL (our convention and E-NF/EFM's), forward ESS with its interval, forward KL; arrays
    ``log_q_test`` and ``forward_ess_bootstrap``."""
    nan = float("nan")
    metrics: dict[str, Any] = {"nll_density_k": None, "forward_ess_density_k": None}
    metrics.update(nll=nan, nll_sem=nan, nll_n=0, nll_efm=nan, forward_ess=nan, forward_ess_n=0,
                   nll_time_s=nan, forward_ess_ci_low=nan, forward_ess_ci_high=nan)
    metrics["nll_convention"] = "eqbg"
    metrics["nll_convention_description"] = NLL_CONVENTIONS["eqbg"].description
    metrics["nll_prior_log_normaliser"] = prior_log_normaliser(ctx.system.dim)
    if ctx.flow is None or not ctx.cfg["compute_nll"]:
        return metrics, {}
    return _with_model(ctx, metrics)


def _with_model(ctx: EvaluationContext, metrics: dict[str, Any]) -> MetricResult:
    cfg, flow, system = ctx.cfg, ctx.flow, ctx.system
    idx = subset_indices(ctx.m, cfg["nll_n"], cfg["nll_seed"])
    xt = torch.as_tensor(ctx.x_test[idx])
    params = list(flow.parameters()) if hasattr(flow, "parameters") else []
    if params:
        xt = xt.to(device=params[0].device, dtype=params[0].dtype)
    t0 = time.perf_counter()
    log_q_test = model_log_prob(flow, xt, batch_size=cfg["nll_batch_size"], seed=cfg["nll_seed"])
    metrics["nll_time_s"] = time.perf_counter() - t0
    nll, nll_sem = nll_from_log_prob(log_q_test)
    # the forward ESS needs the test energies of the NLL subset too
    missing = idx[np.isnan(ctx.u_data_all[idx])]
    if missing.size:
        ctx.u_data_all[missing] = compute_energies(
            system, ctx.x_test[missing], cfg["energy_batch_size"], cfg["device"]
        )
    # An importance-sampled marginal (augmented flows): the NLL uses the flow's K, the
    # forward ESS one augmented sample per test point, as the EACF paper defines it.
    log_q_forward = log_q_test
    estimate = getattr(flow, "density", "exact") == "estimate"
    metrics["nll_density_k"] = getattr(flow, "marginal_k", None) if estimate else None
    metrics["forward_ess_density_k"] = None
    if estimate:
        log_q_forward = model_log_prob(flow, xt, batch_size=cfg["nll_batch_size"],
                                       seed=cfg["nll_seed"] + 1, marginal_k=1)
        metrics["forward_ess_density_k"] = 1
    arrays: dict[str, np.ndarray] = {}
    log_w_test = log_importance_weights(ctx.u_data_all[idx], log_q_forward)
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
    log_z = getattr(system, "log_z", None)
    if log_z is not None and math.isfinite(nll):
        # forward KL(p || q) = E_p[log p - log q] = NLL - E_p[u] - log Z on the same subset
        metrics["forward_kl"] = float(nll - ctx.u_data_all[idx].mean() - float(log_z))
    return metrics, arrays
