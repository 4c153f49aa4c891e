"""Flows: priors, continuous normalizing flow and divergence estimators."""

from __future__ import annotations

from .cnf import CNF, SampleResult
from .divergence import (
    exact_divergence,
    hutchinson_divergence,
    make_probe,
    subspace_basis,
    value_and_exact_divergence,
    value_and_hutchinson_divergence,
)
from .priors import CoMFreeGaussian, StandardGaussian, make_prior, remove_mean

__all__ = [
    "CNF",
    "SampleResult",
    "CoMFreeGaussian",
    "StandardGaussian",
    "make_prior",
    "remove_mean",
    "exact_divergence",
    "hutchinson_divergence",
    "make_probe",
    "subspace_basis",
    "value_and_exact_divergence",
    "value_and_hutchinson_divergence",
]
