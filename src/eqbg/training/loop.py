"""One training loop for every model and loss, around a :class:`~eqbg.training.state.TrainingState`.

Files in ``run_dir``:

* ``config.json`` — the run's identity (system, model, loss, variant, seed), resolved settings
  and provenance (written at the start, completed at the end with steps done, training time and
  best validation NLL);
* ``checkpoint.pt`` — the training state (model, optimiser, schedule, EMA, loss state, RNGs,
  data order, curve, best weights), tagged with the run's result key;
* ``model.pt`` — the best weights by validation NLL (final weights without validation),
  self-describing (:func:`eqbg.rundir.load_flow` rebuilds the flow from it);
* ``train.csv`` — :data:`CSV_COLUMNS`, one row per step.

Interrupting a run (any exception, SIGTERM from a scheduler, Ctrl-C) and calling
:func:`train_run` again with the same arguments continues from the last checkpoint. A checkpoint
written with other result-changing settings is moved aside (``checkpoint.stale-<time>.pt``) and
the run starts over; thread counts, progress bars and checkpoint intervals are not part of the
key. A finished checkpoint delivers its best weights again without training, so rerunning a
finished run (Snakemake deletes ``model.pt`` before a rerun) loses nothing.
"""

from __future__ import annotations

import csv
import io as _io
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from eqbg import io
from eqbg.data import load_dataset
from eqbg.flows.base import Flow
from eqbg.flows.registry import build_flow, model_settings_dict
from eqbg.losses import build_loss
from eqbg.settings import asdict, resolve_device, resolve_dtype
from eqbg.systems import get_system
from eqbg.training.augmentation import augment_batch
from eqbg.training.gradients import GradientControl, StepDecision
from eqbg.training.settings import TrainingSettings, resolve_run_settings
from eqbg.training.state import EMA, TrainingState, read_checkpoint, seed_everything

__all__ = ["train_run", "TrainingDivergedError", "CSV_COLUMNS", "lr_multiplier"]

log = logging.getLogger(__name__)

#: Columns of ``train.csv``: ``energy_evals`` are the target-energy evaluations of the step,
#: ``n_energy_evals`` their running total.
CSV_COLUMNS = (
    "step", "loss", "lr", "val_nll", "wall_time_s", "grad_norm", "energy_evals", "n_energy_evals",
    "skipped",
)


class TrainingDivergedError(FloatingPointError):
    """Loss or gradient became NaN/inf; the last good checkpoint is left untouched."""


def lr_multiplier(ts: TrainingSettings) -> Callable[[int], float]:
    """Multiplier of the peak lr after ``step`` optimiser steps (warm-up, then the schedule)."""
    total = max(ts.steps, 1)
    warm = ts.warmup_steps

    def f(step: int) -> float:
        if warm > 0 and step < warm:
            r0 = ts.warmup_init_ratio
            return r0 + (1.0 - r0) * (step + 1) / warm
        if ts.schedule in ("constant", "warmup"):
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return ts.min_lr_ratio + (1.0 - ts.min_lr_ratio) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )

    return f


def _make_optimizer(params, ts: TrainingSettings) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if ts.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=ts.lr, betas=ts.betas, weight_decay=ts.weight_decay)


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in CSV_COLUMNS})
    with io.atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _val_nll(flow: Flow, x: Tensor, ts: TrainingSettings, gen: torch.Generator) -> float:
    """Mean NLL (nats per configuration) of ``x`` with the validation solver."""
    lp = flow.log_prob(
        x, generator=gen, batch_size=ts.val_batch_size, solver=ts.val_solver, exact=ts.val_exact
    )
    return float(-lp.double().mean())


def _load_split(data_dir: Path, split: str, system: Any) -> Tensor:
    return load_dataset(Path(data_dir) / f"{split}.npz", system=system, split=split)


def _shuffle(state: TrainingState, train_x: Tensor) -> None:
    """Start a new pass over the training data in a fresh random order."""
    state.order = torch.randperm(len(train_x), generator=state.generator, device=train_x.device)
    state.pos = 0


def _next_batch(state: TrainingState, train_x: Tensor, batch_size: int) -> Tensor:
    """The next minibatch of the current pass (a new pass starts when this one is exhausted)."""
    if state.pos + batch_size > len(train_x):
        _shuffle(state, train_x)
    idx = state.order[state.pos : state.pos + batch_size]
    state.pos += batch_size
    return train_x[idx]


def train_run(
    system: str,
    model: str,
    loss: str,
    seed: int,
    settings: Mapping[str, Any] | None,
    data_dir: str | Path | None,
    run_dir: str | Path,
    *,
    variant: str | None = None,
    system_options: Mapping[str, Any] | None = None,
    callback: Callable[[int, Flow, float], None] | None = None,
) -> dict[str, Any]:
    """Train one (system, model, loss[, variant], seed) run; resumes from ``run_dir/checkpoint.pt``.

    Args:
        system: system name (``eqbg.systems.get_system``), with ``system_options``.
        model: registered model name (:data:`eqbg.flows.registry.MODELS`).
        loss: registered loss name (:data:`eqbg.losses.LOSSES`).
        seed: seeds Python, NumPy, torch and the run's generator.
        settings: ``{"model": {...}, "ode": {...}, "training": {...}}`` (see
            :mod:`eqbg.training.settings` and :mod:`eqbg.flows.registry`).
        data_dir: folder with ``train.npz`` (losses that need data) and ``val.npz`` (validation);
            ``None`` for a run that reads neither.
        run_dir: output folder.
        variant: the grid cell's variant name (identity only: its settings arrive in
            ``settings``).
        callback: called after every completed step with ``(step, flow, loss)`` (monitoring,
            tests); an exception it raises interrupts the run like a crash would.

    Returns:
        Summary dict (also merged into ``config.json``): steps, training time, best val NLL.

    Raises:
        TrainingDivergedError: the loss or gradient norm became NaN/inf (message names the step).
    """
    run_dir = Path(run_dir)
    rs = resolve_run_settings(settings)
    ts: TrainingSettings = rs["training"]
    model_dict = model_settings_dict(rs["model"], model)
    ode_dict = asdict(rs["ode"])
    sys_opts = dict(system_options or {})
    sys_obj = get_system(system, **sys_opts)
    objective = build_loss(loss, ts, sys_obj)
    run_dir.mkdir(parents=True, exist_ok=True)

    if ts.num_threads:
        torch.set_num_threads(int(ts.num_threads))
    device = resolve_device(ts.device)
    dtype = resolve_dtype(ts.dtype)
    seed_everything(seed)
    gen = torch.Generator(device=device).manual_seed(seed)

    train_x = None
    if objective.needs_data:
        if data_dir is None:
            raise ValueError(f"loss {loss!r} trains on data, but no data folder was given")
        train_x = _load_split(Path(data_dir), "train", sys_obj)
        if ts.n_train is not None:
            if ts.n_train > len(train_x):
                raise ValueError(
                    f"training.n_train={ts.n_train} exceeds the {len(train_x)} training samples"
                )
            sub = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))
            train_x = train_x[sub[: ts.n_train]]
        if ts.batch_size > len(train_x):
            raise ValueError(
                f"training.batch_size={ts.batch_size} exceeds the {len(train_x)} training samples"
            )
        train_x = train_x.to(device=device, dtype=dtype)
    val_x = None
    if ts.val_every > 0:
        if data_dir is None:
            raise ValueError("validation (val_every > 0) needs the data folder with val.npz")
        v = _load_split(Path(data_dir), "val", sys_obj)
        sel = torch.randperm(len(v), generator=torch.Generator().manual_seed(seed + 1))
        val_x = v[sel[: ts.val_size]].to(device=device, dtype=dtype)

    flow = build_flow(sys_obj, model_dict, ode_dict).to(device=device, dtype=dtype)
    optimizer = _make_optimizer(flow.parameters(), ts)
    state = TrainingState(
        flow,
        optimizer,
        torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(ts)),
        objective,
        gen,
        EMA(flow, ts.ema_decay) if ts.ema_decay else None,
        GradientControl(ts.grad_clip_mode, ts.grad_clip, window=ts.grad_window,
                        clip_factor=ts.grad_clip_factor, skip_factor=ts.grad_skip_factor),
    )
    if train_x is not None:
        _shuffle(state, train_x)

    identity = {"system": system, "model": model, "loss": loss, "variant": variant, "seed": int(seed)}
    config = {
        **identity,
        "system_options": sys_opts,
        "model_settings": model_dict,
        "ode": ode_dict,
        "training": asdict(ts),
        "data_dir": None if data_dir is None else str(data_dir),
        "n_train": None if train_x is None else int(len(train_x)),
        "device": str(device),
    }
    key = {**identity, **config, "training": ts.result_key()}
    key.pop("data_dir")
    ckpt_path = run_dir / "checkpoint.pt"
    ck = read_checkpoint(ckpt_path, device)
    if ck is not None and ck.get("key") != key:
        # Changed settings mean a new run (Snakemake reruns on changed params): start over,
        # but keep the old checkpoint beside it rather than deleting someone's training.
        stale = ckpt_path.with_name(f"checkpoint.stale-{time.strftime('%Y%m%dT%H%M%S')}.pt")
        ckpt_path.rename(stale)
        log.warning(
            "%s was written with different settings; moved it to %s and starting over",
            ckpt_path, stale.name,
        )
        ck = None
    if ck is not None:
        state.load_state_dict(ck)
        log.info("resuming %s from step %d", run_dir, state.step)
    io.write_json(run_dir / "config.json", io.provenance(**config, status="running"))

    bar = None
    if ts.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=ts.steps, initial=state.step, desc=f"{run_dir}")
    wall_before, t_start = state.wall_time_s, time.perf_counter()
    flow.train()
    while state.step < ts.steps:
        batch = None if train_x is None else _next_batch(state, train_x, ts.batch_size)
        if batch is not None and ts.augment:
            batch = augment_batch(batch, sys_obj.atom_types, gen)
        optimizer.zero_grad(set_to_none=True)
        evals_before = objective.n_energy_evals
        value = objective(flow, batch, generator=gen)
        loss_val = float(value.detach())
        where = f"at step {state.step + 1} ({system}/{model}/{loss}, seed {seed})"
        last_good = ckpt_path if ckpt_path.exists() else "none"
        lr = optimizer.param_groups[0]["lr"]
        control = state.gradients
        try:
            if not math.isfinite(loss_val):
                if not control.skips_nonfinite_loss:
                    raise TrainingDivergedError(
                        f"non-finite loss {loss_val} {where}; last good checkpoint: {last_good}"
                    )
                control.skip()
                decision = StepDecision(math.nan, skip=True)
            else:
                value.backward()
                decision = control.apply([p for p in flow.parameters() if p.grad is not None])
        except FloatingPointError as err:
            raise TrainingDivergedError(f"{err} {where}; last good checkpoint: {last_good}") from err
        grad_norm = decision.grad_norm
        if not decision.skip and not math.isfinite(grad_norm):
            raise TrainingDivergedError(
                f"non-finite gradient norm {grad_norm} {where} (loss {loss_val}); last good "
                f"checkpoint: {last_good}"
            )
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
        state.wall_time_s = wall_before + time.perf_counter() - t_start
        state.rows.append(
            {
                "step": state.step,
                "loss": loss_val,
                "lr": lr,
                "val_nll": "" if val_nll is None else val_nll,
                "wall_time_s": state.wall_time_s,
                "grad_norm": grad_norm,
                "energy_evals": objective.n_energy_evals - evals_before,
                "n_energy_evals": objective.n_energy_evals,
                "skipped": int(decision.skip),
            }
        )
        if bar is not None:
            bar.update(1)
            bar.set_postfix({"loss": f"{loss_val:.4g}"})
        if state.step % ts.checkpoint_every == 0 or state.step == ts.steps:
            state.save(ckpt_path, key)
            _write_csv(run_dir / "train.csv", state.rows)
        if callback is not None:
            callback(state.step, flow, loss_val)
    if bar is not None:
        bar.close()

    weights, saved_step, saved_val = state.weights_to_save()
    with io.atomic_path(run_dir / "model.pt") as tmp:
        torch.save(
            {
                "state_dict": weights,
                "system": system,
                "system_options": sys_opts,
                "model": model_dict,
                "ode": ode_dict,
                "loss": loss,
                "step": saved_step,
                "val_nll": saved_val,
                "ema": state.ema is not None,
            },
            tmp,
        )
    _write_csv(run_dir / "train.csv", state.rows)
    summary = {
        "steps_done": state.step,
        "training_time_s": state.wall_time_s,
        "best_val_nll": None if state.best_weights is None else state.best_val_nll,
        "best_step": saved_step,
        "n_train": config["n_train"],
        "n_parameters": int(sum(p.numel() for p in flow.parameters())),
        "n_energy_evals": int(objective.n_energy_evals),
        "n_skipped_updates": int(state.gradients.n_skipped),
    }
    io.write_json(run_dir / "config.json", io.provenance(**config, status="done", result=summary))
    return summary
