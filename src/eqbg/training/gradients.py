"""Gradient control of a training step: a fixed norm clip, or the dynamic clip-and-skip of the
augmented coupling flow's authors.

* ``norm``: clip the global gradient norm at ``grad_clip`` (none when unset); a non-finite norm
  stops the run (:class:`~eqbg.training.loop.TrainingDivergedError`), because nothing in the
  objective should produce one.
* ``dynamic`` (Midgley et al. 2023): keep the last ``window`` finite gradient norms (skipped
  steps' included, so the rule follows a lasting change of the gradient scale); skip the
  update when the norm is non-finite or above ``skip_factor`` times their median, else clip it to
  ``clip_factor`` times the median. Until ``min_history`` norms are known it only skips non-finite
  gradients. Non-finite losses are skipped too (the flow's own guard drops failed samples first).
  Skips are counted; ``max_consecutive_skips`` in a row stop the run.

The history is part of the training state, so a resumed run clips exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["GradientControl", "StepDecision"]


@dataclass(frozen=True)
class StepDecision:
    """What :meth:`GradientControl.apply` did: the norm before clipping and whether to step."""

    grad_norm: float
    skip: bool


class GradientControl:
    """Clip (and, in ``dynamic`` mode, skip) a step's gradients; see the module docstring.

    Args:
        mode: ``norm`` or ``dynamic``.
        max_norm: the fixed clip of ``norm`` mode (None: no clipping).
        window, clip_factor, skip_factor: the dynamic rule.
        min_history: norms needed before the dynamic rule clips or skips large norms.
        max_consecutive_skips: skips in a row that stop the run.
    """

    MODES = ("norm", "dynamic")

    def __init__(
        self,
        mode: str = "norm",
        max_norm: float | None = None,
        *,
        window: int = 100,
        clip_factor: float = 2.0,
        skip_factor: float = 10.0,
        min_history: int = 10,
        max_consecutive_skips: int = 100,
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"gradient control mode must be one of {self.MODES}, got {mode!r}")
        self.mode, self.max_norm = mode, max_norm
        self.clip_factor, self.skip_factor = float(clip_factor), float(skip_factor)
        self.min_history, self.max_consecutive_skips = int(min_history), int(max_consecutive_skips)
        self.history: deque[float] = deque(maxlen=int(window))
        self.n_skipped = 0  #: updates skipped so far
        self.consecutive_skips = 0

    @property
    def skips_nonfinite_loss(self) -> bool:
        """Whether a non-finite loss is skipped (dynamic) rather than fatal (norm)."""
        return self.mode == "dynamic"

    def skip(self) -> None:
        """Record a skipped update (e.g. a non-finite loss, before any gradient exists)."""
        self.n_skipped += 1
        self.consecutive_skips += 1
        if self.consecutive_skips >= self.max_consecutive_skips:
            raise FloatingPointError(f"{self.consecutive_skips} consecutive updates skipped")

    def apply(self, params: list[torch.Tensor]) -> StepDecision:
        """Clip the gradients of ``params`` in place and say whether to take the step."""
        if self.mode == "norm":
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.max_norm or math.inf))
            return StepDecision(norm, skip=False)
        norm = float(torch.nn.utils.clip_grad_norm_(params, math.inf))
        median = float(torch.tensor(list(self.history)).median()) if len(self.history) >= self.min_history else None
        if math.isfinite(norm):
            # every finite norm enters the history, skipped or not: were skipped norms left out,
            # a lasting rise of the gradient scale (a sharper loss later in training) would be
            # skipped for ever
            self.history.append(norm)
        if not math.isfinite(norm) or (median is not None and norm > self.skip_factor * median):
            self.skip()
            return StepDecision(norm, skip=True)
        if median is not None:
            torch.nn.utils.clip_grad_norm_(params, self.clip_factor * median)
        self.consecutive_skips = 0
        return StepDecision(norm, skip=False)

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "n_skipped": self.n_skipped,
                "consecutive_skips": self.consecutive_skips}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history.clear()
        self.history.extend(state["history"])
        self.n_skipped, self.consecutive_skips = int(state["n_skipped"]), int(state["consecutive_skips"])
