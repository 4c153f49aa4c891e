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

Everything special about a system lives here: :func:`system_spec` gives its static facts
(:class:`SystemSpec`: shape, unit, reference sampler, observables, accepted options, reference-
data defaults) without building its energy. Adding a system is one module plus one entry in
``_REGISTRY``; code elsewhere asks for capabilities, never for names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from eqbg.systems.base import (
    REFERENCE_SAMPLERS,
    SPEC_FIELDS,
    ExactSystem,
    System,
    SystemSpec,
)
from eqbg.systems.observables import (
    OBSERVABLES,
    HasChirality,
    HasDihedrals,
    HasModes,
    HasTestFunction,
)
from eqbg.systems.particles import PAIR_CONVENTIONS, LennardJones, MultiDoubleWell
from eqbg.systems.toy import GaussianMixture40, ManyWell


def _aldp(**options: Any) -> System:
    # imported lazily: OpenMM is only needed when alanine dipeptide is used
    from eqbg.systems.aldp import AlanineDipeptide

    return AlanineDipeptide(**options)


@dataclass(frozen=True)
class _Entry:
    spec: SystemSpec
    build: Callable[..., System]


_DW_OPTIONS = ("a", "b", "d0")
_LJ_OPTIONS = ("pair_convention", "r_c", "epsilon", "r_m", "harmonic")

# Reference-data defaults (eqbg.data.settings) layered over the sampler's defaults ("laptop"
# size: train 10k / val 1k / test 2k, a few minutes on 2 cores; measured numbers in the
# data-stage report). Placement scales follow each potential's length scale (DW4 pair minima
# near d = 2.5 and 5.5, LJ minimum at r_m = 1). DW4 is cheap with random-walk Metropolis; the LJ
# clusters use MALA, whose step shrinks much more slowly with dimension (LJ55: step 0.021 vs
# 0.0074, ~5x faster equilibration per CPU second). LJ55's chains hold only ~25 energy IATs each
# at this budget, where sampling noise alone puts split R-hat near 1.05, so its laptop threshold
# is 1.1 (the paper preset uses longer chains and 1.05).
_REGISTRY: dict[str, _Entry] = {
    "dw4": _Entry(
        SystemSpec(
            name="dw4", n_particles=4, spatial_dim=2, com_free=True, length_unit="reduced",
            reference_sampler="mcmc", options=_DW_OPTIONS,
            data_defaults={
                "init_radius": 3.0, "init_min_dist": 1.0, "proposal": "rw", "step_size": 0.5,
                "target_acceptance": 0.3, "n_chains": 128, "burn_in": 5_000, "thin": 50,
            },
        ),
        lambda **o: MultiDoubleWell(n_particles=4, spatial_dim=2, name="dw4", **o),
    ),
    "lj13": _Entry(
        SystemSpec(
            name="lj13", n_particles=13, spatial_dim=3, com_free=True, length_unit="reduced",
            reference_sampler="mcmc", options=_LJ_OPTIONS,
            data_defaults={
                "init_radius": 2.0, "init_min_dist": 0.9, "proposal": "mala", "step_size": 0.03,
                "target_acceptance": 0.57, "n_chains": 64, "burn_in": 10_000, "thin": 200,
            },
        ),
        lambda **o: LennardJones(n_particles=13, spatial_dim=3, name="lj13", **o),
    ),
    "lj55": _Entry(
        SystemSpec(
            name="lj55", n_particles=55, spatial_dim=3, com_free=True, length_unit="reduced",
            reference_sampler="mcmc", options=_LJ_OPTIONS,
            data_defaults={
                "init_radius": 3.0, "init_min_dist": 0.9, "proposal": "mala", "step_size": 0.02,
                "target_acceptance": 0.57, "n_chains": 32, "burn_in": 8_000, "thin": 60,
                "convergence": {"rhat_max": 1.1},
            },
        ),
        lambda **o: LennardJones(n_particles=55, spatial_dim=3, name="lj55", **o),
    ),
    "aldp": _Entry(
        SystemSpec(
            name="aldp", n_particles=22, spatial_dim=3, com_free=True, length_unit="nm",
            reference_sampler="md", observables=("dihedrals", "chirality"),
            second_derivatives=False,
            options=("temperature", "n_workers", "pool_threshold", "platform", "start_method",
                     "structure"),
        ),
        _aldp,
    ),
    "gmm40": _Entry(
        SystemSpec(
            name="gmm40", n_particles=1, spatial_dim=2, com_free=False, length_unit="reduced",
            reference_sampler="exact", observables=("modes", "test_function"),
            options=("n_modes", "loc_scaling", "log_var_scaling", "seed"),
        ),
        lambda **o: GaussianMixture40(**o),
    ),
    "manywell32": _Entry(
        SystemSpec(
            name="manywell32", n_particles=16, spatial_dim=2, com_free=False,
            length_unit="reduced", reference_sampler="exact", observables=("modes",),
        ),
        lambda **o: ManyWell(n_wells=16, **o),
    ),
}  # fmt: skip

#: Names accepted by :func:`get_system`, in registry order.
KNOWN_SYSTEMS: tuple[str, ...] = tuple(_REGISTRY)

#: Static facts of every registered system, by name (read-only).
SYSTEM_SPECS: Mapping[str, SystemSpec] = MappingProxyType({k: e.spec for k, e in _REGISTRY.items()})


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown system {name!r}; known systems: {', '.join(KNOWN_SYSTEMS)}")


def system_spec(name: str) -> SystemSpec:
    """Static facts of the system called ``name``, without building it.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    spec = SYSTEM_SPECS.get(name)
    if spec is None:
        raise _unknown(name)
    return spec


def systems_with_sampler(*samplers: str) -> tuple[str, ...]:
    """Registered names whose ``reference_sampler`` is one of ``samplers`` (registry order)."""
    bad = sorted(set(samplers) - set(REFERENCE_SAMPLERS))
    if bad:
        raise ValueError(f"unknown reference sampler(s) {bad}; known: {REFERENCE_SAMPLERS}")
    return tuple(n for n, s in SYSTEM_SPECS.items() if s.reference_sampler in samplers)


def name_pattern(*samplers: str) -> str:
    """Regular expression matching exactly the names of :func:`systems_with_sampler`, for
    Snakemake wildcard constraints (e.g. ``"dw4|lj13|lj55"``)."""
    names = systems_with_sampler(*samplers)
    if not names:
        raise ValueError(f"no registered system uses reference sampler(s) {samplers}")
    return "|".join(re.escape(n) for n in names)


def get_system(name: str, **options: Any) -> System:
    """Build the system called ``name`` (one of :data:`KNOWN_SYSTEMS`) with keyword ``options``
    (those in ``system_spec(name).options``).

    Raises:
        ValueError: unknown name (the message lists the known ones) or bad option.
        RuntimeError: the built system disagrees with its registry spec (a registry bug).
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise _unknown(name)
    unknown = sorted(set(options) - set(entry.spec.options))
    if unknown:
        # name the system and its options instead of a bare constructor signature error
        raise ValueError(
            f"bad options {unknown} for system {name!r}; it accepts {list(entry.spec.options)}"
        )
    system = entry.build(**options)
    mismatch = system.spec_mismatch(entry.spec)
    if mismatch:
        raise RuntimeError(f"system {name!r} disagrees with its registry spec: {mismatch}")
    return system


def __getattr__(attr: str) -> Any:
    # lazy export, so that importing eqbg.systems does not import OpenMM
    if attr == "AlanineDipeptide":
        from eqbg.systems.aldp import AlanineDipeptide

        return AlanineDipeptide
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


__all__ = [
    "KNOWN_SYSTEMS",
    "OBSERVABLES",
    "HasChirality",
    "HasDihedrals",
    "HasModes",
    "HasTestFunction",
    "REFERENCE_SAMPLERS",
    "SPEC_FIELDS",
    "SYSTEM_SPECS",
    "SystemSpec",
    "name_pattern",
    "system_spec",
    "systems_with_sampler",
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
