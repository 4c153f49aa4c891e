"""Evaluation of trained Boltzmann generators: importance weights, ESS, NLL, distribution
metrics, alanine-dipeptide observables, and cost (the tables of a run are in :mod:`eqbg.tables`)."""

from __future__ import annotations

from eqbg.evaluation.context import EvaluationContext, compute_energies
from eqbg.evaluation.cost import training_cost
from eqbg.evaluation.dihedrals import (
    basin_free_energy_difference,
    ramachandran_basin_fractions,
    ramachandran_histogram,
)
from eqbg.evaluation.distributions import (
    common_bins,
    density_histogram,
    histogram_kl,
    pairwise_distances,
    wasserstein_1d,
)
from eqbg.evaluation.metric import METRICS, MetricSpec, register_metric
from eqbg.evaluation.nll import (
    NLL_CONVENTIONS,
    NLLConvention,
    convert_nll,
    conventions_table,
    model_log_prob,
    nll_from_log_prob,
    prior_log_normaliser,
    subset_indices,
)
from eqbg.evaluation.run import METRIC_KEYS, evaluate_run, evaluate_samples, metric_labels, metric_notes
from eqbg.evaluation.settings import DEFAULT_SETTINGS, resolve_settings
from eqbg.evaluation.weights import (
    DEFAULT_ENERGY_CAP,
    FailedSamples,
    bootstrap_ess,
    find_failed_samples,
    forward_ess,
    kish_ess,
    log_importance_weights,
    mean_and_sem,
    normalised_weights,
    reweighted_mean,
)

__all__ = [
    "DEFAULT_SETTINGS",
    "METRIC_KEYS",
    "METRICS",
    "EvaluationContext",
    "MetricSpec",
    "register_metric",
    "compute_energies",
    "evaluate_run",
    "evaluate_samples",
    "metric_labels",
    "metric_notes",
    "resolve_settings",
    "training_cost",
    "DEFAULT_ENERGY_CAP",
    "NLL_CONVENTIONS",
    "FailedSamples",
    "NLLConvention",
    "basin_free_energy_difference",
    "bootstrap_ess",
    "common_bins",
    "conventions_table",
    "convert_nll",
    "density_histogram",
    "histogram_kl",
    "find_failed_samples",
    "forward_ess",
    "kish_ess",
    "log_importance_weights",
    "mean_and_sem",
    "model_log_prob",
    "nll_from_log_prob",
    "normalised_weights",
    "pairwise_distances",
    "prior_log_normaliser",
    "ramachandran_basin_fractions",
    "ramachandran_histogram",
    "reweighted_mean",
    "subset_indices",
    "wasserstein_1d",
]
