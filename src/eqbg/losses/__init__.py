"""Training objectives, one object each, in one registry (:mod:`eqbg.losses.registry`, the one
place where a new loss is registered): maximum likelihood (``ml``) and flow matching with
independent (``fm``), minibatch-OT (``otfm``) and equivariant-OT (``eqotfm``) couplings, and
from the target energy alone the reverse KL divergence (``kl``) and flow annealed importance
sampling bootstrap (``fab``, with its prioritised replay buffer)."""

from __future__ import annotations

from eqbg.losses.base import Loss
from eqbg.losses.flow_matching import (
    Coupling,
    EquivariantOTCoupling,
    EquivariantOTSettings,
    FlowMatching,
    FlowMatchingSettings,
    IndependentCoupling,
    OTCoupling,
    flow_matching_loss,
)
from eqbg.losses.maximum_likelihood import (
    MaximumLikelihood,
    MaximumLikelihoodSettings,
    use_exact_divergence,
)
from eqbg.losses.fab import FABSettings, FlowAnnealedBootstrap
from eqbg.losses.replay_buffer import PrioritisedReplayBuffer
from eqbg.losses.reverse_kl import ReverseKL, ReverseKLSettings
from eqbg.losses.registry import (
    LOSSES,
    LossSpec,
    build_loss,
    loss_needs_data,
    register_loss,
    resolve_loss_settings,
)

__all__ = [
    "Loss",
    "Coupling",
    "EquivariantOTCoupling",
    "FlowMatching",
    "IndependentCoupling",
    "OTCoupling",
    "flow_matching_loss",
    "FlowMatchingSettings",
    "EquivariantOTSettings",
    "MaximumLikelihood",
    "MaximumLikelihoodSettings",
    "use_exact_divergence",
    "ReverseKL",
    "ReverseKLSettings",
    "FlowAnnealedBootstrap",
    "FABSettings",
    "PrioritisedReplayBuffer",
    "LOSSES",
    "LossSpec",
    "build_loss",
    "loss_needs_data",
    "register_loss",
    "resolve_loss_settings",
]
