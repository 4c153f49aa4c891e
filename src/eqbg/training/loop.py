"""One training loop for every loss, with resumable checkpoints, validation, and sampling runs.

Files in ``run_dir`` (DESIGN.md "Files between stages"):

* ``config.json`` — resolved settings + provenance (written at the start, completed at the end
  with steps done, training time and best validation NLL);
* ``checkpoint.pt`` — everything needed to resume bit-for-bit: model, optimiser, scheduler, EMA,
  all RNG states, data-order state, step, best-so-far and the training curve so far;
* ``model.pt`` — best weights by validation NLL (final weights when there is no validation);
* ``train.csv`` — step, loss, lr, val_nll, wall_time_s, grad_norm.

Interrupting a run (any exception, SIGTERM from a scheduler, Ctrl-C) and calling
:func:`train_run` again with the same arguments continues from the last checkpoint.
"""

from __future__ import annotations

import copy
import csv
import io as _io
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eqbg import io
from eqbg.flows import CNF
from eqbg.training.losses import CouplingOptions, loss_step
from eqbg.training.models import build_flow, model_settings_dict
from eqbg.training.settings import (
    LOSSES,
    SamplingSettings,
    SettingsError,
    TrainingSettings,
    asdict,
    resolve,
    resolve_device,
    resolve_dtype,
    resolve_run_settings,
)

__all__ = ["train_run", "load_flow", "sample_run", "TrainingDivergedError", "CSV_COLUMNS"]

log = logging.getLogger(__name__)

CSV_COLUMNS = ("step", "loss", "lr", "val_nll", "wall_time_s", "grad_norm")
CHECKPOINT_VERSION = 1


class TrainingDivergedError(FloatingPointError):
    """Loss or gradient became NaN/inf; the last good checkpoint is left untouched."""


# --------------------------------------------------------------------------------- helpers


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _lr_lambda(ts: TrainingSettings) -> Callable[[int], float]:
    """Multiplier of the peak lr after ``step`` optimiser steps."""
    total = max(ts.steps, 1)
    warm = ts.warmup_steps

    def f(step: int) -> float:
        if warm > 0 and step < warm:
            return (step + 1) / warm
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


def _save_torch(path: Path, obj: Any) -> None:
    with io.atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in CSV_COLUMNS})
    with io.atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


class _EMA:
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


def _val_nll(flow: CNF, x: Tensor, ts: TrainingSettings, gen: torch.Generator) -> float:
    """Mean NLL (nats per configuration) of ``x`` with the validation solver settings."""
    saved = (flow.method, flow.atol, flow.rtol, flow.n_steps)
    flow.method, flow.atol, flow.rtol, flow.n_steps = ts.val_method, ts.val_atol, ts.val_rtol, None
    try:
        lp = flow.log_prob(x, exact=ts.val_exact, batch_size=ts.val_batch_size, generator=gen)
    finally:
        flow.method, flow.atol, flow.rtol, flow.n_steps = saved
    return float(-lp.double().mean())


def _load_split(data_dir: Path, split: str, system: Any) -> Tensor:
    from eqbg.data import load_dataset

    return load_dataset(Path(data_dir) / f"{split}.npz", system=system, split=split)


# --------------------------------------------------------------------------------- training


def train_run(
    system: str,
    model: str,
    loss: str,
    seed: int,
    settings: Mapping[str, Any] | None,
    data_dir: str | Path,
    run_dir: str | Path,
    *,
    system_options: Mapping[str, Any] | None = None,
    callback: Callable[[int, CNF, float], None] | None = None,
) -> dict[str, Any]:
    """Train one (system, model, loss, seed) run; resumes from ``run_dir/checkpoint.pt``.

    Args:
        system: system name (``eqbg.systems.get_system``), with ``system_options``.
        model: registered model name (``egnn``, ``kernel``, ...).
        loss: one of ``ml``, ``fm``, ``otfm``, ``eqotfm``.
        seed: seeds python, NumPy, torch and the run's generator.
        settings: ``{"model": {...}, "ode": {...}, "training": {...}}`` (see
            :mod:`eqbg.training.settings` and :mod:`eqbg.training.models`).
        data_dir: folder with ``train.npz`` and (for validation) ``val.npz``.
        run_dir: output folder.
        callback: called after every completed step with ``(step, flow, loss)`` (monitoring,
            tests); an exception it raises interrupts the run like a crash would.

    Returns:
        Summary dict (also merged into ``config.json``): steps, training time, best val NLL.

    Raises:
        TrainingDivergedError: the loss or gradient norm became NaN/inf (message names the step).
    """
    from eqbg.systems import get_system

    if loss not in LOSSES:
        raise SettingsError(f"unknown loss {loss!r}; known: {list(LOSSES)}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rs = resolve_run_settings(settings)
    ts: TrainingSettings = rs["training"]
    model_dict = model_settings_dict(rs["model"], model)
    ode_dict = asdict(rs["ode"])
    sys_opts = dict(system_options or {})
    sys_obj = get_system(system, **sys_opts)

    if ts.num_threads:
        torch.set_num_threads(int(ts.num_threads))
    device = resolve_device(ts.device)
    dtype = resolve_dtype(ts.dtype)
    _seed_everything(seed)
    gen = torch.Generator(device=device).manual_seed(seed)

    train_x = _load_split(Path(data_dir), "train", sys_obj)
    if ts.n_train is not None:
        if ts.n_train > len(train_x):
            raise SettingsError(
                f"training.n_train={ts.n_train} exceeds the {len(train_x)} training samples"
            )
        sub = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))
        train_x = train_x[sub[: ts.n_train]]
    if ts.batch_size > len(train_x):
        raise SettingsError(
            f"training.batch_size={ts.batch_size} exceeds the {len(train_x)} training samples"
        )
    train_x = train_x.to(device=device, dtype=dtype)
    val_x = None
    if ts.val_every > 0:
        v = _load_split(Path(data_dir), "val", sys_obj)
        sel = torch.randperm(len(v), generator=torch.Generator().manual_seed(seed + 1))
        val_x = v[sel[: ts.val_size]].to(device=device, dtype=dtype)

    flow = build_flow(sys_obj, model_dict, ode_dict).to(device=device, dtype=dtype)
    opt = _make_optimizer(flow.parameters(), ts)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(ts))
    ema = _EMA(flow, ts.ema_decay) if ts.ema_decay else None
    coupling = CouplingOptions(ts.eqot_init, ts.eqot_max_iter, ts.eqot_exhaustive_limit)
    ml_ode = {"method": ts.ml_method, "atol": ts.ml_atol, "rtol": ts.ml_rtol}
    atom_types = sys_obj.atom_types

    config = {
        "system": system,
        "system_options": sys_opts,
        "model": model_dict,
        "ode": ode_dict,
        "training": asdict(ts),
        "loss": loss,
        "seed": int(seed),
        "data_dir": str(data_dir),
        "device": str(device),
    }
    ckpt_path = run_dir / "checkpoint.pt"
    model_path = run_dir / "model.pt"
    step = 0
    rows: list[dict[str, Any]] = []
    best = {"val_nll": math.inf, "step": -1}
    wall_before = 0.0
    order = torch.randperm(len(train_x), generator=gen, device=device)
    pos = 0
    ck = None
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
    if ck is not None and (
        ck.get("config", {}).get("training") != config["training"]
        or any(ck["config"].get(k) != config[k] for k in ("system", "model", "ode", "loss", "seed"))
    ):
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
        flow.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if ema is not None:
            ema.shadow.load_state_dict(ck["ema"])
        step, rows, best, wall_before = ck["step"], ck["rows"], ck["best"], ck["wall_time_s"]
        order, pos = ck["order"].to(device), ck["pos"]
        _set_rng_state(ck["rng"], gen)
        log.info("resuming %s from step %d", run_dir, step)

    io.write_json(run_dir / "config.json", io.provenance(**config, status="running"))

    def eval_module() -> CNF:
        return ema.shadow if ema is not None else flow

    def save_model(tag_step: int, val_nll: float | None) -> None:
        _save_torch(
            model_path,
            {
                "state_dict": eval_module().state_dict(),
                "system": system,
                "system_options": sys_opts,
                "model": model_dict,
                "ode": ode_dict,
                "loss": loss,
                "step": tag_step,
                "val_nll": val_nll,
                "ema": ema is not None,
            },
        )

    def save_checkpoint() -> None:
        _save_torch(
            ckpt_path,
            {
                "version": CHECKPOINT_VERSION,
                "config": config,
                "model": flow.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "ema": None if ema is None else ema.shadow.state_dict(),
                "step": step,
                "rows": rows,
                "best": best,
                "wall_time_s": wall_before + (time.perf_counter() - t_start),
                "order": order.cpu(),
                "pos": pos,
                "rng": _rng_state(gen),
            },
        )
        _write_csv(run_dir / "train.csv", rows)

    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a pinned dependency
        tqdm = None
    bar = None
    if ts.progress and tqdm is not None:
        bar = tqdm(total=ts.steps, initial=step, desc=f"{system}/{model}/{loss}/seed{seed}")

    t_start = time.perf_counter()
    flow.train()
    while step < ts.steps:
        if pos + ts.batch_size > len(train_x):
            order = torch.randperm(len(train_x), generator=gen, device=device)
            pos = 0
        idx = order[pos : pos + ts.batch_size]
        pos += ts.batch_size
        x1 = train_x[idx]
        opt.zero_grad(set_to_none=True)
        value = loss_step(
            loss,
            flow,
            x1,
            generator=gen,
            sigma=ts.sigma,
            atom_types=atom_types,
            coupling=coupling,
            ml_ode=ml_ode,
        )
        loss_val = float(value.detach())
        if not math.isfinite(loss_val):
            raise TrainingDivergedError(
                f"non-finite loss {loss_val} at step {step + 1} ({system}/{model}/{loss}, "
                f"seed {seed}); last good checkpoint: {ckpt_path if ckpt_path.exists() else 'none'}"
            )
        value.backward()
        params = [p for p in flow.parameters() if p.grad is not None]
        max_norm = ts.grad_clip if ts.grad_clip else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if not math.isfinite(grad_norm):
            raise TrainingDivergedError(
                f"non-finite gradient norm {grad_norm} at step {step + 1} (loss {loss_val}; "
                f"{system}/{model}/{loss}, seed {seed}); last good checkpoint: "
                f"{ckpt_path if ckpt_path.exists() else 'none'}"
            )
        lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(flow)
        step += 1
        val_nll = None
        if val_x is not None and (step % ts.val_every == 0 or step == ts.steps):
            module = eval_module()
            module.eval()
            val_nll = _val_nll(module, val_x, ts, gen)
            flow.train()
            if val_nll < best["val_nll"]:
                best = {"val_nll": val_nll, "step": step}
                save_model(step, val_nll)
        rows.append(
            {
                "step": step,
                "loss": loss_val,
                "lr": lr,
                "val_nll": "" if val_nll is None else val_nll,
                "wall_time_s": wall_before + time.perf_counter() - t_start,
                "grad_norm": grad_norm,
            }
        )
        if bar is not None:
            bar.update(1)
            post = {"loss": f"{loss_val:.4g}"}
            if val_nll is not None:
                post["val_nll"] = f"{val_nll:.4g}"
            bar.set_postfix(post)
        if step % ts.checkpoint_every == 0 or step == ts.steps:
            save_checkpoint()
        if callback is not None:
            callback(step, flow, loss_val)
    if bar is not None:
        bar.close()

    if val_x is None or not model_path.exists():
        save_model(step, None)
    if not (run_dir / "train.csv").exists() or step == 0:
        _write_csv(run_dir / "train.csv", rows)
    total_time = wall_before + time.perf_counter() - t_start
    summary = {
        "steps_done": step,
        "training_time_s": total_time,
        "best_val_nll": None if not math.isfinite(best["val_nll"]) else best["val_nll"],
        "best_step": best["step"] if math.isfinite(best["val_nll"]) else step,
        "n_train": int(len(train_x)),
        "n_parameters": int(sum(p.numel() for p in flow.parameters())),
    }
    io.write_json(run_dir / "config.json", io.provenance(**config, status="done", result=summary))
    return summary


# --------------------------------------------------------------------------------- inference


def load_flow(
    run_dir: str | Path,
    *,
    ode: Mapping[str, Any] | None = None,
    device: str = "cpu",
    dtype: str | None = None,
) -> tuple[CNF, dict[str, Any]]:
    """Rebuild the trained CNF of ``run_dir`` from ``model.pt`` and its ``config.json``.

    Args:
        ode: overrides of the stored ODE settings (e.g. sampling tolerances).
        device: where to put the model (``auto`` allowed).
        dtype: ``float32``/``float64`` (default: the training dtype).

    Returns:
        ``(flow in eval mode, config dict)``.
    """
    from eqbg.systems import get_system

    run_dir = Path(run_dir)
    cfg_path, model_path = run_dir / "config.json", run_dir / "model.pt"
    for p in (cfg_path, model_path):
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: is {run_dir} a finished training run?")
    config = io.read_json(cfg_path)
    saved = torch.load(model_path, map_location="cpu", weights_only=False)
    ode_cfg = dict(saved["ode"])
    ode_cfg.update(dict(ode or {}))
    sys_obj = get_system(saved["system"], **dict(saved.get("system_options") or {}))
    flow = build_flow(sys_obj, saved["model"], ode_cfg)
    flow.load_state_dict(saved["state_dict"])
    dt = resolve_dtype(dtype or config.get("training", {}).get("dtype", "float32"))
    flow = flow.to(device=resolve_device(device), dtype=dt).eval()
    for p in flow.parameters():
        p.requires_grad_(False)
    return flow, config


def sample_run(
    run_dir: str | Path,
    n_samples: int,
    settings: Mapping[str, Any] | None,
    out_path: str | Path,
    seed: int,
) -> dict[str, Any]:
    """Draw ``n_samples`` with exact log densities from the run's model; write ``samples.npz``.

    The file holds ``x`` ``(N, n, d)``, ``log_q`` ``(N,)`` (nats, CoM-free Gaussian normaliser
    included), and scalars ``nfe`` (per trajectory batch, summed), ``path_length`` (mean),
    ``wall_time_s``, ``n``, ``method``, ``atol``, ``rtol``, ``n_steps`` (-1: adaptive),
    ``exact``, ``seed``. Returns the scalars (plus ``samples_per_s``).
    """
    ss: SamplingSettings = resolve(SamplingSettings, settings, "sampling")
    if n_samples < 1:
        raise SettingsError(f"n_samples must be >= 1, got {n_samples}")
    if ss.num_threads:
        torch.set_num_threads(int(ss.num_threads))
    ode = {"method": ss.method, "atol": ss.atol, "rtol": ss.rtol, "n_steps": ss.n_steps}
    flow, config = load_flow(run_dir, ode=ode, device=ss.device, dtype=ss.dtype)
    device = resolve_device(ss.device)
    gen = torch.Generator(device=device).manual_seed(seed)
    res = flow.sample(n_samples, exact=ss.exact, generator=gen, batch_size=ss.batch_size)
    x = res.x.detach().cpu().numpy()
    log_q = res.log_q.detach().cpu().double().numpy()
    bad = ~np.isfinite(log_q) | ~np.isfinite(x.reshape(len(x), -1)).all(1)
    info = {
        "n": int(n_samples),
        "nfe": int(res.nfe),
        "path_length": float(res.path_length),
        "wall_time_s": float(res.wall_time_s),
        "method": ss.method,
        "atol": float(ss.atol),
        "rtol": float(ss.rtol),
        "n_steps": -1 if ss.n_steps is None else int(ss.n_steps),
        "exact": bool(ss.exact),
        "seed": int(seed),
        "n_batches": int(res.n_batches),
        "n_nonfinite": int(bad.sum()),
        "samples_per_s": float(n_samples / max(res.wall_time_s, 1e-12)),
    }
    io.save_npz(
        out_path,
        x=x,
        log_q=log_q,
        **{k: np.array(v) for k, v in info.items() if k != "samples_per_s"},
    )
    return info
