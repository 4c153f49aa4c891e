"""Training: couplings (independent, minibatch OT, equivariant OT), alignment (Kabsch,
Hungarian), losses (ml, fm, otfm, eqotfm), model registry, the training loop with resumable
checkpoints, and sampling runs.

Public API (CONTRACT.md): :func:`ot_permutation`, :func:`equivariant_ot`, :func:`kabsch`,
:func:`align`, :func:`build_flow`, :func:`train_run`, :func:`load_flow`, :func:`sample_run`.
"""

from __future__ import annotations

from eqbg.ot import (
    EquivariantCost,
    align,
    batched_assignment,
    emd_permutation,
    equivariant_cost_matrix,
    equivariant_ot,
    independent_coupling,
    kabsch,
    ot_permutation,
    pairwise_squared_distance,
    random_rotation,
)
from eqbg.training.losses import CouplingOptions, couple, flow_matching_loss, loss_step
from eqbg.training.loop import (
    CSV_COLUMNS,
    TrainingDivergedError,
    load_flow,
    sample_run,
    train_run,
)
from eqbg.training.models import MODELS, build_flow, register_model, resolve_model_settings
from eqbg.training.settings import (
    LOSSES,
    ODESettings,
    SamplingSettings,
    SettingsError,
    TrainingSettings,
)

__all__ = [
    "align",
    "batched_assignment",
    "kabsch",
    "random_rotation",
    "EquivariantCost",
    "emd_permutation",
    "equivariant_cost_matrix",
    "equivariant_ot",
    "independent_coupling",
    "ot_permutation",
    "pairwise_squared_distance",
    "CouplingOptions",
    "couple",
    "flow_matching_loss",
    "loss_step",
    "CSV_COLUMNS",
    "TrainingDivergedError",
    "load_flow",
    "sample_run",
    "train_run",
    "MODELS",
    "build_flow",
    "register_model",
    "resolve_model_settings",
    "LOSSES",
    "ODESettings",
    "SamplingSettings",
    "SettingsError",
    "TrainingSettings",
]
