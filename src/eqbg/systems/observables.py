"""The observables a system may offer beyond energies and pair distances, each a capability
protocol: a system offers an observable by implementing its methods (``isinstance(system,
HasModes)``), and metrics that need one apply where it is implemented."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

__all__ = ["HasDihedrals", "HasChirality", "HasModes", "HasTestFunction", "OBSERVABLES"]


@runtime_checkable
class HasDihedrals(Protocol):
    """A system with backbone dihedrals (observable ``"dihedrals"``)."""

    def dihedrals(self, x: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(phi, psi)``, each ``(batch,)`` in radians in ``(-pi, pi]``, of ``x: (batch, n, d)``."""
        ...


@runtime_checkable
class HasChirality(Protocol):
    """A chiral system (observable ``"chirality"``)."""

    def chirality(self, x: Tensor | np.ndarray) -> np.ndarray:
        """Signed chirality volume ``(batch,)`` of ``x`` (positive: the natural enantiomer)."""
        ...

    def map_to_l(self, x: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(x with the unnatural enantiomers mirrored, which were mirrored (batch,) bool)``."""
        ...


@runtime_checkable
class HasModes(Protocol):
    """A target with known, countable modes (observable ``"modes"``)."""

    n_modes: int  #: number of modes

    def mode_index(self, x: Tensor) -> Tensor:
        """``(batch,)`` index in ``[0, n_modes)`` of each configuration's mode (-1: in none)."""
        ...


@runtime_checkable
class HasTestFunction(Protocol):
    """A target with a test function of exactly known expectation (observable ``"test_function"``)."""

    def quadratic_test_function(
        self, seed: int = 0, draw_dtype: torch.dtype = torch.float64
    ) -> tuple[Callable[[Tensor], Tensor], float]:
        """``(f, E_p[f])``: a test function (its random coefficients drawn in ``draw_dtype``)
        and its exact expectation under the target."""
        ...


#: Observables a system may offer beyond energies and pair distances: name -> the capability
#: protocol a system implements to offer it. A system's ``observables`` are derived from the
#: protocols it implements; its :class:`SystemSpec` declares them for the workflow (which builds
#: no system), and :func:`eqbg.systems.get_system` holds the two equal.
OBSERVABLES: Mapping[str, type] = MappingProxyType({
    "dihedrals": HasDihedrals, "chirality": HasChirality, "modes": HasModes,
    "test_function": HasTestFunction,
})
