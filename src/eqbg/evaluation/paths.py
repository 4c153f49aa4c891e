"""Integration paths of an ODE flow, one prior draw at a time: the per-sample numbers behind the
path-length and NFE claims of Equivariant Flow Matching (Klein et al. 2023).

A batched adaptive solve shares its step size across the batch, so its NFE is a property of
the batch, and the sampling stage may use a fixed-step solver. Here ``n`` prior draws (a fixed,
seeded subset) are integrated singly, positions only, with the flow's solver (the evaluation
ODE, an adaptive dopri5 by default): each gives its own NFE and path length ``int_0^1 |v| dt``,
so the claims have bootstrap intervals. Flows without an ODE (one-pass coupling flows) report
NaN path lengths and give nothing.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from eqbg.flows.base import Flow

__all__ = ["integration_subset"]


@torch.no_grad()
def integration_subset(flow: Flow, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-draw NFE and path length of ``n`` single-sample solves.

    Returns:
        ``{"nfe_subset": (n,), "path_length_subset": (n,)}``, or ``{}`` for a flow without an ODE.
    """
    _, device = flow.dtype_device()
    gen = torch.Generator(device=device).manual_seed(int(seed))
    nfe, path = [], []
    for _ in range(int(n)):
        res = flow.sample(1, generator=gen, with_log_q=False)
        if not math.isfinite(res.path_length):
            return {}
        nfe.append(res.nfe)
        path.append(res.path_length)
    return {"nfe_subset": np.asarray(nfe, dtype=float), "path_length_subset": np.asarray(path, dtype=float)}
