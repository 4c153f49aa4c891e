"""Settings of the evaluation of one run: their defaults, and their resolution from a flat dict
or a full run-settings dict (``eqbg.pipeline.run_settings``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eqbg.evaluation.ais import RefinementSettings
from eqbg.evaluation.weights import DEFAULT_ENERGY_CAP
from eqbg.flows.solver import ODESettings
from eqbg.settings import SettingsError, asdict, resolve, resolve_device, resolve_dtype

__all__ = [
    "EvaluationSettings", "DEFAULT_SETTINGS", "RUN_SECTIONS", "resolve_settings", "split_run_settings",
]

@dataclass
class EvaluationSettings:
    """Evaluation of one run (config section ``evaluate:``)."""

    #: test-set NLL with the exact divergence on a random subset of this many test points
    #: (None = whole test split); the same subset gives the forward ESS
    nll_n: int | None = 1000
    nll_batch_size: int = 256  #: test points integrated at once
    nll_seed: int = 0  #: seed of the NLL subset
    #: test configurations (random subset) whose energies enter the energy metrics and
    #: histograms; None = the whole test split (aldp energies cost an OpenMM call each)
    energy_test_n: int | None = None
    #: samples with u > energy_cap (kT), non-finite u, or non-finite log q count as failed
    energy_cap: float = DEFAULT_ENERGY_CAP
    bootstrap_level: float = 0.9  #: percentile bootstrap of the Kish ESS: its level
    bootstrap_reps: int = 1000  #: bootstrap resamples
    bootstrap_seed: int = 0  #: seed of the bootstrap
    #: configurations (random subset, per side) whose pooled pair distances enter distance_w2
    distance_n: int = 5000
    distance_seed: int = 0  #: seed of that subset
    hist_bins: int = 100  #: bins of the energy and distance histograms
    rama_bins: int = 64  #: bins per angle of the Ramachandran histograms
    #: bins of the 1-D phi / psi marginals on [-pi, pi] whose KL is reported (EACF: 200)
    marginal_bins: int = 200
    energy_batch_size: int = 4096  #: batch size for target energy evaluation
    #: cpu, cuda, cuda:N or auto; a full run-settings dict's top-level device is used when
    #: this is not given in its evaluate section
    device: str = "cpu"
    #: the model-based test NLL / forward ESS (off: e.g. when no model is available)
    compute_nll: bool = True
    #: ODE settings overriding the run's training ODE for the test NLL, passed to
    #: eqbg.rundir.load_flow(ode=...) (e.g. {atol: 1e-7, rtol: 1e-7} as E-NF's test protocol);
    #: None = the run's training ODE
    nll_ode: dict[str, Any] | None = field(default=None, metadata={"settings": ODESettings})
    #: dtype of the model for the test NLL (float32 / float64); None = the training dtype
    nll_dtype: str | None = None
    #: prior draws integrated one at a time with the evaluation ODE (eqbg.evaluation.paths):
    #: the per-sample NFE and path length behind the claims' intervals; 0 = off
    path_subset_n: int = 32
    #: annealed importance sampling as a refinement of flows with a differentiable state
    #: density (eqbg.evaluation.ais.RefinementSettings); None = off. Reports ess_ais beside the
    #: flow's ess, and its target evaluations
    ais: dict[str, Any] | None = field(default=None, metadata={"settings": RefinementSettings})

    def validate(self) -> None:
        if self.nll_ode is not None:
            resolve(ODESettings, self.nll_ode, "nll_ode")
        if self.ais is not None:
            resolve(RefinementSettings, self.ais, "ais")
        if self.nll_dtype is not None:
            resolve_dtype(self.nll_dtype)
        if not 0 < self.bootstrap_level < 1:
            raise SettingsError(f"bootstrap_level must lie in (0, 1), got {self.bootstrap_level}")


#: Evaluation settings and their defaults, as a dict (:class:`EvaluationSettings`)
DEFAULT_SETTINGS: dict[str, Any] = asdict(EvaluationSettings())

#: Sections of a full run-settings dict (``eqbg.pipeline.run_settings``).
RUN_SECTIONS = ("model", "loss", "train", "ode", "sample", "evaluate")


def split_run_settings(settings: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(evaluation settings, system options)`` from either a flat dict of evaluation settings
    or a full run-settings dict (sections ``model``, ``train``, ``ode``, ``sample``,
    ``evaluate`` plus ``system_options`` and ``device``, as ``eqbg.pipeline.run_settings``
    returns it), in which case only the ``evaluate`` section (and ``device``) is used."""
    s = dict(settings or {})
    system_options = dict(s.pop("system_options", None) or {})
    if any(key in s for key in RUN_SECTIONS):
        device = s.get("device")
        unknown = set(s) - set(RUN_SECTIONS) - {"device"}
        if unknown:
            raise ValueError(f"unknown run-settings keys {sorted(unknown)}")
        s = dict(s.get("evaluate") or {})
        if device is not None:
            s.setdefault("device", device)
    return s, system_options


def resolve_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """:class:`EvaluationSettings` from ``settings``, as a dict; unknown keys and invalid values
    raise :class:`~eqbg.settings.SettingsError` (a ``ValueError``)."""
    resolved = asdict(resolve(EvaluationSettings, settings, "evaluate"))
    resolved["device"] = str(resolve_device(str(resolved["device"])))
    return resolved
