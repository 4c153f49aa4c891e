"""The loss registry: the only list of training objectives.

Each entry builds a :class:`~eqbg.losses.Loss` from a run's training settings
(:class:`eqbg.training.settings.TrainingSettings`: ``sigma``, ``eqot_*``, ``ml_*`` ...) and its
system. :func:`register_loss` adds one; the config schema's loss names are held equal to
:data:`LOSSES` by a test, and the pipeline asks :func:`loss_needs_data` whether a run reads the
reference data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eqbg.losses.base import Loss
from eqbg.losses.flow_matching import (
    EquivariantOTCoupling,
    FlowMatching,
    IndependentCoupling,
    OTCoupling,
)
from eqbg.losses.maximum_likelihood import MaximumLikelihood
from eqbg.losses.reverse_kl import ReverseKL
from eqbg.losses.fab import FlowAnnealedBootstrap
from eqbg.settings import SettingsError

if TYPE_CHECKING:
    from eqbg.training.settings import TrainingSettings

__all__ = ["LossSpec", "LOSSES", "register_loss", "build_loss", "loss_needs_data"]


@dataclass(frozen=True)
class LossSpec:
    """A registered objective: its class (for what it needs) and its builder."""

    cls: type[Loss]
    build: Callable[["TrainingSettings", Any], Loss]
    description: str


#: name -> objective; the only list of loss names
LOSSES: dict[str, LossSpec] = {}


def register_loss(
    name: str, cls: type[Loss], build: Callable[["TrainingSettings", Any], Loss], description: str
) -> None:
    """Make ``name`` usable in the grid's ``losses:``; ``build(training_settings, system)``."""
    LOSSES[name] = LossSpec(cls, build, description)


def _ml(ts: "TrainingSettings", system: Any) -> Loss:
    return MaximumLikelihood(ts.ml_solver, ts.ml_divergence, ts.ml_exact_max_dim)


def _eqot(ts: "TrainingSettings", system: Any) -> Loss:
    coupling = EquivariantOTCoupling(
        system.atom_types, ts.eqot_init, ts.eqot_max_iter, ts.eqot_exhaustive_limit,
        ts.eqot_restarts, reflections=ts.eqot_reflections,
    )
    return FlowMatching(coupling, ts.sigma)


register_loss("ml", MaximumLikelihood, _ml, "maximum likelihood (adjoint ODE for CNFs)")
register_loss(
    "fm", FlowMatching, lambda ts, system: FlowMatching(IndependentCoupling(), ts.sigma),
    "flow matching, independent coupling",
)
register_loss(
    "otfm", FlowMatching, lambda ts, system: FlowMatching(OTCoupling(), ts.sigma),
    "flow matching, minibatch optimal-transport coupling",
)
register_loss("eqotfm", FlowMatching, _eqot, "flow matching, equivariant optimal-transport coupling")
register_loss(
    "kl", ReverseKL, lambda ts, system: ReverseKL(system.energy, ts.batch_size),
    "reverse KL from the target energy alone (no data)",
)


def _fab(ts: "TrainingSettings", system: Any) -> Loss:
    return FlowAnnealedBootstrap(
        system.energy, ts.batch_size, ts.ais_settings, buffer=ts.fab_buffer,
        buffer_capacity=ts.fab_buffer_batches * ts.batch_size,
        buffer_min_length=ts.fab_buffer_min_batches * ts.batch_size,
        n_updates=ts.fab_updates_per_ais, weight_clip=ts.fab_weight_clip,
    )


register_loss(
    "fab", FlowAnnealedBootstrap, _fab,
    "flow annealed importance sampling bootstrap (alpha=2 divergence, AIS, replay buffer; no data)",
)


def _spec(name: str) -> LossSpec:
    if name not in LOSSES:
        raise SettingsError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
    return LOSSES[name]


def build_loss(name: str, training: "TrainingSettings", system: Any) -> Loss:
    """The loss ``name`` for a run with these training settings on ``system``."""
    return _spec(name).build(training, system)


def loss_needs_data(name: str) -> bool:
    """Whether runs trained with ``name`` read the reference training data."""
    return _spec(name).cls.needs_data
