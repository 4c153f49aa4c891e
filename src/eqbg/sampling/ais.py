"""Annealed importance sampling (AIS) from a flow towards a target, with HMC or Metropolis moves.

Between the flow ``q`` (beta = 0) and the target ``g = p^alpha q^(1 - alpha)`` (beta = 1; FAB:
``alpha = 2``, plain refinement of a flow: ``alpha = 1``) lie ``M`` intermediate distributions

    log f_j = (1 - alpha beta_j) log q + alpha beta_j log p,   beta = linspace(0, 1, M + 2)

(``geometric`` spacing: ``beta_j = 10^(-2 (M + 1 - j) / (M + 1))``, denser near the flow).
Starting from ``z_0 ~ q``, one transition targeting ``f_j`` moves ``z_{j-1}`` to ``z_j`` for
``j = 1..M``, and ``log w = sum_{j=0}^{M} [log f_{j+1}(z_j) - log f_j(z_j)]`` (Neal 2001): ``w``
are importance weights of the final points for ``g`` up to its normaliser (for ``M = 0`` the
plain ``g/q`` weights). Everything is detached; the flow's parameters get no gradient.

**Transitions.** ``hmc``: ``n_outer`` steps of Hamiltonian Monte Carlo with ``n_leapfrog`` leapfrog
steps, unit mass, one step size per intermediate distribution, adapted while ``adapt`` is on
(fab-jax's rule: times ``adapt_factor`` when the step's mean acceptance exceeds
``target_accept``, else divided by it) and frozen at evaluation. ``metropolis``: ``n_outer``
random-walk Metropolis steps of scale ``step_size`` (the FAB GMM setting: 1 step of 5.0, no
tuning). A proposal whose energy, density or gradient is not finite, or whose energy error exceeds
``divergence_threshold``, is rejected; a chain whose weight ends non-finite gets ``log w = -inf``
and is counted in :attr:`AISResult.n_invalid`.

**Cost.** Target evaluations per sample: HMC ``1 + n_leapfrog * n_outer * M`` (each with its
gradient; the gradient at the current point is carried over), Metropolis ``1 + n_outer * M``.
:attr:`AISResult.n_target_evals` counts them.

Densities are callables ``(B, ...) -> (B,)`` differentiable in the state; ``project`` (optional)
maps momenta and random-walk noise onto the subspace the densities live on (e.g. removing the
joint translation of a CoM-free state).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from eqbg.settings import SettingsError

__all__ = ["AISSettings", "AISResult", "AnnealedImportanceSampler"]

LogDensity = Callable[[Tensor], Tensor]


@dataclass
class AISSettings:
    """Annealed importance sampling (``eqbg.sampling.ais``)."""

    n_intermediate: int = 2  #: M intermediate distributions (0: plain importance sampling)
    spacing: str = "linear"  #: beta spacing: linear or geometric
    transition: str = "hmc"  #: hmc or metropolis
    n_leapfrog: int = 5  #: leapfrog steps per HMC step
    n_outer: int = 1  #: transition steps per intermediate distribution
    step_size: float = 1.0  #: initial HMC step size / Metropolis proposal scale
    adapt: bool = True  #: tune the HMC step sizes towards target_accept (training only)
    target_accept: float = 0.65  #: acceptance the step sizes are tuned towards
    adapt_factor: float = 1.02  #: multiplicative step-size update
    divergence_threshold: float = 1000.0  #: reject when the energy error exceeds this
    alpha: float = 2.0  #: target p^alpha q^(1-alpha): 2 for FAB, 1 to refine samples towards p

    def validate(self) -> None:
        if self.n_intermediate < 0 or self.n_leapfrog < 1 or self.n_outer < 1:
            raise SettingsError("n_intermediate must be >= 0, n_leapfrog and n_outer >= 1")
        if self.spacing not in ("linear", "geometric"):
            raise SettingsError(f"spacing must be linear or geometric, got {self.spacing!r}")
        if self.transition not in ("hmc", "metropolis"):
            raise SettingsError(f"transition must be hmc or metropolis, got {self.transition!r}")
        if not (self.step_size > 0 and 0 < self.target_accept < 1 and self.adapt_factor >= 1):
            raise SettingsError("step_size > 0, 0 < target_accept < 1 and adapt_factor >= 1 required")

    def betas(self) -> list[float]:
        """``beta_0 = 0 < ... < beta_{M+1} = 1``."""
        m = self.n_intermediate
        if self.spacing == "linear":
            return [j / (m + 1) for j in range(m + 2)]
        return [0.0] + [10.0 ** (-2.0 * (m + 1 - j) / (m + 1)) for j in range(1, m + 2)]

    def target_evals_per_sample(self) -> int:
        """Target evaluations one AIS chain costs (see the module docstring)."""
        per_step = self.n_leapfrog if self.transition == "hmc" else 1
        return 1 + per_step * self.n_outer * self.n_intermediate


@dataclass
class AISResult:
    """Output of :meth:`AnnealedImportanceSampler.run`.

    Attributes:
        z: ``(B, ...)`` final states (detached).
        log_w: ``(B,)`` log importance weights for ``g`` (``-inf`` for invalid chains).
        log_q: ``(B,)`` the flow's log density at ``z``.
        log_p: ``(B,)`` the target's unnormalised log density at ``z``.
        acceptance: mean acceptance of each intermediate distribution's transitions.
        n_invalid: chains with a non-finite weight.
        n_target_evals: target evaluations made (values; HMC also evaluates the gradient of each).
    """

    z: Tensor
    log_w: Tensor
    log_q: Tensor
    log_p: Tensor
    acceptance: list[float]
    n_invalid: int
    n_target_evals: int


def _sum(t: Tensor) -> Tensor:
    return t.flatten(1).sum(-1)


def _value_and_grad(fn: LogDensity, z: Tensor) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        zg = z.detach().requires_grad_(True)
        value = fn(zg)
        (grad,) = torch.autograd.grad(value.sum(), zg)
    return value.detach(), grad.detach()


def _accept(log_accept: Tensor, valid: Tensor, gen: torch.Generator | None) -> Tensor:
    """``(B,)`` Metropolis-Hastings decisions: ``log u < log_accept`` where the proposal is valid."""
    u = torch.rand(log_accept.shape, generator=gen, dtype=log_accept.dtype, device=log_accept.device)
    return valid & (torch.log(u) < torch.where(valid, log_accept, torch.zeros_like(log_accept)))


def _select(acc: Tensor, *pairs: tuple[Tensor, Tensor]) -> tuple[Tensor, ...]:
    """The proposed tensor of each ``(proposed, current)`` pair where ``acc``, the current one
    elsewhere (``acc`` broadcast over the trailing dimensions)."""
    return tuple(
        torch.where(acc.view(-1, *([1] * (new.dim() - 1))), new, old) for new, old in pairs
    )


class AnnealedImportanceSampler:
    """AIS with per-distribution step sizes that persist (and are checkpointed) across calls."""

    def __init__(self, settings: AISSettings) -> None:
        settings.validate()
        self.settings = settings
        self.betas = settings.betas()
        self.step_sizes = [float(settings.step_size)] * settings.n_intermediate

    def _coefficients(self, j: int) -> tuple[float, float]:
        """``(c_q, c_p)`` of ``log f_j = c_q log q + c_p log p``."""
        ab = self.settings.alpha * self.betas[j]
        return 1.0 - ab, ab

    def run(
        self,
        z: Tensor,
        log_q: LogDensity,
        log_p: LogDensity,
        *,
        generator: torch.Generator | None = None,
        adapt: bool | None = None,
        project: Callable[[Tensor], Tensor] | None = None,
    ) -> AISResult:
        """Anneal the flow samples ``z`` (``(B, ...)``) towards the target.

        Args:
            z: samples of the flow.
            log_q: the flow's log density, differentiable in the state.
            log_p: the target's unnormalised log density, differentiable in the state.
            generator: RNG of the momenta, proposals and accept tests.
            adapt: tune the step sizes (default: the settings' ``adapt``); False at evaluation.
            project: map of momenta and proposal noise onto the state's subspace.
        """
        s = self.settings
        adapt = s.adapt if adapt is None else adapt
        project = project or (lambda t: t)
        hmc = s.transition == "hmc"
        z = z.detach()
        B = z.shape[0]
        if hmc:
            lq, glq = _value_and_grad(log_q, z)
            lp, glp = _value_and_grad(log_p, z)
        else:
            with torch.no_grad():
                lq, lp = log_q(z), log_p(z)
            glq = glp = None
        n_evals = B
        cq0, cp0 = self._coefficients(0)
        cq1, cp1 = self._coefficients(1)
        log_w = (cq1 - cq0) * lq + (cp1 - cp0) * lp
        acceptance = []
        for j in range(1, s.n_intermediate + 1):
            cq, cp = self._coefficients(j)
            accepted = 0.0
            for _ in range(s.n_outer):
                if hmc:
                    z, lq, lp, glq, glp, acc = self._hmc(z, lq, lp, glq, glp, cq, cp, j, log_q, log_p, generator, project)
                    n_evals += B * s.n_leapfrog
                else:
                    z, lq, lp, acc = self._metropolis(z, lq, lp, cq, cp, j, log_q, log_p, generator, project)
                    n_evals += B
                rate = float(acc.float().mean())
                accepted += rate / s.n_outer
                if adapt and hmc:
                    f = s.adapt_factor
                    self.step_sizes[j - 1] *= f if rate > s.target_accept else 1.0 / f
            acceptance.append(accepted)
            cqn, cpn = self._coefficients(j + 1)
            log_w = log_w + (cqn - cq) * lq + (cpn - cp) * lp
        invalid = ~torch.isfinite(log_w)
        log_w = torch.where(invalid, torch.full_like(log_w, -math.inf), log_w)
        return AISResult(z.detach(), log_w.detach(), lq.detach(), lp.detach(), acceptance,
                         int(invalid.sum()), int(n_evals))

    def run_from_flow(
        self,
        flow,
        energy: Callable[[Tensor], Tensor],
        num: int,
        *,
        generator: torch.Generator | None = None,
        adapt: bool | None = None,
    ) -> AISResult:
        """AIS from ``num`` fresh samples of ``flow`` in its sampling state (``Flow.state_*``:
        its density, the target density of its state for the reduced energy ``energy``, and the
        projection onto the state's subspace)."""
        z0, _ = flow.state_sample(num, generator=generator)
        return self.run(
            z0, flow.state_log_prob, lambda z: flow.state_target_log_prob(z, energy),
            generator=generator, adapt=adapt, project=flow.state_project,
        )

    def _step_size(self, j: int) -> float:
        return self.step_sizes[j - 1] if self.settings.transition == "hmc" else float(self.settings.step_size)

    def _hmc(self, z, lq, lp, glq, glp, cq, cp, j, log_q, log_p, gen, project):
        eps = self._step_size(j)
        r = project(torch.randn(z.shape, generator=gen, dtype=z.dtype, device=z.device))
        h0 = -(cq * lq + cp * lp) + 0.5 * _sum(r * r)
        zn, rn = z, r + 0.5 * eps * (cq * glq + cp * glp)
        L = self.settings.n_leapfrog
        for step in range(L):
            zn = zn + eps * rn
            lqn, glqn = _value_and_grad(log_q, zn)
            lpn, glpn = _value_and_grad(log_p, zn)
            grad = cq * glqn + cp * glpn
            rn = rn + (eps if step < L - 1 else 0.5 * eps) * grad
        h1 = -(cq * lqn + cp * lpn) + 0.5 * _sum(rn * rn)
        log_accept = h0 - h1
        valid = torch.isfinite(log_accept) & torch.isfinite(_sum(glqn + glpn))
        valid &= log_accept > -self.settings.divergence_threshold
        acc = _accept(log_accept, valid, gen)
        return (*_select(acc, (zn, z), (lqn, lq), (lpn, lp), (glqn, glq), (glpn, glp)), acc)

    def _metropolis(self, z, lq, lp, cq, cp, j, log_q, log_p, gen, project):
        eps = self._step_size(j)
        zn = z + eps * project(torch.randn(z.shape, generator=gen, dtype=z.dtype, device=z.device))
        with torch.no_grad():
            lqn, lpn = log_q(zn), log_p(zn)
        log_accept = (cq * lqn + cp * lpn) - (cq * lq + cp * lp)
        acc = _accept(log_accept, torch.isfinite(log_accept), gen)
        return (*_select(acc, (zn, z), (lqn, lq), (lpn, lp)), acc)

    def state_dict(self) -> dict[str, list[float]]:
        return {"step_sizes": list(self.step_sizes)}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        if len(state["step_sizes"]) != len(self.step_sizes):
            raise ValueError("AIS state has a different number of intermediate distributions")
        self.step_sizes = [float(e) for e in state["step_sizes"]]
