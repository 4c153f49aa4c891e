"""Flows: the :class:`Flow` protocol every model implements, priors, ODE solvers, the continuous
normalizing flow with its divergence estimators, and the model registry
(:mod:`eqbg.flows.registry`, the one place where a new model is registered)."""

from __future__ import annotations

from .base import DENSITY_KINDS, INVARIANCES, DensityKind, Flow, FlowSample
from .cnf import CNF
from .divergence import (
    exact_divergence,
    hutchinson_divergence,
    make_probe,
    subspace_basis,
    value_and_exact_divergence,
    value_and_hutchinson_divergence,
)
from .priors import CoMFreeGaussian, StandardGaussian, make_prior, remove_mean
from .solver import ADAPTIVE_METHODS, FIXED_METHODS, ODESettings, ODESolver, SolverSettings

__all__ = [
    "DENSITY_KINDS",
    "INVARIANCES",
    "DensityKind",
    "Flow",
    "FlowSample",
    "CNF",
    "ODESolver",
    "ODESettings",
    "SolverSettings",
    "ADAPTIVE_METHODS",
    "FIXED_METHODS",
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
