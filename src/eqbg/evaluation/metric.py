"""The metric registry: every metric of one set of samples, where it applies and what it writes.

A metric is a function of an :class:`~eqbg.evaluation.context.EvaluationContext` returning
``(metrics, arrays)``: scalars for ``metrics.json`` and arrays for ``eval.npz``. It declares the
keys it always writes where it applies (``keys``) and those it writes only sometimes
(``optional_keys``); a test holds every registered metric to its declaration. Evaluation is a loop
over :data:`METRICS` in registration order, which is the order of ``metrics.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eqbg.evaluation.context import EvaluationContext

__all__ = ["METRICS", "MetricSpec", "always", "register_metric", "compute_metrics", "implements"]

MetricResult = tuple[dict[str, Any], dict[str, np.ndarray]]


def always(ctx: EvaluationContext) -> bool:
    """A metric every evaluation reports."""
    return True


def implements(capability: type) -> Callable[[EvaluationContext], bool]:
    """A metric of systems that implement the capability protocol ``capability`` (e.g.
    :class:`eqbg.systems.base.HasModes`)."""

    def applies(ctx: EvaluationContext) -> bool:
        return isinstance(ctx.system, capability)

    applies.__doc__ = f"Systems that are {capability.__name__}."
    return applies


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric."""

    compute: Callable[[EvaluationContext], MetricResult]
    keys: tuple[str, ...]  #: metrics.json keys written wherever the metric applies
    applies: Callable[[EvaluationContext], bool]
    description: str
    optional_keys: tuple[str, ...] = ()  #: keys written only in some cases (said where)
    #: column labels of the keys the tables show (``eqbg.tables``), e.g. ``{"ess": "ESS (frac.)"}``
    labels: dict[str, str] = field(default_factory=dict)
    #: what its columns mean, in sentences under every per-system table (conventions, definitions)
    notes: tuple[str, ...] = ()


#: name -> metric, in evaluation order; the only list of metrics of one set of samples
METRICS: dict[str, MetricSpec] = {}


def register_metric(
    name: str,
    compute: Callable[[EvaluationContext], MetricResult],
    keys: tuple[str, ...],
    description: str,
    *,
    applies: Callable[[EvaluationContext], bool] = always,
    optional_keys: tuple[str, ...] = (),
    labels: dict[str, str] | None = None,
    notes: tuple[str, ...] = (),
) -> None:
    """Add ``name`` to every evaluation where ``applies(ctx)``; evaluated after those before it.
    ``labels``: table column labels of some of its keys (a labelled key is a table column);
    ``notes``: what those columns mean, written under every per-system table."""
    if name in METRICS:
        raise ValueError(f"metric {name!r} is already registered")
    unknown = set(labels or {}) - set(keys) - set(optional_keys)
    if unknown:
        raise ValueError(f"metric {name!r} labels keys it does not write: {sorted(unknown)}")
    METRICS[name] = MetricSpec(compute, tuple(keys), applies, description, tuple(optional_keys),
                               dict(labels or {}), tuple(notes))


def compute_metrics(ctx: EvaluationContext) -> MetricResult:
    """Every registered metric that applies to ``ctx``, merged in registration order."""
    metrics: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for spec in METRICS.values():
        if spec.applies(ctx):
            values, arrs = spec.compute(ctx)
            metrics.update(values)
            arrays.update(arrs)
    return metrics, arrays
