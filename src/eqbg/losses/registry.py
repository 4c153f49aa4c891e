"""The loss registry: the only list of training objectives.

Each entry is a loss class, its settings dataclass (beside the loss's code; config
``defaults.loss.<name>``, and an override's ``loss:`` for the runs it matches) and a builder
``build(settings, system, batch_size) -> Loss``. :func:`register_loss` adds one; the config
schema's loss names and settings are generated from :data:`LOSSES` (:mod:`eqbg.config`), and the
pipeline asks :func:`loss_needs_data` whether a run reads the reference data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eqbg.losses.base import Loss
from eqbg.losses.fab import FABSettings, FlowAnnealedBootstrap
from eqbg.losses.flow_matching import (
    EquivariantOTCoupling,
    EquivariantOTSettings,
    FlowMatching,
    FlowMatchingSettings,
    IndependentCoupling,
    OTCoupling,
)
from eqbg.losses.maximum_likelihood import MaximumLikelihood, MaximumLikelihoodSettings
from eqbg.losses.reverse_kl import ReverseKL, ReverseKLSettings
from eqbg.settings import SettingsError, resolve

__all__ = [
    "LossSpec", "LOSSES", "register_loss", "resolve_loss_settings", "build_loss", "loss_needs_data",
]

#: ``build(settings, system, batch_size)``: the loss of a run whose training batch is ``batch_size``
LossBuilder = Callable[[Any, Any, int], Loss]


@dataclass(frozen=True)
class LossSpec:
    """A registered objective: its class (for what it needs), its settings and its builder."""

    cls: type[Loss]
    settings: type
    build: LossBuilder
    description: str


#: name -> objective; the only list of loss names
LOSSES: dict[str, LossSpec] = {}


def register_loss(
    name: str, cls: type[Loss], settings_cls: type, build: LossBuilder, description: str
) -> None:
    """Make ``name`` usable in the grid's ``losses:``.

    Args:
        name: registry name (the config's ``losses:`` entries and run paths use it).
        cls: the :class:`Loss` subclass (its ``needs_data`` decides the run's inputs).
        settings_cls: dataclass of the loss's settings (every field with a default).
        build: ``build(settings, system, batch_size) -> Loss``.
        description: one line for tables and the README.
    """
    LOSSES[name] = LossSpec(cls, settings_cls, build, description)


def _eqot(s: EquivariantOTSettings, system: Any, batch_size: int) -> Loss:
    coupling = EquivariantOTCoupling(
        system.atom_types, s.init, s.max_iter, s.exhaustive_limit, s.restarts,
        reflections=s.reflections,
    )
    return FlowMatching(coupling, s.sigma)


register_loss(
    "ml", MaximumLikelihood, MaximumLikelihoodSettings,
    lambda s, system, batch_size: MaximumLikelihood(s.solver, s.divergence, s.exact_max_dim),
    "maximum likelihood (adjoint ODE for CNFs)",
)
register_loss(
    "fm", FlowMatching, FlowMatchingSettings,
    lambda s, system, batch_size: FlowMatching(IndependentCoupling(), s.sigma),
    "flow matching, independent coupling",
)
register_loss(
    "otfm", FlowMatching, FlowMatchingSettings,
    lambda s, system, batch_size: FlowMatching(OTCoupling(), s.sigma),
    "flow matching, minibatch optimal-transport coupling",
)
register_loss(
    "eqotfm", FlowMatching, EquivariantOTSettings, _eqot,
    "flow matching, equivariant optimal-transport coupling",
)
register_loss(
    "kl", ReverseKL, ReverseKLSettings,
    lambda s, system, batch_size: ReverseKL(system.energy, batch_size),
    "reverse KL from the target energy alone (no data)",
)
register_loss(
    "fab", FlowAnnealedBootstrap, FABSettings,
    lambda s, system, batch_size: FlowAnnealedBootstrap.from_settings(s, system.energy, batch_size),
    "flow annealed importance sampling bootstrap (alpha=2 divergence, AIS, replay buffer; no data)",
)


def _spec(name: str) -> LossSpec:
    if name not in LOSSES:
        raise SettingsError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
    return LOSSES[name]


def resolve_loss_settings(name: str, given: Mapping[str, Any] | Any | None = None) -> Any:
    """The settings dataclass of loss ``name`` from ``given`` (a mapping of its keys, an instance
    of its settings class, or ``None`` for its defaults); a key of another loss is refused."""
    spec = _spec(name)
    if isinstance(given, spec.settings):
        return given
    return resolve(spec.settings, given, f"loss[{name}]")


def build_loss(name: str, system: Any, settings: Mapping[str, Any] | Any | None = None, batch_size: int = 128) -> Loss:
    """The loss ``name`` with ``settings`` (see :func:`resolve_loss_settings`) for a run on
    ``system`` whose training batch is ``batch_size``."""
    return _spec(name).build(resolve_loss_settings(name, settings), system, int(batch_size))


def loss_needs_data(name: str) -> bool:
    """Whether runs trained with ``name`` read the reference training data."""
    return _spec(name).cls.needs_data
