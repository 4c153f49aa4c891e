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
from tqdm.auto import tqdm

from eqbg import io
from eqbg.flows.base import Flow
from eqbg.flows.registry import build_flow, model_settings_dict
from eqbg.losses import Loss, build_loss
from eqbg.rundir import DataDir
from eqbg.settings import asdict, resolve_device, resolve_dtype
from eqbg.systems import get_system
from eqbg.training.augmentation import augment_batch
from eqbg.training.batches import next_batch, shuffle, training_data
from eqbg.training.gradients import GradientControl
from eqbg.training.settings import TrainingSettings, resolve_run_settings
from eqbg.training.state import EMA, TrainingState, read_checkpoint, seed_everything
from eqbg.training.step import TrainingDivergedError, train_step

__all__ = ["train_run", "TrainingDivergedError", "CSV_COLUMNS", "lr_multiplier"]

log = logging.getLogger(__name__)

#: Columns of ``train.csv``: ``energy_evals`` are the target-energy evaluations of the step,
#: ``n_energy_evals`` their running total.
CSV_COLUMNS = (
    "step", "loss", "lr", "val_nll", "wall_time_s", "grad_norm", "energy_evals", "n_energy_evals",
    "skipped",
)


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
    return cls(params, lr=ts.lr, betas=ts.betas, weight_decay=ts.weight_decay, amsgrad=ts.amsgrad)


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in CSV_COLUMNS})
    with io.atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def train_run(
    system: str,
    model: str,
    loss: str,
    seed: int,
    settings: Mapping[str, Any] | None,
    data_dir: str | Path | DataDir | None,
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
        settings: ``{"model": {...}, "loss": {...}, "ode": {...}, "training": {...}}`` (see
            :mod:`eqbg.training.settings`, :mod:`eqbg.flows.registry` and
            :mod:`eqbg.losses.registry`).
        data_dir: folder with ``train.npz`` (losses that need data) and ``val.npz`` (validation),
            or a :class:`~eqbg.rundir.DataDir` of the files the train rule declared; ``None`` for
            a run that reads neither.
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
    rs = resolve_run_settings(settings, loss)
    ts: TrainingSettings = rs["training"]
    model_dict = model_settings_dict(rs["model"], model)
    ode_dict = asdict(rs["ode"])
    sys_opts = dict(system_options or {})
    sys_obj = get_system(system, **sys_opts)
    objective = build_loss(loss, sys_obj, rs["loss"], ts.batch_size)
    run_dir.mkdir(parents=True, exist_ok=True)

    if ts.num_threads:
        torch.set_num_threads(int(ts.num_threads))
    device = resolve_device(ts.device)
    dtype = resolve_dtype(ts.dtype)
    seed_everything(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    train_x, val_x = training_data(loss, objective.needs_data, data_dir, ts, sys_obj, seed, device, dtype)
    # built after seeding: the initial weights come from the global RNG
    flow = build_flow(sys_obj, model_dict, ode_dict).to(device=device, dtype=dtype)
    state = _new_state(flow, objective, gen, ts)
    if train_x is not None:
        shuffle(state, train_x)

    identity = {"system": system, "model": model, "loss": loss, "variant": variant, "seed": int(seed)}
    config = _run_record(identity, sys_opts, rs, model_dict, data_dir, train_x, device)
    key = {**config, "training": ts.result_key()}
    key.pop("data_dir")
    ckpt_path = run_dir / "checkpoint.pt"
    _resume(state, ckpt_path, key, device)
    io.write_json(run_dir / "config.json", io.provenance(**config, status="running"))

    where = f"{system}/{model}/{loss}, seed {seed}"
    _train(state, ts, train_x, val_x, sys_obj, run_dir, key, where, callback)
    model_file = {"system": system, "system_options": sys_opts, "model": model_dict, "ode": ode_dict, "loss": loss}
    summary = _finish(state, run_dir, model_file, config["n_train"])
    io.write_json(run_dir / "config.json", io.provenance(**config, status="done", result=summary))
    return summary


def _run_record(
    identity: Mapping[str, Any], system_options: Mapping[str, Any], rs: Mapping[str, Any],
    model_dict: Mapping[str, Any], data_dir: str | Path | DataDir | None, train_x: Tensor | None,
    device: torch.device,
) -> dict[str, Any]:
    """What ``config.json`` records of a run: its identity and every resolved setting."""
    return {
        **identity,
        "system_options": dict(system_options),
        "model_settings": dict(model_dict),
        "loss_settings": asdict(rs["loss"]),
        "ode": asdict(rs["ode"]),
        "training": asdict(rs["training"]),
        "data_dir": None if data_dir is None else str(data_dir.root if isinstance(data_dir, DataDir) else data_dir),
        "n_train": None if train_x is None else int(len(train_x)),
        "device": str(device),
    }


def _finish(state: TrainingState, run_dir: Path, model_file: Mapping[str, Any], n_train: int | None) -> dict[str, Any]:
    """Write ``model.pt`` (the weights to keep with ``model_file``'s fields, which rebuild the
    flow) and the whole ``train.csv``; return the run's summary."""
    weights, saved_step, saved_val = state.weights_to_save()
    with io.atomic_path(run_dir / "model.pt") as tmp:
        torch.save(
            {"state_dict": weights, **model_file, "step": saved_step, "val_nll": saved_val,
             "ema": state.ema is not None},
            tmp,
        )
    _write_csv(run_dir / "train.csv", state.rows)
    return {
        "steps_done": state.step,
        "training_time_s": state.wall_time_s,
        "best_val_nll": None if state.best_weights is None else state.best_val_nll,
        "best_step": saved_step,
        "n_train": n_train,
        "n_parameters": int(sum(p.numel() for p in state.model.parameters())),
        "n_energy_evals": int(state.loss.n_energy_evals),
        "n_skipped_updates": int(state.gradients.n_skipped),
    }


def _new_state(flow: Flow, objective: Loss, gen: torch.Generator, ts: TrainingSettings) -> TrainingState:
    """A fresh training state: optimiser, schedule, EMA and gradient control from ``ts``."""
    optimizer = _make_optimizer(flow.parameters(), ts)
    return TrainingState(
        flow,
        optimizer,
        torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(ts)),
        objective,
        gen,
        EMA(flow, ts.ema_decay) if ts.ema_decay else None,
        GradientControl(ts.grad_clip_mode, ts.grad_clip, window=ts.grad_window,
                        clip_factor=ts.grad_clip_factor, skip_factor=ts.grad_skip_factor),
    )


def _resume(state: TrainingState, ckpt_path: Path, key: Mapping[str, Any], device: torch.device) -> None:
    """Load the checkpoint written with the same result ``key``; one with another key is moved
    aside (``checkpoint.stale-<time>.pt``) and the run starts over."""
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
        log.info("resuming %s from step %d", ckpt_path.parent, state.step)


def _train(state: TrainingState, ts: TrainingSettings, train_x: Tensor | None, val_x: Tensor | None,
           system: Any, run_dir: Path, key: Mapping[str, Any], where: str,
           callback: Callable[[int, Flow, float], None] | None) -> None:
    """Steps until ``ts.steps``, checkpointing every ``checkpoint_every`` and at the end."""
    ckpt_path = run_dir / "checkpoint.pt"
    bar = tqdm(total=ts.steps, initial=state.step, desc=f"{run_dir}") if ts.progress else None
    wall_before, t_start = state.wall_time_s, time.perf_counter()
    state.model.train()
    while state.step < ts.steps:
        batch = None if train_x is None else next_batch(state, train_x, ts.batch_size)
        if batch is not None and ts.augment:
            batch = augment_batch(batch, system.atom_types, state.generator)
        last_good = ckpt_path if ckpt_path.exists() else "none"
        row = train_step(state, batch, ts, val_x,
                         f"at step {state.step + 1} ({where}); last good checkpoint: {last_good}")
        state.wall_time_s = wall_before + time.perf_counter() - t_start
        state.rows.append({**row, "wall_time_s": state.wall_time_s})
        if bar is not None:
            bar.update(1)
            bar.set_postfix({"loss": f"{row['loss']:.4g}"})
        if state.step % ts.checkpoint_every == 0 or state.step == ts.steps:
            state.save(ckpt_path, key)
            _write_csv(run_dir / "train.csv", state.rows)
        if callback is not None:
            callback(state.step, state.model, row["loss"])
    if bar is not None:
        bar.close()
