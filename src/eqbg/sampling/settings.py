"""Settings of sampling runs (config section ``sample:``)."""

from __future__ import annotations

from dataclasses import dataclass

from eqbg.flows.solver import SolverSettings
from eqbg.settings import SettingsError, resolve_device, resolve_dtype

__all__ = ["SamplingSettings"]


@dataclass
class SamplingSettings(SolverSettings):
    """Drawing samples with their log densities from a trained flow (``sample_run``): the
    solver of ODE flows (:class:`~eqbg.flows.solver.SolverSettings`) and the keys below."""

    #: CNFs: evaluate the field through torch.compile (same values up to round-off; ~1.7-1.8x faster
    #: exact divergences on the CPU after ~1 min of compilation, bench/README.md)
    compile_field: bool = False
    batch_size: int | None = 1000  #: samples integrated at once
    exact: bool = True  #: exact divergence (required for importance weights)
    device: str = "auto"  #: cpu, cuda, cuda:N or auto
    dtype: str = "float32"  #: float32 or float64
    num_threads: int | None = None  #: torch.set_num_threads (None: leave)

    def validate(self) -> None:
        super().validate()
        resolve_dtype(self.dtype)
        resolve_device(self.device)
        if self.batch_size is not None and self.batch_size < 1:
            raise SettingsError(f"batch_size must be >= 1, got {self.batch_size}")

