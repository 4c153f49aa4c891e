"""Settings of the evaluation of one run: their defaults, and their resolution from a flat dict
or a full run-settings dict (``eqbg.pipeline.run_settings``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eqbg.evaluation.weights import DEFAULT_ENERGY_CAP
from eqbg.settings import resolve_device

__all__ = [
    "DEFAULT_SETTINGS", "REFERENCE_POPULATION_FILE", "RUN_SECTIONS", "resolve_settings", "split_run_settings",
]

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
