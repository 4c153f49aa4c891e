"""Particle systems in reduced units: the DW4 double-well and the Lennard-Jones clusters LJ13/LJ55.

All energies are reduced (kT = 1) and invariant under rotations, reflections, translations and
permutations of the (identical) particles.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from eqbg.geometry import remove_mean
from eqbg.systems.base import System, pairwise_sq_distances, safe_sqrt

PAIR_CONVENTIONS = ("ordered", "unique")


class MultiDoubleWell(System):
    """Pairwise double-well potential (Köhler et al. 2020, DW4 with the defaults).

    ``u(x) = sum_{i<j} a (r_ij - d0)^4 + b (r_ij - d0)^2`` with ``a = 0.9``, ``b = -4``,
    ``d0 = 4`` and kT = 1 (the bgflow / E-NF / EACF / EFM convention; EACF's
    ``1/(2τ) Σ_{i≠j}`` form is the same number). Each pair has minima at
    ``r = d0 ± sqrt(-b / (2a))`` with pair energy ``-b^2 / (4a)``.

    The distance uses a square root whose gradient is set to 0 where two particles coincide
    (the pair energy is a cone there, so any subgradient is valid) to keep gradients finite.
    """

    def __init__(
        self,
        n_particles: int = 4,
        spatial_dim: int = 2,
        *,
        a: float = 0.9,
        b: float = -4.0,
        d0: float = 4.0,
        name: str = "dw4",
    ) -> None:
        super().__init__(
            name=name,
            n_particles=n_particles,
            spatial_dim=spatial_dim,
            temperature=1.0,
            com_free=True,
            length_unit="reduced",
            # Informational: Metropolis step that gives ~50 % acceptance for DW4 at kT = 1.
            reference={"mcmc_step_size": 0.5, "kT": 1.0},
        )
        self.a, self.b, self.d0 = float(a), float(b), float(d0)

    def energy(self, x: Tensor) -> Tensor:
        """Reduced energy ``(batch,)`` of positions ``x: (batch, n, d)`` (reduced units)."""
        x = self.check_positions(x)
        s = safe_sqrt(pairwise_sq_distances(x)) - self.d0
        s2 = s * s
        return (self.a * s2 * s2 + self.b * s2).sum(-1)


class LennardJones(System):
    """Lennard-Jones cluster with a harmonic restraint to the centre of mass (LJ13, LJ55).

    ``u(x) = c * sum_{i<j} eps [(r_m/r)^12 - 2 (r_m/r)^6] + k/2 * sum_i |x_i - x_com|^2``, kT = 1,
    ``eps = r_m = 1`` and ``k = 1`` by default, where ``c`` is set by ``pair_convention``:

    * ``"ordered"`` (default, ``c = 2``): the pair term summed over ordered pairs ``i != j``, as in
      Köhler's / E-NF's code and the Equivariant Flow Matching data (the project's default).
    * ``"unique"`` (``c = 1``): summed over unique pairs ``i < j``, as in bgflow and EACF.

    Soft core: for ``r < r_c`` (default ``r_c = 0.6 r_m``) the pair term, written as a function of
    ``s = (r/r_m)^2``, is continued by its second-order Taylor polynomial at ``s_c = (r_c/r_m)^2``
    (value, slope and curvature match, so ``u`` is C2). The polynomial is smooth in ``x`` even at
    ``r = 0`` and decreasing in ``s`` (the core stays repulsive); its maximum at ``r = 0`` is
    about 1.2e4 per unique pair for ``r_c = 0.6``. Equilibrium configurations never reach it (the
    smallest pair distance in the EFM LJ13 data is ≈ 0.83), so energies there are unchanged.
    ``r_c = 0`` switches the soft core off (coincident particles then give ``inf``/NaN).
    """

    def __init__(
        self,
        n_particles: int = 13,
        spatial_dim: int = 3,
        *,
        pair_convention: str = "ordered",
        r_c: float = 0.6,
        epsilon: float = 1.0,
        r_m: float = 1.0,
        harmonic: float = 1.0,
        name: str | None = None,
    ) -> None:
        if pair_convention not in PAIR_CONVENTIONS:
            raise ValueError(
                f"pair_convention must be one of {PAIR_CONVENTIONS}, got {pair_convention!r}"
            )
        # r_c must stay inside the repulsive wall: beyond 2^(-1/6) r_m the core would change the
        # energy near the minimum, which the soft core promises never to do.
        if not 0.0 <= r_c < 2.0 ** (-1.0 / 6.0) * r_m:
            raise ValueError(
                f"r_c must lie in [0, 2^(-1/6) r_m) = [0, {2 ** (-1 / 6) * r_m:.4f}), got {r_c}"
            )
        reference: dict[str, Any] = {
            # Informational Metropolis step sizes (per coordinate, reduced units) at kT = 1.
            "mcmc_step_size": 0.025 if n_particles <= 13 else 0.015,
            "kT": 1.0,
        }
        super().__init__(
            name=name or f"lj{n_particles}",
            n_particles=n_particles,
            spatial_dim=spatial_dim,
            temperature=1.0,
            com_free=True,
            length_unit="reduced",
            reference=reference,
        )
        self.pair_convention = pair_convention
        self.pair_factor = 2.0 if pair_convention == "ordered" else 1.0
        self.epsilon, self.r_m, self.harmonic = float(epsilon), float(r_m), float(harmonic)
        self.r_c = float(r_c)
        self._s_c = (self.r_c / self.r_m) ** 2
        if self._s_c > 0:
            sc = self._s_c
            # phi(s) = s^-6 - 2 s^-3 and its first two derivatives at s_c
            self._phi0 = sc**-6 - 2.0 * sc**-3
            self._phi1 = -6.0 * sc**-7 + 6.0 * sc**-4
            self._phi2 = 42.0 * sc**-8 - 24.0 * sc**-5

    def pair_energy(self, sq_dist: Tensor) -> Tensor:
        """LJ pair term ``eps [(r_m/r)^12 - 2 (r_m/r)^6]`` (with soft core) of squared distances.

        Args:
            sq_dist: squared distances ``r^2``, any shape.

        Returns:
            same shape; one *unique* pair each (no convention factor).
        """
        s = sq_dist / (self.r_m**2)
        if self._s_c <= 0:
            inv3 = s.reciprocal() ** 3
            return self.epsilon * (inv3 * inv3 - 2.0 * inv3)
        sc = self._s_c
        outside = s >= sc
        # evaluate the exact branch only where it is used, so that tiny s cannot overflow to inf
        # and poison the gradient through torch.where
        s_out = torch.where(outside, s, torch.full_like(s, sc))
        inv3 = s_out.reciprocal() ** 3
        exact = inv3 * inv3 - 2.0 * inv3
        ds = s - sc
        taylor = self._phi0 + self._phi1 * ds + 0.5 * self._phi2 * ds * ds
        return self.epsilon * torch.where(outside, exact, taylor)

    def harmonic_energy(self, x: Tensor) -> Tensor:
        """``k/2 sum_i |x_i - x_com|^2`` of ``x: (batch, n, d)``; returns ``(batch,)``."""
        centred = remove_mean(x)
        return 0.5 * self.harmonic * (centred * centred).sum((-1, -2))

    def lj_energy(self, x: Tensor) -> Tensor:
        """Pair part ``c * sum_{i<j} phi(r_ij)`` of ``x: (batch, n, d)``; returns ``(batch,)``."""
        return self.pair_factor * self.pair_energy(pairwise_sq_distances(x)).sum(-1)

    def energy(self, x: Tensor) -> Tensor:
        """Reduced energy ``(batch,)`` of positions ``x: (batch, n, 3)`` (reduced units)."""
        x = self.check_positions(x)
        return self.lj_energy(x) + self.harmonic_energy(x)


def double_well_pair_minimum(
    a: float = 0.9, b: float = -4.0, d0: float = 4.0
) -> tuple[float, float]:
    """Outer minimiser ``r*`` and minimum pair energy of ``a (r-d0)^4 + b (r-d0)^2``."""
    s = math.sqrt(-b / (2.0 * a))
    return d0 + s, -b * b / (4.0 * a)
