"""The :class:`System` base class every target (DW4, LJ, alanine dipeptide, toy densities) extends.

A system is a Boltzmann density ``p(x) ∝ exp(-u(x))`` over particle positions
``x: (batch, n_particles, spatial_dim)`` with a *reduced* energy ``u = U / kT`` (dimensionless).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from eqbg.systems.observables import OBSERVABLES


#: How reference data of a system are generated (``eqbg.data``): Markov chain Monte Carlo,
#: molecular dynamics (OpenMM), or an exact sampler.
REFERENCE_SAMPLERS: tuple[str, ...] = ("mcmc", "md", "exact")


@dataclass(frozen=True)
class SystemSpec:
    """Static facts of a registered system, known without building its energy.

    Building a system can be costly (alanine dipeptide creates an OpenMM system), so the
    registry keeps one spec per name; :func:`eqbg.systems.get_system` checks that the system it
    builds agrees with its spec on every field :data:`SPEC_FIELDS` names.

    Attributes:
        name: registry name.
        n_particles, spatial_dim: positions have shape ``(batch, n_particles, spatial_dim)``.
        com_free: data and models live on the zero-centre-of-mass subspace.
        length_unit: unit of positions, ``"reduced"`` or ``"nm"``.
        reference_sampler: one of :data:`REFERENCE_SAMPLERS`.
        observables: extra observables, a subset of :data:`OBSERVABLES`.
        second_derivatives: the energy can be differentiated twice with autograd (needed for
            the Laplacian in the configurational temperature).
        options: keyword options ``get_system(name, **options)`` accepts.
        data_defaults: per-system reference-data settings layered over the sampler's defaults
            (:func:`eqbg.data.settings.resolve_settings`); read-only.
    """

    name: str
    n_particles: int
    spatial_dim: int
    com_free: bool
    length_unit: str
    reference_sampler: str
    observables: tuple[str, ...] = ()
    second_derivatives: bool = True
    options: tuple[str, ...] = ()
    data_defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reference_sampler not in REFERENCE_SAMPLERS:
            raise ValueError(
                f"{self.name}: reference_sampler must be one of {REFERENCE_SAMPLERS}, "
                f"got {self.reference_sampler!r}"
            )
        unknown = sorted(set(self.observables) - set(OBSERVABLES))
        if unknown:
            raise ValueError(f"{self.name}: unknown observables {unknown}; known: {OBSERVABLES}")
        frozen = {
            k: MappingProxyType(dict(v)) if isinstance(v, Mapping) else v
            for k, v in self.data_defaults.items()
        }
        object.__setattr__(self, "data_defaults", MappingProxyType(frozen))

    @property
    def dim(self) -> int:
        """Degrees of freedom: ``(n-1)*d`` on the CoM-free subspace, ``n*d`` otherwise."""
        return (self.n_particles - int(self.com_free)) * self.spatial_dim


#: Fields a built :class:`System` and its :class:`SystemSpec` must agree on.
SPEC_FIELDS: tuple[str, ...] = (
    "name",
    "n_particles",
    "spatial_dim",
    "com_free",
    "length_unit",
    "reference_sampler",
    "observables",
    "second_derivatives",
    "dim",
)


class System:
    """Base class for a target density over particle positions.

    Attributes:
        name: registry name (``"dw4"``, ``"lj13"``, ...).
        n_particles: number of particles ``n``.
        spatial_dim: dimension ``d`` of the space each particle lives in.
        atom_types: LongTensor ``(n,)``; particles with equal type may be permuted without
            changing the energy. Types are numbered ``0 .. n_types-1`` in order of first appearance.
        temperature: kelvin for molecular systems, ``1.0`` (reduced) otherwise.
        com_free: whether data and models live on the zero-centre-of-mass subspace.
        length_unit: unit of positions (``"reduced"`` or ``"nm"``).
        reference: informational hints for reference samplers (step sizes, ...); nothing here
            is required by the energy.

    Capabilities (class attributes, overridden by subclasses):

    * ``reference_sampler``: how reference data are made, one of :data:`REFERENCE_SAMPLERS`
      (``"mcmc"`` here, ``"exact"`` for :class:`ExactSystem`, ``"md"`` for OpenMM systems).
    * :attr:`observables`: derived from the capability protocols of :data:`~eqbg.systems.observables.OBSERVABLES`
      the system implements (``HasDihedrals``, ``HasChirality``, ``HasModes``, ``HasTestFunction``).
    * ``second_derivatives``: whether autograd can differentiate the energy twice.
    * :attr:`mean_energy`: exact ``E_p[u]`` where known, else ``None``.
    """

    reference_sampler: str = "mcmc"
    second_derivatives: bool = True

    name: str
    n_particles: int
    spatial_dim: int
    atom_types: Tensor
    temperature: float
    com_free: bool
    length_unit: str
    reference: dict[str, Any]

    def __init__(
        self,
        *,
        name: str,
        n_particles: int,
        spatial_dim: int,
        atom_types: Tensor | None = None,
        temperature: float = 1.0,
        com_free: bool = True,
        length_unit: str = "reduced",
        reference: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.n_particles = int(n_particles)
        self.spatial_dim = int(spatial_dim)
        if atom_types is None:
            atom_types = torch.zeros(self.n_particles, dtype=torch.long)
        atom_types = torch.as_tensor(atom_types, dtype=torch.long)
        if atom_types.shape != (self.n_particles,):
            raise ValueError(
                f"atom_types must have shape ({self.n_particles},), got {tuple(atom_types.shape)}"
            )
        self.atom_types = atom_types
        self.temperature = float(temperature)
        self.com_free = bool(com_free)
        self.length_unit = length_unit
        self.reference = dict(reference or {})

    @property
    def dim(self) -> int:
        """Degrees of freedom: ``(n-1)*d`` on the CoM-free subspace, ``n*d`` otherwise."""
        n = self.n_particles - 1 if self.com_free else self.n_particles
        return n * self.spatial_dim

    @property
    def n_types(self) -> int:
        """Number of distinct atom types."""
        return int(self.atom_types.max().item()) + 1

    def check_positions(self, x: Tensor) -> Tensor:
        """Validate ``x`` as ``(batch, n_particles, spatial_dim)`` floating-point positions.

        A single configuration ``(n, d)`` is rejected rather than silently broadcast, because a
        missing batch axis usually means a caller bug (e.g. a flattened ``(B, n*d)`` tensor).
        """
        if not isinstance(x, Tensor):
            raise TypeError(
                f"{self.name}: positions must be a torch.Tensor, got {type(x).__name__}"
            )
        expected = (self.n_particles, self.spatial_dim)
        if x.ndim != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"{self.name}: positions must have shape (batch, {expected[0]}, {expected[1]}), "
                f"got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{self.name}: positions must be floating point, got {x.dtype}")
        return x

    def energy(self, x: Tensor) -> Tensor:
        """Reduced energy ``u(x) = U(x)/kT``.

        Args:
            x: positions ``(batch, n_particles, spatial_dim)`` in ``length_unit``.

        Returns:
            ``(batch,)`` tensor, same dtype and device as ``x``; differentiable with autograd.
        """
        raise NotImplementedError

    def __call__(self, x: Tensor) -> Tensor:
        return self.energy(x)

    @property
    def observables(self) -> tuple[str, ...]:
        """The extra observables this system offers: those whose protocol it implements."""
        return tuple(name for name, protocol in OBSERVABLES.items() if isinstance(self, protocol))

    @property
    def mean_energy(self) -> float | None:
        """Exact mean reduced energy ``E_p[u]`` (kT) under ``p ∝ exp(-u)``; ``None`` if unknown."""
        return None

    def spec_mismatch(self, spec: SystemSpec) -> list[str]:
        """Fields of :data:`SPEC_FIELDS` on which this system and ``spec`` disagree (empty when
        they agree), as ``"field: system=..., spec=..."``."""
        return [
            f"{f}: system={getattr(self, f)!r}, spec={getattr(spec, f)!r}"
            for f in SPEC_FIELDS
            if getattr(self, f) != getattr(spec, f)
        ]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n_particles={self.n_particles}, "
            f"spatial_dim={self.spatial_dim}, temperature={self.temperature}, "
            f"com_free={self.com_free})"
        )


class ExactSystem(System):
    """A system with an exact sampler and an exact normaliser (GMM-40, many-well).

    ``log_prob(x) = -energy(x) - log_z`` is the normalised log density on ``R^{n*d}``.
    """

    reference_sampler = "exact"

    #: exact ``log ∫ exp(-u(x)) dx`` over ``R^{n*d}``.
    log_z: float

    def sample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``num`` exact samples ``(num, n_particles, spatial_dim)`` (float64, CPU)."""
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        """Normalised log density ``(batch,)`` of positions ``x: (batch, n, d)``."""
        return -self.energy(x) - self.log_z


def pairwise_sq_distances(x: Tensor) -> Tensor:
    """Squared distances of the unique pairs ``i < j``.

    Args:
        x: ``(batch, n, d)``.

    Returns:
        ``(batch, n*(n-1)/2)``, ordered as ``torch.triu_indices(n, n, 1)``.

    Works with squared distances on purpose: ``sqrt`` has an infinite derivative at 0, which
    turns into NaN gradients for coincident particles.
    """
    n = x.shape[-2]
    i, j = torch.triu_indices(n, n, offset=1, device=x.device)
    diff = x[..., i, :] - x[..., j, :]
    return (diff * diff).sum(-1)


def safe_sqrt(s: Tensor) -> Tensor:
    """``sqrt(s)`` whose gradient at ``s == 0`` is 0 instead of NaN (``s >= 0`` assumed)."""
    positive = s > 0
    # the double where keeps the unused branch's gradient finite (0 * inf would be NaN)
    return torch.where(positive, torch.sqrt(torch.where(positive, s, torch.ones_like(s))), 0.0 * s)


LOG_2PI = math.log(2.0 * math.pi)
