"""The training state: everything a run needs to continue bit for bit, with save and load.

:class:`TrainingState` holds the model, optimiser, learning-rate schedule, EMA of the weights,
the loss (with its own state: counters, buffers, step sizes), every RNG, the data order, the
training curve so far, and the **best weights** by validation NLL. A checkpoint is its
:meth:`~TrainingState.state_dict` together with the run's *result key* (the settings that change
what training produces); a checkpoint whose key differs belongs to another run.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eqbg import io
from eqbg.flows.base import Flow
from eqbg.losses.base import Loss
from eqbg.training.gradients import GradientControl

__all__ = ["EMA", "TrainingState", "CHECKPOINT_VERSION", "seed_everything", "read_checkpoint"]

#: Bumped when the checkpoint layout changes; older checkpoints are set aside, not misread.
CHECKPOINT_VERSION = 2


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generator": gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any], gen: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    gen.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class EMA:
    """Exponential moving average of the trainable parameters (buffers copied)."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for s, p in zip(self.shadow.parameters(), module.parameters()):
            s.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)
        for s, b in zip(self.shadow.buffers(), module.buffers()):
            s.copy_(b)


def _cpu_copy(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state_dict.items()}


class TrainingState:
    """Model, optimiser, schedule, EMA, loss state, RNG, data order, curve and best weights.

    Args:
        model: the flow being trained.
        optimizer, scheduler: its optimiser and learning-rate schedule.
        loss: the objective (its :meth:`~eqbg.losses.Loss.state_dict` is checkpointed).
        generator: the run's RNG on the model's device.
        ema: EMA of the weights, or ``None``; when present it is what is validated and saved.
        gradients: clipping/skipping of the updates (its norm history is checkpointed).
    """

    def __init__(
        self,
        model: Flow,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        loss: Loss,
        generator: torch.Generator,
        ema: EMA | None = None,
        gradients: GradientControl | None = None,
    ) -> None:
        self.model = model
        self.gradients = gradients or GradientControl()
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.loss = loss
        self.generator = generator
        self.ema = ema
        self.step = 0  #: optimiser steps done
        self.rows: list[dict[str, Any]] = []  #: the training curve (one row per step)
        self.wall_time_s = 0.0  #: training seconds so far, over all processes of the run
        self.order: Tensor | None = None  #: permutation of the training data (this epoch)
        self.pos = 0  #: next position in ``order``
        self.best_val_nll = math.inf
        self.best_step = -1
        self.best_weights: dict[str, Tensor] | None = None  #: CPU copy, by validation NLL

    @property
    def eval_model(self) -> Flow:
        """What is validated and saved: the EMA weights when there is an EMA."""
        return self.ema.shadow if self.ema is not None else self.model

    def record_validation(self, val_nll: float) -> bool:
        """Keep the current (EMA) weights as the best when ``val_nll`` beats the best so far."""
        if not val_nll < self.best_val_nll:
            return False
        self.best_val_nll, self.best_step = float(val_nll), self.step
        self.best_weights = _cpu_copy(self.eval_model.state_dict())
        return True

    def weights_to_save(self) -> tuple[dict[str, Tensor], int, float | None]:
        """``(state_dict, step, val_nll)`` of the model a run delivers: the best weights by
        validation NLL, or the final (EMA) weights of a run without validation."""
        if self.best_weights is not None:
            return self.best_weights, self.best_step, self.best_val_nll
        return _cpu_copy(self.eval_model.state_dict()), self.step, None

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": None if self.ema is None else self.ema.shadow.state_dict(),
            "loss": self.loss.state_dict(),
            "rng": _rng_state(self.generator),
            "step": self.step,
            "rows": self.rows,
            "wall_time_s": self.wall_time_s,
            "order": None if self.order is None else self.order.cpu(),
            "pos": self.pos,
            "best": {"val_nll": self.best_val_nll, "step": self.best_step},
            "best_weights": self.best_weights,
            "gradients": self.gradients.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        device = self.model.dtype_device()[1]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.shadow.load_state_dict(state["ema"])
        self.loss.load_state_dict(state["loss"])
        _set_rng_state(state["rng"], self.generator)
        self.step, self.rows, self.wall_time_s = state["step"], state["rows"], state["wall_time_s"]
        self.order = None if state["order"] is None else state["order"].to(device)
        self.pos = state["pos"]
        self.best_val_nll, self.best_step = state["best"]["val_nll"], state["best"]["step"]
        self.best_weights = state["best_weights"]
        if "gradients" in state:
            self.gradients.load_state_dict(state["gradients"])

    def save(self, path: str | Path, key: Mapping[str, Any]) -> None:
        """Write the checkpoint atomically, tagged with the run's result ``key``."""
        with io.atomic_path(path) as tmp:
            torch.save({"key": dict(key), **self.state_dict()}, tmp)


def read_checkpoint(path: str | Path, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or ``None`` when there is none.

    Raises:
        ValueError: the file exists but cannot be read (names the file).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as err:
        raise ValueError(
            f"{path}: checkpoint is truncated or corrupt ({type(err).__name__}: {err}); "
            "delete it to start the run over"
        ) from err
