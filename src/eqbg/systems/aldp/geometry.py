"""Geometry of alanine dipeptide: its structure built from internal coordinates and minimised,
dihedrals, the chirality volume at the alpha carbon and the mirror map from D to L."""

from __future__ import annotations

import math
import os

import numpy as np
from torch import Tensor

from eqbg.io import atomic_path
from eqbg.systems.aldp.topology import (
    ATOM_NAMES,
    CA,
    CB,
    METHYL_HYDROGENS,
    C,
    N,
    build_topology,
    create_openmm_system,
)


# --------------------------------------------------------------------------------------------
# Building the shipped structure (run once by a developer: python -m eqbg.systems.aldp OUT.pdb)
# --------------------------------------------------------------------------------------------


def _place(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle: float, torsion: float
) -> np.ndarray:
    """Natural-extension reference frame: the atom ``d`` with ``|cd| = bond``, angle ``b-c-d``
    and dihedral ``a-b-c-d`` (degrees, IUPAC sign convention, as mdtraj computes it)."""
    ang, tor = math.radians(angle), math.radians(torsion)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    return c + bond * (
        -math.cos(ang) * bc + math.sin(ang) * math.cos(tor) * m + math.sin(ang) * math.sin(tor) * n
    )


def internal_coordinate_structure(phi: float = -80.0, psi: float = 150.0) -> np.ndarray:
    """L-alanine dipeptide ``(22, 3)`` in nm from standard bond lengths, angles and dihedrals.

    Chirality: with ``phi = dihedral(C_ACE, N, CA, C)``, the side chain CB sits at dihedral
    ``C_ACE-N-CA-CB = phi - 120°`` and HA at ``phi + 120°``. That is L-alanine: it gives the
    Karplus relation ``H-N-CA-HA = phi - 60°`` of L residues and a positive chirality volume
    ``(N - CA) · ((C - CA) × (CB - CA))`` (S configuration; see :func:`chirality_volume`).
    """
    p: dict[int, np.ndarray] = {}
    p[1] = np.zeros(3)  # ACE CH3
    p[4] = np.array([1.52, 0.0, 0.0])  # ACE C
    t = math.radians(180.0 - 116.2)
    p[6] = p[4] + 1.335 * np.array([math.cos(t), math.sin(t), 0.0])  # ALA N, angle CH3-C-N 116.2
    p[8] = _place(p[1], p[4], p[6], 1.458, 121.7, 180.0)  # CA: trans peptide (omega = 180)
    p[14] = _place(p[4], p[6], p[8], 1.525, 111.2, phi)  # C: phi
    p[16] = _place(p[6], p[8], p[14], 1.335, 116.2, psi)  # NME N: psi
    p[18] = _place(p[8], p[14], p[16], 1.449, 121.7, 180.0)  # NME C: trans peptide
    p[5] = _place(p[8], p[6], p[4], 1.229, 122.7, 0.0)  # O cis to the next CA
    p[7] = _place(p[1], p[4], p[6], 1.010, 119.0, 0.0)  # H trans to O
    p[15] = _place(p[18], p[16], p[14], 1.229, 122.7, 0.0)
    p[17] = _place(p[8], p[14], p[16], 1.010, 119.0, 0.0)
    p[10] = _place(p[4], p[6], p[8], 1.530, 110.5, phi - 120.0)  # CB (L-alanine)
    p[9] = _place(p[4], p[6], p[8], 1.090, 109.5, phi + 120.0)  # HA
    staggered = (180.0, 60.0, -60.0)
    for (h1, h2, h3), (a, b, c) in zip(METHYL_HYDROGENS, ((6, 4, 1), (6, 8, 10), (14, 16, 18))):
        for h, tor in zip((h1, h2, h3), staggered):
            p[h] = _place(p[a], p[b], p[c], 1.09, 109.5, tor)
    return np.stack([p[i] for i in range(len(ATOM_NAMES))]) / 10.0  # Å -> nm


def chirality_volume(x: np.ndarray | Tensor) -> np.ndarray:
    """Signed volume ``(N - CA) · ((C - CA) × (CB - CA))`` at the alpha carbon, ``(...,)`` nm^3.

    Positive for L-alanine. Why: CIP priorities at CA are N > C(=O) > CB > HA, and L-Ala is (S):
    looking with HA pointing away, N -> C -> CB runs counter-clockwise, which makes this triple
    product positive (equivalently the "CORN" rule: looking from HA to CA, CO -> R -> N reads
    clockwise).
    """
    x = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
    ca = x[..., CA, :]
    return np.einsum(
        "...i,...i->...", x[..., N, :] - ca, np.cross(x[..., C, :] - ca, x[..., CB, :] - ca)
    )


def map_d_to_l(x: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mirror every D-alanine configuration (negative :func:`chirality_volume`) into L.

    The mirror is ``(x, y, z) -> (x, y, -z)`` about the origin, so CoM-free configurations stay
    CoM-free. Why mapping before reweighting is exact: a force field's energy is invariant under
    reflections, ``u(Rx) = u(x)``, so the Boltzmann density of the *symmetrised* target (L and D
    with equal weight, which is what an E(3)-equivariant flow models) satisfies
    ``p_sym(Rx) = p_sym(x)``. Weights ``w = exp(-u(x)) / q(x)`` are computed at the drawn ``x`` and
    left as they are; if ``(x, w)`` is an importance sample of ``p_sym``, then ``(m(x), w)`` with
    the map ``m`` (identity on L, ``R`` on D) is one of the push-forward of ``p_sym`` under ``m``,
    which is ``p_sym`` restricted to L and renormalised: exactly the L-alanine Boltzmann
    distribution. (For a flow that is also reflection invariant, ``q(Rx) = q(x)`` as well, so even
    the density at the mapped point equals the one in ``w``.)

    Args:
        x: ``(B, 22, 3)`` configurations (nm).

    Returns:
        ``(mapped (B, 22, 3), was_d (B,) bool)``.
    """
    x = np.array(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
    was_d = chirality_volume(x) < 0
    x[was_d, :, 2] *= -1.0
    return x, was_d


def dihedral(x: np.ndarray, i: int, j: int, k: int, l: int) -> np.ndarray:
    """IUPAC dihedral ``i-j-k-l`` in degrees of ``x: (..., n, 3)`` (same convention as mdtraj)."""
    b0 = x[..., i, :] - x[..., j, :]
    b1 = x[..., k, :] - x[..., j, :]
    b2 = x[..., l, :] - x[..., k, :]
    b1 = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - (b0 * b1).sum(-1, keepdims=True) * b1
    w = b2 - (b2 * b1).sum(-1, keepdims=True) * b1
    return np.degrees(np.arctan2((np.cross(b1, v) * w).sum(-1), (v * w).sum(-1)))


def improper_zeta(x: np.ndarray) -> np.ndarray:
    """Virtual torsion ``zeta = dihedral(CA, N, C, CB)`` in degrees (PROCHECK's Cα chirality).

    About +34° for L residues and -34° for D residues.
    """
    return dihedral(np.asarray(x, dtype=np.float64), CA, N, C, CB)


def build_minimised_structure(phi: float = -80.0, psi: float = 150.0) -> np.ndarray:
    """Internal-coordinate structure, energy-minimised with OpenMM; ``(22, 3)`` nm."""
    import openmm

    topology = build_topology()
    system = create_openmm_system(topology)
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(internal_coordinate_structure(phi, psi))
    openmm.LocalEnergyMinimizer.minimize(context, 1e-3, 0)
    pos = context.getState(getPositions=True).getPositions(asNumpy=True)
    return np.asarray(pos.value_in_unit(openmm.unit.nanometer))


def write_structure(path: str | os.PathLike[str], phi: float = -80.0, psi: float = 150.0) -> None:
    """Build, minimise, check L-chirality and write the PDB atomically."""
    from openmm import app, unit

    pos = build_minimised_structure(phi, psi)
    if not chirality_volume(pos) > 0:  # never ship D-alanine (same energy, wrong molecule)
        raise RuntimeError("built structure is not L-alanine")
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        app.PDBFile.writeFile(build_topology(), pos * unit.nanometer, fh, keepIds=True)
