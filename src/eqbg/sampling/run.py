"""Sampling runs: draw samples with their log densities from a trained flow into ``samples.npz``.

The file holds ``x`` ``(N, n, d)``, ``log_q`` ``(N,)`` (nats, CoM-free Gaussian normaliser
included), ``density`` (``exact``, ``estimate`` or ``stochastic``, see
:data:`eqbg.flows.DensityKind`) with ``density_k`` (samples in an estimated marginal, 0
otherwise), the cost fields ``nfe`` (summed over batches), ``path_length`` (mean),
``wall_time_s``, ``n_batches``, and what made it: ``n``, ``method``, ``atol``, ``rtol``,
``n_steps`` (-1: adaptive), ``log_q_quadrature``, ``compile_field``, ``exact``, ``seed``,
``n_nonfinite``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eqbg import io
from eqbg.rundir import RunDir, load_flow
from eqbg.sampling.settings import SamplingSettings
from eqbg.settings import SettingsError, resolve, resolve_device

__all__ = ["sample_run"]


def sample_run(
    run_dir: str | Path | RunDir,
    n_samples: int,
    settings: Mapping[str, Any] | None,
    out_path: str | Path,
    seed: int,
) -> dict[str, Any]:
    """Draw ``n_samples`` from the run's model and write them to ``out_path`` (atomically).

    Args:
        run_dir: training run folder (``model.pt``, ``config.json``), or a :class:`RunDir` of the
            files the sample rule declared.
        n_samples: number of samples.
        settings: :class:`SamplingSettings` keys.
        out_path: the ``samples.npz`` to write.
        seed: seeds the sampling generator (same seed, same samples).

    Returns:
        The scalars written, plus ``samples_per_s``.
    """
    ss: SamplingSettings = resolve(SamplingSettings, settings, "sampling")
    if n_samples < 1:
        raise SettingsError(f"n_samples must be >= 1, got {n_samples}")
    if ss.num_threads:
        torch.set_num_threads(int(ss.num_threads))
    flow, _ = load_flow(run_dir, device=ss.device, dtype=ss.dtype)
    gen = torch.Generator(device=resolve_device(ss.device)).manual_seed(seed)
    # solver, exact and compile_field are a CNF's options; one-pass flows ignore them
    res = flow.sample(
        n_samples, generator=gen, batch_size=ss.batch_size, solver=ss.solver, exact=ss.exact,
        compile_field=ss.compile_field,
    )
    x = res.x.detach().cpu().numpy()
    log_q = res.log_q.detach().cpu().double().numpy()
    bad = ~np.isfinite(log_q) | ~np.isfinite(x.reshape(len(x), -1)).all(1)
    info = {
        "n": int(n_samples),
        **res.cost(),
        "density": res.density,
        "density_k": int(res.density_k or 0),
        "method": ss.method,
        "atol": float(ss.atol),
        "rtol": float(ss.rtol),
        "n_steps": -1 if ss.n_steps is None else int(ss.n_steps),
        "log_q_quadrature": ss.log_q_quadrature,
        "compile_field": bool(ss.compile_field),
        "exact": bool(ss.exact),
        "seed": int(seed),
        "n_nonfinite": int(bad.sum()),
    }
    io.save_npz(out_path, x=x, log_q=log_q, **{k: np.array(v) for k, v in info.items()})
    info["samples_per_s"] = float(n_samples / max(res.wall_time_s, 1e-12))
    return info
