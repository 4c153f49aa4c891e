"""Alanine dipeptide's backbone dihedrals from positions (mdtraj's ``compute_phi``/``compute_psi``):
the system's observable, below the evaluation that histograms and reweights them."""

from __future__ import annotations

import mdtraj
import numpy as np
import torch

__all__ = ["mdtraj_topology", "phi_psi"]


def mdtraj_topology(system):
    """The ``mdtraj.Topology`` of a molecular system.

    Accepts whatever the systems module exposes: a ``mdtraj_topology()`` method, or a
    ``topology`` attribute holding an mdtraj or OpenMM topology.
    """
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
