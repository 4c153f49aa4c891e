"""Exactly solvable targets of the FAB paper (Midgley et al. 2023): GMM-40 and Many-Well-32.

Both are plain densities on ``R^{n*d}`` (not CoM-free) with exact samplers and exact normalisers.
"""

from __future__ import annotations

from collections.abc import Callable

import math
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from scipy import integrate
from scipy.special import logsumexp
from torch import Tensor

from eqbg.systems.base import LOG_2PI, ExactSystem


class GaussianMixture40(ExactSystem):
    """FAB's 2D mixture of 40 equal-weight isotropic Gaussians.

    Means: ``(U - 0.5) * 2 * loc_scaling`` with ``U ~ Uniform[0,1)^{40x2}`` drawn in float32 by
    ``torch.rand`` from a ``torch.Generator`` seeded with ``seed`` (0) — the same numbers as
    fab-torch's ``GMM(dim=2, n_mixes=40, loc_scaling=40, log_var_scaling=1.0)`` built right after
    ``torch.manual_seed(0)``. Per-dimension standard deviation ``softplus(1.0) ≈ 1.3133``.

    The energy is the normalised negative log density, ``u = -log p``, hence ``log_z = 0``.
    Positions have shape ``(batch, 1, 2)`` (one "particle" in 2D).
    """

    def __init__(
        self,
        *,
        n_modes: int = 40,
        loc_scaling: float = 40.0,
        log_var_scaling: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            name="gmm40",
            n_particles=1,
            spatial_dim=2,
            temperature=1.0,
            com_free=False,
            length_unit="reduced",
            # FAB's GMM run: 1 intermediate AIS distribution, Metropolis step 5.0 (PAPERS.md §4)
            reference={"ais_metropolis_step_size": 5.0},
        )
        gen = torch.Generator().manual_seed(seed)
        u = torch.rand((n_modes, 2), generator=gen)  # float32 on purpose: matches fab-torch
        #: component means ``(n_modes, 2)`` float64
        self.means = ((u - 0.5) * 2 * loc_scaling).to(torch.float64)
        #: per-dimension standard deviation of every component
        self.std = float(F.softplus(torch.tensor(log_var_scaling, dtype=torch.float64)))
        self.n_modes = n_modes
        self.seed = seed
        self.log_z = 0.0

    def log_prob(self, x: Tensor) -> Tensor:
        """Normalised log density ``(batch,)`` of ``x: (batch, 1, 2)``."""
        x = self.check_positions(x)
        y = x[:, 0, :]
        mu = self.means.to(device=x.device, dtype=x.dtype)
        sq = ((y[:, None, :] - mu[None]) ** 2).sum(-1) / (self.std**2)  # (B, K)
        log_comp = -0.5 * sq - math.log(2 * math.pi * self.std**2)
        return torch.logsumexp(log_comp, dim=-1) - math.log(self.n_modes)

    def energy(self, x: Tensor) -> Tensor:
        """``-log p(x)`` ``(batch,)`` of ``x: (batch, 1, 2)``."""
        return -self.log_prob(x)

    def quadratic_test_function(
        self, seed: int = 0, draw_dtype: torch.dtype = torch.float64
    ) -> tuple[Callable[[Tensor], Tensor], float]:
        """FAB's test function and its exact expectation under the mixture.

        ``f(x) = (x + s)^T A (x + s) + b^T (x + s)`` with ``s = 2 N(0, I)``, ``A = 2 U[0, 1]^{2x2}``,
        ``b = U[0, 1]^2`` drawn once from ``seed`` in ``draw_dtype`` (then used in float64). For
        the mixture, ``E_p[f] = mean_k [tr(A S) + (mu_k + s)^T A (mu_k + s) + b^T (mu_k + s)]``
        with ``S = std^2 I``, exactly (FAB estimates it by Monte Carlo with 1e7 samples). The
        float32 draw is another ``f`` (FAB's "true" expectation used it; see
        :mod:`eqbg.evaluation.expectation`).

        Returns:
            ``(f: (batch, 1, 2) -> (batch,), E_p[f])``.
        """
        gen = torch.Generator().manual_seed(seed)
        shift = 2.0 * torch.randn(2, generator=gen, dtype=draw_dtype)
        a = 2.0 * torch.rand(2, 2, generator=gen, dtype=draw_dtype)
        b = torch.rand(2, generator=gen, dtype=draw_dtype)
        shift, a, b = (t.to(torch.float64) for t in (shift, a, b))

        def f(x: Tensor) -> Tensor:
            y = x.reshape(x.shape[0], 2).to(torch.float64) + shift.to(x.device)
            return torch.einsum("bi,ij,bj->b", y, a.to(x.device), y) + y @ b.to(x.device)

        m = self.means + shift
        exact = float(torch.trace(a) * self.std**2 + torch.einsum("ki,ij,kj->k", m, a, m).mean() + (m @ b).mean())
        return f, exact

    #: a sample is in a mode when it lies within this many component stds of the mode's mean
    mode_radius_std = 3.0

    def mode_index(self, x: Tensor) -> Tensor:
        """``(batch,)`` index of the mode ``x: (batch, 1, 2)`` lies in (the nearest mean, when
        within :attr:`mode_radius_std` standard deviations; -1 otherwise): coverage counts these."""
        x = self.check_positions(x)
        d = torch.cdist(x[:, 0, :].to(torch.float64), self.means.to(x.device))
        dist, idx = d.min(dim=1)
        return torch.where(dist < self.mode_radius_std * self.std, idx, torch.full_like(idx, -1))

    def sample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """``num`` exact samples ``(num, 1, 2)`` float64: pick a mode uniformly, add noise."""
        k = torch.randint(self.n_modes, (num,), generator=generator)
        eps = torch.randn((num, 2), generator=generator, dtype=torch.float64)
        return (self.means[k] + self.std * eps)[:, None, :]

    #: grid step of :attr:`mean_energy`, in units of the component standard deviation
    _h_entropy = 0.25

    @cached_property
    def mean_energy(self) -> float:
        """Exact ``E_p[u] = -∫ p log p`` (the entropy of the mixture, nats), by quadrature.

        Trapezoidal rule on a square grid of step ``std / 4`` covering the means ± 12 std
        (outside, ``p < exp(-72)``). The integrand is smooth and decays like a Gaussian, so the
        rule converges exponentially: halving the step changes the result by less than 1e-10.
        """
        return self._entropy(self._h_entropy * self.std)

    def _entropy(self, h: float) -> float:
        mu = self.means.numpy()
        pad = 12.0 * self.std
        lo, hi = mu.min(0) - pad, mu.max(0) + pad
        gx = np.arange(lo[0], hi[0] + h, h)
        gy = np.arange(lo[1], hi[1] + h, h)
        log_norm = math.log(2 * math.pi * self.std**2) + math.log(self.n_modes)
        total = 0.0
        for rows in np.array_split(gx, max(1, len(gx) // 64)):  # (rows, len(gy), K) per chunk
            dx = (rows[:, None, None] - mu[None, None, :, 0]) ** 2
            dy = (gy[None, :, None] - mu[None, None, :, 1]) ** 2
            log_p = logsumexp(-0.5 * (dx + dy) / self.std**2, axis=-1) - log_norm
            total += float(-(np.exp(log_p) * log_p).sum())
        return total * h * h

    def mean_and_covariance(self) -> tuple[Tensor, Tensor]:
        """Exact mean ``(2,)`` and covariance ``(2, 2)`` of the mixture."""
        m = self.means.mean(0)
        c = self.means - m
        return m, c.T @ c / self.n_modes + self.std**2 * torch.eye(2, dtype=torch.float64)


class ManyWell(ExactSystem):
    """FAB's many-well: ``n_wells`` independent copies of a 2D double well (32D for 16 wells).

    Per well, with coordinates ``(x1, x2)`` = one "particle" of shape ``(2,)``::

        u(x1, x2) = x1^4 - 6 x1^2 - 0.5 x1 + 0.5 x2^2      (a = -0.5, b = -6, c = 1)

    i.e. fab-torch's ``DoubleWellEnergy`` whose log density is ``-u``; the deeper well is at
    ``x1 ≈ +1.7``. Positions ``(batch, n_wells, 2)`` flatten to fab-torch's ``(batch, 2*n_wells)``
    layout ``[x1, x2, x1, x2, ...]``.

    ``log_z = n_wells * (log Z1 + 0.5 log 2π)``, where ``Z1 = ∫ exp(-(x1^4 - 6x1^2 - 0.5x1)) dx1``
    is computed once by the trapezoidal rule on ``[-7, 7]`` with step ``1e-3`` (exponentially
    accurate for this entire, super-Gaussian-decaying integrand; the mass outside is below
    ``exp(-2000)``). ``Z1 ≈ 11784.50927`` (fab-torch's hard-coded value).

    Sampling is exact: ``x2`` is Gaussian; ``x1`` by rejection from a piecewise-constant envelope
    on ``[-L, L]`` (``L = 7``) whose height on each cell is the exact maximum of the density over
    that cell (the quartic's minimum over a cell is at an end point or at a real root of its
    derivative in the cell), so ``envelope >= density`` holds everywhere on the grid.
    """

    #: double-well coefficients: u1(x1) = a x1 + b x1^2 + c x1^4
    a, b, c = -0.5, -6.0, 1.0
    _L = 7.0
    _h_quad = 1e-3
    _h_env = 2e-3

    def __init__(self, n_wells: int = 16) -> None:
        super().__init__(
            name=f"manywell{2 * n_wells}",
            n_particles=n_wells,
            spatial_dim=2,
            temperature=1.0,
            com_free=False,
            length_unit="reduced",
            # FAB's Many-Well run: 4 intermediate AIS distributions, HMC 5 leapfrog, step 1.0
            reference={"ais_hmc_step_size": 1.0, "ais_hmc_leapfrog": 5},
        )
        self.n_wells = n_wells
        self.log_z1 = self._log_z1()
        #: exact log normaliser of one 2D well
        self.log_z_2d = self.log_z1 + 0.5 * LOG_2PI
        self.log_z = n_wells * self.log_z_2d
        self._build_envelope()

    # -- energy -------------------------------------------------------------------------------

    @classmethod
    def u1(cls, x1: Tensor | np.ndarray) -> Tensor | np.ndarray:
        """Energy of the double-well coordinate, any shape."""
        x2 = x1 * x1
        return cls.a * x1 + cls.b * x2 + cls.c * x2 * x2

    @property
    def n_modes(self) -> int:
        """``2^n_wells``: one mode per sign pattern of the double-well coordinates."""
        return 2 ** self.n_particles

    def mode_index(self, x: Tensor) -> Tensor:
        """``(batch,)`` mode of ``x: (batch, n_wells, 2)``: the bits ``x1 > 0`` of the wells."""
        x = self.check_positions(x)
        bits = (x[..., 0] > 0).to(torch.int64)
        return (bits * (2 ** torch.arange(self.n_particles, device=x.device))).sum(-1)

    def energy(self, x: Tensor) -> Tensor:
        """Reduced energy ``(batch,)`` of ``x: (batch, n_wells, 2)``."""
        x = self.check_positions(x)
        return (self.u1(x[..., 0]) + 0.5 * x[..., 1] ** 2).sum(-1)

    @cached_property
    def mean_energy(self) -> float:
        """Exact ``E_p[u] = n_wells * (E[u1(x1)] + 1/2)``: the wells are independent and
        ``E[x2^2 / 2] = 1/2`` for the standard normal ``x2``; ``E[u1]`` is the ratio of two 1D
        integrals by adaptive quadrature (``scipy.integrate.quad``, relative error ~1e-12)."""
        u_min = float(np.min(self.u1(np.linspace(-self._L, self._L, 14_001))))

        def weight(x: float) -> float:
            return math.exp(-(float(self.u1(x)) - u_min))

        pts = (-1.7, 0.0, 1.7)  # the two wells and the barrier between them
        opts = {"points": pts, "epsabs": 0.0, "epsrel": 1e-13, "limit": 200}
        z, _ = integrate.quad(weight, -self._L, self._L, **opts)
        m, _ = integrate.quad(lambda x: float(self.u1(x)) * weight(x), -self._L, self._L, **opts)
        return self.n_wells * (m / z + 0.5)

    def log_prob_x1(self, x1: Tensor) -> Tensor:
        """Normalised log density of one double-well coordinate ``x1`` (any shape)."""
        return -self.u1(x1) - self.log_z1

    # -- exact normaliser and sampler ---------------------------------------------------------

    @classmethod
    def _log_z1(cls) -> float:
        grid = np.linspace(-cls._L, cls._L, int(round(2 * cls._L / cls._h_quad)) + 1)
        logf = -cls.u1(grid)
        logf[0] -= math.log(2.0)  # trapezoid end weights (irrelevant here, but exact rule)
        logf[-1] -= math.log(2.0)
        m = logf.max()
        return float(m + math.log(np.exp(logf - m).sum() * cls._h_quad))

    def _build_envelope(self) -> None:
        edges = np.linspace(-self._L, self._L, int(round(2 * self._L / self._h_env)) + 1)
        lo, hi = edges[:-1], edges[1:]
        # minimum of u1 over each cell: at the ends or at a critical point inside
        u_min = np.minimum(self.u1(lo), self.u1(hi))
        crit = np.roots([4 * self.c, 0.0, 2 * self.b, self.a])
        for r in crit[np.abs(crit.imag) < 1e-12].real:
            inside = (lo <= r) & (r <= hi)
            u_min[inside] = np.minimum(u_min[inside], self.u1(r))
        self._env_lo = torch.from_numpy(lo)
        self._env_umin = torch.from_numpy(u_min)
        w = np.exp(-(u_min - u_min.min())) * (hi - lo)
        self._env_probs = torch.from_numpy(w / w.sum())
        #: expected acceptance rate of the rejection sampler
        self.acceptance_rate = float(math.exp(self.log_z1 + u_min.min()) / w.sum())

    def sample_x1(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """``num`` exact samples ``(num,)`` float64 of the double-well coordinate."""
        out: list[Tensor] = []
        have = 0
        while have < num:
            m = int((num - have) / self.acceptance_rate * 1.1) + 16
            cell = torch.multinomial(self._env_probs, m, replacement=True, generator=generator)
            x = self._env_lo[cell] + self._h_env * torch.rand(
                m, generator=generator, dtype=torch.float64
            )
            log_ratio = self._env_umin[cell] - self.u1(x)  # <= 0 by construction of the envelope
            accept = torch.rand(m, generator=generator, dtype=torch.float64).log() < log_ratio
            out.append(x[accept])
            have += int(accept.sum())
        return torch.cat(out)[:num]

    def sample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """``num`` exact samples ``(num, n_wells, 2)`` float64."""
        x1 = self.sample_x1(num * self.n_wells, generator).reshape(num, self.n_wells)
        x2 = torch.randn((num, self.n_wells), generator=generator, dtype=torch.float64)
        return torch.stack([x1, x2], dim=-1)
