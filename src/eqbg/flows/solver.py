"""ODE solver settings of continuous flows: what torchdiffeq integrates with, passed per call.

:class:`ODESolver` is immutable: a caller that wants other tolerances passes another solver to
``sample``/``log_prob``/``nll`` instead of changing the flow, so no call can leak its settings
into the next one. :class:`ODESettings` is the config section ``ode:`` (the flow's default
solver plus how its divergence is computed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eqbg.settings import SettingsError

__all__ = [
    "ODESolver",
    "SolverSettings",
    "ODESettings",
    "ADAPTIVE_METHODS",
    "FIXED_METHODS",
    "SOLVER_METHODS",
    "LOG_Q_QUADRATURES",
    "simpson_weights",
]

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")
FIXED_METHODS = ("euler", "midpoint", "rk4", "heun3")
SOLVER_METHODS = ADAPTIVE_METHODS + FIXED_METHODS
LOG_Q_QUADRATURES = ("solver", "simpson")


@dataclass(frozen=True)
class ODESolver:
    """One torchdiffeq solver configuration.

    Attributes:
        method: adaptive (``dopri5`` ...; uses ``atol``/``rtol``) or fixed-step (``euler``,
            ``midpoint``, ``rk4``, ``heun3``; needs ``n_steps`` uniform steps over ``[0, 1]``).
        atol, rtol: tolerances of adaptive methods (the log-density state is error-controlled
            as well as the positions).
        n_steps: number of uniform steps of a fixed-step method (``None`` for adaptive ones).

    Fixed steps trade log q accuracy for a known NFE (rk4: 4 per step). Measured against dopri5
    at atol = rtol = 1e-8 (float64) on held-out configurations of briefly trained DW4 EGNN flows
    (flow matching, 5 seeds/lengths): rk4 with 20 steps (80 NFE) is within 2e-2 nats of log q
    (median 2e-5 to 2e-4; the worst configurations are of the longest-trained flow), with 40 steps
    (160 NFE) within 1e-3; the error falls ~16x per doubling (fourth order). Better-trained flows
    can be stiffer: check a new flow against an adaptive reference before relying on fixed steps
    for importance weights (``tests/test_flows.py::
    test_rk4_log_q_within_documented_tolerance_of_dopri5_on_trained_dw4_flow``).

    ``log_q_quadrature`` says how exact log densities integrate the divergence, the expensive
    part ((n-1)d backward passes per evaluation against one forward pass for the positions):

    * ``"solver"``: ``l = -int div`` is a state of the ODE, so the divergence is evaluated at every
      solver stage (rk4: 4 per step; adaptive methods: every stage of every tried step).
    * ``"simpson"`` (fixed-step methods, even ``n_steps``): the solver integrates the positions
      alone; the divergence is then evaluated at the ``n_steps + 1`` grid nodes of the solved
      trajectory and integrated by composite Simpson's rule (fourth order like rk4, with a
      constant ~16x larger than rk4's internal one at equal steps). With rk4 that is
      ``n_steps + 1`` divergence evaluations instead of ``4 n_steps``. Measured against dopri5
      at 1e-8 (float64): on the test's briefly trained DW4 flow, max |d log q| 3.0e-2, 7.0e-3,
      1.6e-4 at 10, 20, 40 steps (rk4 through the solver: 2.3e-3, 1.8e-4, 1.1e-5), so Simpson
      needs about twice rk4's steps for rk4's accuracy; on the default pipeline's DW4 otfm flow
      3.1e-3 at 22 steps and 1.4e-4 at 44 (bench/README.md, ``bench_exact_sampling.py``). The
      positions are rk4's either way.

    Raises:
        SettingsError: unknown method, a fixed-step method without ``n_steps``, or ``n_steps``
            with an adaptive method (it would be ignored); ``simpson`` with an adaptive method
            or an odd ``n_steps``.
    """

    method: str = "dopri5"
    atol: float = 1e-5
    rtol: float = 1e-5
    n_steps: int | None = None
    log_q_quadrature: str = "solver"

    def __post_init__(self) -> None:
        if self.log_q_quadrature not in LOG_Q_QUADRATURES:
            raise SettingsError(
                f"unknown log_q_quadrature {self.log_q_quadrature!r}; use one of {LOG_Q_QUADRATURES}"
            )
        if self.log_q_quadrature == "simpson" and (
            self.method not in FIXED_METHODS or self.n_steps is None or int(self.n_steps) % 2
        ):
            raise SettingsError(
                "log_q_quadrature 'simpson' needs a fixed-step method with an even n_steps, got "
                f"method={self.method!r}, n_steps={self.n_steps}"
            )
        if self.method in FIXED_METHODS:
            if self.n_steps is None or int(self.n_steps) < 1:
                raise SettingsError(
                    f"fixed-step method {self.method!r} needs n_steps >= 1, got {self.n_steps}"
                )
        elif self.method in ADAPTIVE_METHODS:
            if self.n_steps is not None:
                raise SettingsError(
                    f"n_steps={self.n_steps} given with adaptive method {self.method!r}; use one "
                    f"of {FIXED_METHODS} for fixed steps"
                )
            if not (self.atol > 0 and self.rtol > 0):
                raise SettingsError(f"atol and rtol must be > 0, got {self.atol}, {self.rtol}")
        else:
            raise SettingsError(f"unknown ODE method {self.method!r}; use one of {SOLVER_METHODS}")

    @property
    def adaptive(self) -> bool:
        return self.n_steps is None


def simpson_weights(
    n_intervals: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Composite Simpson weights ``(n_intervals + 1,)`` on a uniform grid of ``[0, 1]`` (even
    ``n_intervals``): ``int_0^1 f dt ~ sum_k w_k f(t_k)``, exact for cubics."""
    if n_intervals < 2 or n_intervals % 2:
        raise ValueError(f"Simpson's rule needs an even number of intervals, got {n_intervals}")
    w = torch.ones(n_intervals + 1, dtype=torch.float64)
    w[1:-1:2] = 4.0
    w[2:-1:2] = 2.0
    return (w / (3.0 * n_intervals)).to(dtype=dtype or torch.float64, device=device)


@dataclass
class SolverSettings:
    """How one stage integrates a flow's ODE: the settings behind an :class:`ODESolver`.

    The one solver section of the config: the flow's default (``ode:``), sampling (``sample:``)
    and maximum-likelihood training (``loss.ml``) extend it with their own keys.
    """

    method: str = "dopri5"  #: torchdiffeq solver: dopri5, dopri8, bosh3, ... or euler/midpoint/rk4
    atol: float = 1e-5  #: absolute tolerance (adaptive solvers)
    rtol: float = 1e-5  #: relative tolerance (adaptive solvers)
    #: uniform steps for fixed-step solvers (None for adaptive); rk4's measured log q error
    #: against a tight dopri5 reference on trained DW4 flows: see :class:`ODESolver`
    n_steps: int | None = None
    #: how exact log q integrates the divergence: ``solver`` (every stage) or ``simpson`` (grid
    #: nodes only, fixed steps; ~4x fewer divergence evaluations with rk4, see ODESolver)
    log_q_quadrature: str = "solver"

    def validate(self) -> None:
        self.solver  # raises for an invalid solver

    @property
    def solver(self) -> ODESolver:
        return ODESolver(
            self.method, float(self.atol), float(self.rtol), self.n_steps, self.log_q_quadrature
        )


@dataclass
class ODESettings(SolverSettings):
    """Config section ``ode:``: the flow's default solver (validation and evaluation use it
    unless they pass their own) and how the divergence is computed."""

    trace_method: str = "auto"  #: exact trace implementation (auto, loop, batched_vjp, jacrev, jvp)
    trace_chunk_size: int | None = None  #: vmap chunk for the exact trace (memory bound)
    probe: str = "rademacher"  #: Hutchinson probe for ML training (rademacher, gaussian)
    adjoint_seminorm: bool = True  #: seminorm in the adjoint pass (fewer backward steps)

    def validate(self) -> None:
        super().validate()
        if self.trace_method not in ("auto", "loop", "batched_vjp", "jacrev", "jvp"):
            raise SettingsError(f"unknown trace_method {self.trace_method!r}")
        if self.probe not in ("rademacher", "gaussian"):
            raise SettingsError(f"probe must be rademacher or gaussian, got {self.probe!r}")
