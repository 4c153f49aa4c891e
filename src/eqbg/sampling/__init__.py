"""Sampling from trained flows: sampling runs that write ``samples.npz`` with log densities."""

from __future__ import annotations

from eqbg.sampling.run import sample_run
from eqbg.sampling.settings import SamplingSettings

__all__ = ["SamplingSettings", "sample_run"]
