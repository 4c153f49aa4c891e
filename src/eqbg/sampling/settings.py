"""Settings of sampling runs (config section ``sample:``)."""

from __future__ import annotations

from dataclasses import dataclass

from eqbg.flows.solver import ODESolver
from eqbg.settings import SettingsError, resolve_device, resolve_dtype

__all__ = ["SamplingSettings"]


@dataclass
class SamplingSettings:
    """Drawing samples with their log densities from a trained flow (``sample_run``)."""

    method: str = "dopri5"  #: torchdiffeq solver (ODE flows)
    atol: float = 1e-5  #: absolute tolerance (adaptive)
    rtol: float = 1e-5  #: relative tolerance (adaptive)
    #: steps for fixed-step solvers; measured rk4 log q error vs dopri5 at 1e-8 on trained DW4
    #: flows: <= 2e-2 nats at 20 steps, <= 1e-3 at 40 (see eqbg.flows.solver.ODESolver)
    n_steps: int | None = None
    #: how exact log q integrates the divergence: ``solver`` (every stage) or ``simpson`` (grid
    #: nodes only, fixed steps; ~4x fewer divergence evaluations with rk4, see ODESolver)
    log_q_quadrature: str = "solver"
    #: CNFs: evaluate the field through torch.compile (same values up to round-off; ~1.7-1.8x faster
    #: exact divergences on the CPU after ~1 min of compilation, bench/README.md)
    compile_field: bool = False
    batch_size: int | None = 1000  #: samples integrated at once
    exact: bool = True  #: exact divergence (required for importance weights)
    device: str = "auto"  #: cpu, cuda, cuda:N or auto
    dtype: str = "float32"  #: float32 or float64
    num_threads: int | None = None  #: torch.set_num_threads (None: leave)

    def validate(self) -> None:
        self.solver  # raises for an invalid solver
        resolve_dtype(self.dtype)
        resolve_device(self.device)
        if self.batch_size is not None and self.batch_size < 1:
            raise SettingsError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def solver(self) -> ODESolver:
        return ODESolver(
            self.method, float(self.atol), float(self.rtol), self.n_steps, self.log_q_quadrature
        )
