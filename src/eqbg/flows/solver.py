"""ODE solver settings of continuous flows: what torchdiffeq integrates with, passed per call.

:class:`ODESolver` is immutable: a caller that wants other tolerances passes another solver to
``sample``/``log_prob``/``nll`` instead of changing the flow, so no call can leak its settings
into the next one. :class:`ODESettings` is the config section ``ode:`` (the flow's default
solver plus how its divergence is computed).
"""

from __future__ import annotations

from dataclasses import dataclass

from eqbg.settings import SettingsError

__all__ = ["ODESolver", "ODESettings", "ADAPTIVE_METHODS", "FIXED_METHODS", "SOLVER_METHODS"]

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")
FIXED_METHODS = ("euler", "midpoint", "rk4", "heun3")
SOLVER_METHODS = ADAPTIVE_METHODS + FIXED_METHODS


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

    Raises:
        SettingsError: unknown method, a fixed-step method without ``n_steps``, or ``n_steps``
            with an adaptive method (it would be ignored).
    """

    method: str = "dopri5"
    atol: float = 1e-5
    rtol: float = 1e-5
    n_steps: int | None = None

    def __post_init__(self) -> None:
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


@dataclass
class ODESettings:
    """Config section ``ode:``: the flow's default solver (validation and evaluation use it
    unless they pass their own) and how the divergence is computed."""

    method: str = "dopri5"  #: torchdiffeq solver: dopri5, dopri8, bosh3, ... or euler/midpoint/rk4
    atol: float = 1e-5  #: absolute tolerance (adaptive solvers)
    rtol: float = 1e-5  #: relative tolerance (adaptive solvers)
    #: uniform steps for fixed-step solvers (None for adaptive); rk4's measured log q error
    #: against a tight dopri5 reference on trained DW4 flows: see :class:`ODESolver`
    n_steps: int | None = None
    trace_method: str = "auto"  #: exact trace implementation (auto, loop, batched_vjp, jacrev, jvp)
    trace_chunk_size: int | None = None  #: vmap chunk for the exact trace (memory bound)
    probe: str = "rademacher"  #: Hutchinson probe for ML training (rademacher, gaussian)
    adjoint_seminorm: bool = True  #: seminorm in the adjoint pass (fewer backward steps)

    def validate(self) -> None:
        self.solver  # raises for an invalid solver
        if self.trace_method not in ("auto", "loop", "batched_vjp", "jacrev", "jvp"):
            raise SettingsError(f"unknown trace_method {self.trace_method!r}")
        if self.probe not in ("rademacher", "gaussian"):
            raise SettingsError(f"probe must be rademacher or gaussian, got {self.probe!r}")

    @property
    def solver(self) -> ODESolver:
        return ODESolver(self.method, float(self.atol), float(self.rtol), self.n_steps)
