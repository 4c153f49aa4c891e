"""Reference samplers, one module each, in one registry: a system names its sampler
(``SystemSpec.reference_sampler``) and :func:`eqbg.data.make_reference_data` runs it.

A sampler is ``sample(system, settings, seed) -> (splits, diagnostics)`` (``splits``: ``train``,
``val``, ``test`` arrays ``(N, n, d)`` that share no chain, time block or draw; ``diagnostics``:
what the convergence checks read, JSON-ready) and ``describe(settings) -> str`` (one line for
``provenance.json``), registered with its settings dataclass (every key and default, documented;
declared in :mod:`eqbg.data.settings`, which resolves a system's settings against them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from eqbg.data.samplers import exact, mcmc, md
from eqbg.data.settings import ExactDataSettings, MCMCDataSettings, MDDataSettings

__all__ = ["REFERENCE_SAMPLERS", "ReferenceSampler", "register_reference_sampler"]


@dataclass(frozen=True)
class ReferenceSampler:
    """A registered reference sampler."""

    sample: Callable[[Any, dict[str, Any], int], tuple[dict[str, np.ndarray], dict[str, Any]]]
    describe: Callable[[Mapping[str, Any]], str]
    settings: type  #: its settings dataclass (the config's ``systems.<name>.data``)


#: name -> reference sampler; the only list of sampler names
REFERENCE_SAMPLERS: dict[str, ReferenceSampler] = {}


def register_reference_sampler(name: str, sample: Callable, describe: Callable, settings: type) -> None:
    """Make ``name`` usable as a system's ``reference_sampler``, with its settings dataclass."""
    REFERENCE_SAMPLERS[name] = ReferenceSampler(sample, describe, settings)


register_reference_sampler("mcmc", mcmc.sample, mcmc.describe, MCMCDataSettings)
register_reference_sampler("md", md.sample, md.describe, MDDataSettings)
register_reference_sampler("exact", exact.sample, exact.describe, ExactDataSettings)
