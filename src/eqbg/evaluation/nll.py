"""Test-set negative log-likelihood and the papers' NLL conventions.

The project's convention (``"eqbg"``): ``log q`` includes the normaliser of the CoM-free
standard Gaussian prior over the ``(n-1)*d`` subspace dimensions, exactly as E-NF
(vgsatorras/en_flows ``flows/utils.py``), EACF and the ECNF baseline do.  bgflow-based code (the
Equivariant Flow Matching paper) evaluates the prior through ``MeanFreeNormalDistribution``'s
energy ``|x|^2/2`` without that normaliser, so its NLLs are lower by
``c = (n-1) d / 2 * log(2 pi)`` (PAPERS.md, Protocol: 5.514 DW4, 33.082 LJ13, 148.868 LJ55,
57.893 ALA2 in nm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from eqbg.systems import SYSTEM_SPECS


@dataclass(frozen=True)
class NLLConvention:
    """How a paper normalises the log density it reports.

    Attributes:
        name: key in :data:`NLL_CONVENTIONS`.
        papers: who uses it.
        includes_prior_normaliser: whether ``-(dim/2) log(2 pi)`` is part of ``log q``.
        description: one line for table footnotes.
    """

    name: str
    papers: str
    includes_prior_normaliser: bool
    description: str


#: Every NLL convention a table may meet.  ``"eqbg"`` is ours; the others are aliases kept so a
#: published value can be labelled with the paper it came from.
NLL_CONVENTIONS: dict[str, NLLConvention] = {
    "eqbg": NLLConvention(
        "eqbg",
        "this project",
        True,
        "-mean log q(x_test), CoM-free Gaussian prior normalised over (n-1)d dims, exact divergence",
    ),
    "enf": NLLConvention(
        "enf",
        "Satorras et al. 2021 (E-NF), Koehler et al. 2020",
        True,
        "same as eqbg: prior normaliser over (n-1)d dims included",
    ),
    "eacf": NLLConvention(
        "eacf",
        "Midgley et al. 2023 (EACF), ECNF baseline",
        True,
        "same as eqbg; augmented flows use a K=20 importance-weighted marginal",
    ),
    "efm": NLLConvention(
        "efm",
        "Klein, Kraemer, Noe 2023 (EFM), bgflow",
        False,
        "prior normaliser omitted: NLL_efm = NLL_eqbg - (n-1)d/2 log(2 pi)",
    ),
}


def prior_log_normaliser(dim: int) -> float:
    """``(dim / 2) * log(2 pi)``: minus the log normaliser of a standard Gaussian in ``dim``
    dimensions; ``dim = (n-1)*d`` for CoM-free systems.

    >>> round(prior_log_normaliser(6), 3)   # DW4
    5.514
    """
    if dim <= 0:
        raise ValueError(f"dimension must be positive, got {dim}")
    return 0.5 * dim * math.log(2.0 * math.pi)


def convert_nll(nll: float, dim: int, *, source: str = "eqbg", target: str = "efm") -> float:
    """Convert an NLL (nats per configuration) between conventions of :data:`NLL_CONVENTIONS`.

    Args:
        nll: value in the ``source`` convention.
        dim: subspace dimension the prior lives on (``(n-1)*d`` for CoM-free systems).
        source, target: convention names.

    Returns:
        The NLL in the ``target`` convention: conventions that omit the prior normaliser report
        ``nll - (dim/2) log(2 pi)`` relative to those that include it.
    """
    for name in (source, target):
        if name not in NLL_CONVENTIONS:
            raise ValueError(f"unknown NLL convention {name!r}; known: {sorted(NLL_CONVENTIONS)}")
    c = prior_log_normaliser(dim)
    shift = 0.0
    if NLL_CONVENTIONS[source].includes_prior_normaliser:
        shift -= c
    if NLL_CONVENTIONS[target].includes_prior_normaliser:
        shift += c
    return float(nll + shift)


def conventions_table(dims: dict[str, int] | None = None) -> list[dict[str, object]]:
    """Rows (one per convention) describing each convention and, per system in ``dims``
    (default: every registered CoM-free system, dimension from the system registry), the
    offset to add to an eqbg NLL to obtain that convention's NLL."""
    if not dims:
        dims = {name: spec.dim for name, spec in SYSTEM_SPECS.items() if spec.com_free}
    rows = []
    for conv in NLL_CONVENTIONS.values():
        row: dict[str, object] = {
            "convention": conv.name,
            "papers": conv.papers,
            "includes_prior_normaliser": conv.includes_prior_normaliser,
            "description": conv.description,
        }
        for system, dim in dims.items():
            row[f"offset_{system}"] = round(convert_nll(0.0, dim, source="eqbg", target=conv.name), 3)
        rows.append(row)
    return rows


def subset_indices(n_total: int, n_subset: int | None, seed: int = 0) -> np.ndarray:
    """Sorted random subset of ``range(n_total)`` of size ``min(n_subset, n_total)``
    (all indices when ``n_subset`` is None).  Random rather than the first rows because test
    splits may be ordered along MCMC chains."""
    if n_subset is None or n_subset >= n_total:
        return np.arange(n_total)
    if n_subset <= 0:
        raise ValueError(f"nll_n must be positive, got {n_subset}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=n_subset, replace=False))


def model_log_prob(
    flow,
    x: torch.Tensor,
    *,
    batch_size: int | None = None,
    seed: int | None = None,
    **options,
) -> np.ndarray:
    """Model log density of (test) configurations, exact divergence for ODE flows.

    Autograd stays enabled: the exact divergence differentiates the vector field.

    Args:
        flow: an ``eqbg.flows.Flow`` (anything with ``log_prob(x, batch_size=...)``; a CNF
            integrates the exact divergence by default).
        x: ``(B, n, d)`` configurations, CoM-free.
        batch_size: forwarded to ``flow.log_prob`` to bound memory.
        seed: seeds the generator of flows whose density draws random numbers (the augmented
            variables of an importance-sampled marginal), so the result is reproducible.
        **options: further keywords of the flow's ``log_prob`` (e.g. ``marginal_k``).

    Returns:
        ``(B,)`` float64 ``log q(x)`` in the eqbg convention.
    """
    generator = None
    if seed is not None:
        generator = torch.Generator(device=x.device).manual_seed(int(seed))
    log_q = flow.log_prob(x, batch_size=batch_size, generator=generator, **options)
    return log_q.detach().cpu().double().numpy()


def nll_from_log_prob(log_q: np.ndarray) -> tuple[float, float]:
    """``NLL = -mean log q`` and its standard error ``std(ddof=1)/sqrt(n)`` (nats per
    configuration).  Non-finite ``log q`` makes the NLL infinite rather than being dropped."""
    log_q = np.asarray(log_q, dtype=np.float64)
    if log_q.ndim != 1 or log_q.size == 0:
        raise ValueError(f"log_q must be a non-empty 1-D array, got shape {log_q.shape}")
    if not np.isfinite(log_q).all():
        return float("inf"), float("nan")
    nll = float(-log_q.mean())
    sem = float(log_q.std(ddof=1) / np.sqrt(log_q.size)) if log_q.size > 1 else float("nan")
    return nll, sem
