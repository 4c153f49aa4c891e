"""Target systems: reduced energies ``u(x) = U(x)/kT`` over positions ``(batch, n, d)``.

>>> from eqbg.systems import get_system
>>> lj = get_system("lj13", pair_convention="unique")
>>> lj.energy(x)  # x: (batch, 13, 3) -> (batch,)

Registry names (:data:`KNOWN_SYSTEMS`):

* ``dw4`` — 4 particles in 2D, pairwise double well (:class:`MultiDoubleWell`).
* ``lj13``, ``lj55`` — Lennard-Jones clusters in 3D with a harmonic CoM restraint
  (:class:`LennardJones`; options ``pair_convention="ordered"|"unique"``, ``r_c``).
* ``aldp`` — alanine dipeptide in implicit solvent, nm, OpenMM (:class:`AlanineDipeptide`;
  options ``temperature``, ``n_workers``, ``pool_threshold``, ``platform``, ``start_method``).
* ``gmm40`` — FAB's 2D mixture of 40 Gaussians (:class:`GaussianMixture40`; option ``seed``).
* ``manywell32`` — FAB's 32D many-well (:class:`ManyWell`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eqbg.systems.base import ExactSystem, System
from eqbg.systems.particles import PAIR_CONVENTIONS, LennardJones, MultiDoubleWell
from eqbg.systems.toy import GaussianMixture40, ManyWell


def _aldp(**options: Any) -> System:
    # imported lazily: OpenMM is only needed when alanine dipeptide is used
    from eqbg.systems.aldp import AlanineDipeptide

    return AlanineDipeptide(**options)


_FACTORIES: dict[str, Callable[..., System]] = {
    "dw4": lambda **o: MultiDoubleWell(n_particles=4, spatial_dim=2, name="dw4", **o),
    "lj13": lambda **o: LennardJones(n_particles=13, spatial_dim=3, name="lj13", **o),
    "lj55": lambda **o: LennardJones(n_particles=55, spatial_dim=3, name="lj55", **o),
    "aldp": _aldp,
    "gmm40": lambda **o: GaussianMixture40(**o),
    "manywell32": lambda **o: ManyWell(n_wells=16, **o),
}

#: Names accepted by :func:`get_system`.
KNOWN_SYSTEMS: tuple[str, ...] = ("dw4", "lj13", "lj55", "aldp", "gmm40", "manywell32")
assert set(KNOWN_SYSTEMS) == set(_FACTORIES)


def get_system(name: str, **options: Any) -> System:
    """Build the system called ``name`` (one of :data:`KNOWN_SYSTEMS`) with keyword ``options``.

    Raises:
        ValueError: unknown name (the message lists the known ones) or bad option.
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"unknown system {name!r}; known systems: {', '.join(KNOWN_SYSTEMS)}")
    try:
        return factory(**options)
    except TypeError as err:
        if "unexpected keyword" not in str(err):
            raise
        # name the system and its options instead of a bare constructor signature error
        raise ValueError(f"bad options {sorted(options)} for system {name!r}: {err}") from err


def __getattr__(attr: str) -> Any:
    # lazy export, so that importing eqbg.systems does not import OpenMM
    if attr == "AlanineDipeptide":
        from eqbg.systems.aldp import AlanineDipeptide

        return AlanineDipeptide
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


__all__ = [
    "KNOWN_SYSTEMS",
    "AlanineDipeptide",
    "PAIR_CONVENTIONS",
    "ExactSystem",
    "GaussianMixture40",
    "LennardJones",
    "ManyWell",
    "MultiDoubleWell",
    "System",
    "get_system",
]
