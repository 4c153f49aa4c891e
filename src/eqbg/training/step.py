"""One optimisation step of the training loop: the objective on a minibatch, gradient control
(clipping, skipping), the optimiser, schedule and EMA, validation when due, and the step's row of
``train.csv``. A non-finite loss or gradient the control does not skip stops the run."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from eqbg.flows.base import Flow
from eqbg.training.gradients import StepDecision
from eqbg.training.settings import TrainingSettings
from eqbg.training.state import TrainingState

__all__ = ["TrainingDivergedError", "train_step"]


class TrainingDivergedError(FloatingPointError):
    """Loss or gradient became NaN/inf; the last good checkpoint is left untouched."""


def _val_nll(flow: Flow, x: Tensor, ts: TrainingSettings, gen: torch.Generator) -> float:
    """Mean NLL (nats per configuration) of ``x`` with the validation solver."""
    lp = flow.log_prob(
        x, generator=gen, batch_size=ts.val_batch_size, solver=ts.val_solver.solver, exact=ts.val_exact
    )
    return float(-lp.double().mean())


def _gradient_step(state: TrainingState, value: Tensor, where: str) -> tuple[float, StepDecision]:
    """Backpropagate ``value`` and let the gradient control decide: ``(loss, decision)``;
    ``where`` names the step, the run and its last good checkpoint in error messages.

    Raises:
        TrainingDivergedError: a non-finite loss or gradient norm that is not skipped.
    """
    loss_val = float(value.detach())
    control = state.gradients
    try:
        if not math.isfinite(loss_val):
            if not control.skips_nonfinite_loss:
                raise TrainingDivergedError(f"non-finite loss {loss_val} {where}")
            control.skip()
            decision = StepDecision(math.nan, skip=True)
        else:
            value.backward()
            decision = control.apply([p for p in state.model.parameters() if p.grad is not None])
    except FloatingPointError as err:
        if isinstance(err, TrainingDivergedError):
            raise
        raise TrainingDivergedError(f"{err} {where}") from err
    if not decision.skip and not math.isfinite(decision.grad_norm):
        raise TrainingDivergedError(f"non-finite gradient norm {decision.grad_norm} {where} (loss {loss_val})")
    return loss_val, decision


def train_step(state: TrainingState, batch: Tensor | None, ts: TrainingSettings, val_x: Tensor | None,
               where: str) -> dict[str, Any]:
    """One step on ``batch`` (``None`` for energy-only losses); returns its ``train.csv`` row
    (without ``wall_time_s``, which the loop adds). ``where``: as for :func:`_gradient_step`.

    Raises:
        TrainingDivergedError: a non-finite loss or gradient norm that is not skipped.
    """
    flow, optimizer, objective, gen = state.model, state.optimizer, state.loss, state.generator
    optimizer.zero_grad(set_to_none=True)
    evals_before = objective.n_energy_evals
    value = objective(flow, batch, generator=gen)
    lr = optimizer.param_groups[0]["lr"]
    loss_val, decision = _gradient_step(state, value, where)
    if not decision.skip:
        optimizer.step()
    state.scheduler.step()
    if state.ema is not None:
        state.ema.update(flow)
    state.step += 1
    val_nll = None
    if val_x is not None and (state.step % ts.val_every == 0 or state.step == ts.steps):
        module = state.eval_model
        module.eval()
        val_nll = _val_nll(module, val_x, ts, gen)
        flow.train()
        state.record_validation(val_nll)
    return {
        "step": state.step,
        "loss": loss_val,
        "lr": lr,
        "val_nll": "" if val_nll is None else val_nll,
        "grad_norm": decision.grad_norm,
        "energy_evals": objective.n_energy_evals - evals_before,
        "n_energy_evals": objective.n_energy_evals,
        "skipped": int(decision.skip),
    }
