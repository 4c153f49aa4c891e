"""Training: the training state (model, optimiser, schedule, EMA, RNG, loss state, best
weights) and the one loop around it that trains every model with every loss.

Models live in :mod:`eqbg.flows.registry`, objectives in :mod:`eqbg.losses`, couplings in
:mod:`eqbg.ot`, sampling runs in :mod:`eqbg.sampling`.
"""

from __future__ import annotations

from eqbg.training.loop import CSV_COLUMNS, TrainingDivergedError, lr_multiplier, train_run
from eqbg.training.settings import TrainingSettings, resolve_run_settings
from eqbg.training.state import EMA, TrainingState, read_checkpoint

__all__ = [
    "CSV_COLUMNS",
    "TrainingDivergedError",
    "lr_multiplier",
    "train_run",
    "TrainingSettings",
    "resolve_run_settings",
    "EMA",
    "TrainingState",
    "read_checkpoint",
]
