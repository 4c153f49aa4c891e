"""Alanine dipeptide observables: backbone dihedrals, Ramachandran histograms and the free-energy
difference between the two metastable phi basins."""

from __future__ import annotations

import numpy as np
import torch

from eqbg.evaluation.weights import normalised_weights


def mdtraj_topology(system):
    """The ``mdtraj.Topology`` of a molecular system.

    Accepts whatever the systems module exposes: a ``mdtraj_topology()`` method, or a
    ``topology`` attribute holding an mdtraj or OpenMM topology.
    """
    import mdtraj

    if hasattr(system, "mdtraj_topology"):
        top = system.mdtraj_topology
        top = top() if callable(top) else top
    elif hasattr(system, "topology"):
        top = system.topology
        top = top() if callable(top) else top
    else:
        raise ValueError(f"system {getattr(system, 'name', system)!r} exposes no topology for mdtraj")
    if isinstance(top, mdtraj.Topology):
        return top
    return mdtraj.Topology.from_openmm(top)


def phi_psi(x: np.ndarray | torch.Tensor, topology) -> tuple[np.ndarray, np.ndarray]:
    """Backbone dihedrals of alanine dipeptide via ``mdtraj.compute_phi/psi``.

    Args:
        x: ``(B, 22, 3)`` positions in nm, in the topology's atom order.
        topology: ``mdtraj.Topology``.

    Returns:
        ``(phi, psi)``, each ``(B,)`` in radians in ``(-pi, pi]``.
    """
    import mdtraj

    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3 or x.shape[1] != topology.n_atoms or x.shape[2] != 3:
        raise ValueError(f"positions {x.shape} do not match a topology of {topology.n_atoms} atoms in 3D")
    traj = mdtraj.Trajectory(x, topology)
    _, phi = mdtraj.compute_phi(traj)
    _, psi = mdtraj.compute_psi(traj)
    if phi.shape[1] != 1 or psi.shape[1] != 1:
        raise ValueError(f"expected one phi and one psi angle, got {phi.shape[1]} and {psi.shape[1]}")
    return phi[:, 0].astype(np.float64), psi[:, 0].astype(np.float64)


def ramachandran_histogram(
    phi: np.ndarray, psi: np.ndarray, weights: np.ndarray | None = None, bins: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised 2-D histogram (probability per bin) of ``(phi, psi)`` on ``[-pi, pi]^2``.

    Returns:
        ``(hist (bins, bins) indexed [phi, psi], edges (bins+1,))``.
    """
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    hist, _, _ = np.histogram2d(phi, psi, bins=[edges, edges], weights=w)
    total = hist.sum()
    return (hist / total if total > 0 else hist), edges


def basin_free_energy_difference(
    phi: np.ndarray, log_w: np.ndarray | None = None
) -> tuple[float, float, float]:
    """Free-energy difference between the phi > 0 and phi < 0 basins, in kT.

    ``dF = F(phi>0) - F(phi<0) = -log(P(phi>0) / P(phi<0))``, with ``P`` the (self-normalised
    importance-weighted, if ``log_w`` is given) fraction of samples.  The standard error follows
    from the delta method: ``Var(P+) ~ sum_i wbar_i^2 (1[phi_i>0] - P+)^2`` (``1/n`` weights
    give the binomial ``P+(1-P+)/n``) and ``d dF / d P+ = -(1/P+ + 1/P-)``.  For correlated
    (MD) samples this error is a lower bound.

    Returns:
        ``(dF, se, p_positive)``; ``dF`` is +-inf when one basin is empty.
    """
    phi = np.asarray(phi, dtype=np.float64)
    if log_w is None:
        wbar = np.full(phi.size, 1.0 / phi.size)
    else:
        wbar = normalised_weights(log_w)
    pos = (phi > 0).astype(np.float64)
    p_pos = float(np.sum(wbar * pos))
    p_neg = 1.0 - p_pos
    if p_pos <= 0.0 or p_neg <= 0.0:
        return (float("inf") if p_pos <= 0 else float("-inf")), float("nan"), p_pos
    var = float(np.sum(wbar**2 * (pos - p_pos) ** 2))
    d_f = -np.log(p_pos / p_neg)
    se = np.sqrt(var) * (1.0 / p_pos + 1.0 / p_neg)
    return float(d_f), float(se), p_pos
