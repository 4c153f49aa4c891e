"""Alanine dipeptide (ACE-ALA-NME, 22 atoms) in implicit solvent, evaluated with OpenMM.

Force field as in the Equivariant Flow Matching / TBG line (PAPERS.md Protocol): amber99sbildn +
amber99_obc (OBC GBSA implicit solvent), ``NoCutoff``, no constraints, 300 K. Positions are in nm;
the energy is reduced, ``u = U / (R T)`` with ``R = openmm.unit.MOLAR_GAS_CONSTANT_R``.

Atom order (index: residue atom), the order of the shipped ``structures/aldp.pdb``::

     0 ACE HH31   1 ACE CH3   2 ACE HH32   3 ACE HH33   4 ACE C    5 ACE O
     6 ALA N      7 ALA H     8 ALA CA     9 ALA HA    10 ALA CB  11 ALA HB1
    12 ALA HB2   13 ALA HB3  14 ALA C    15 ALA O     16 NME N   17 NME H
    18 NME C     19 NME H1   20 NME H2   21 NME H3

(OpenMM renames ACE ``HH3x`` to ``Hx`` when it reads the PDB, so ``topology`` and
``mdtraj_topology()`` show ``H1 H2 H3`` for atoms 0, 2, 3.)

Atom types (:data:`ATOM_TYPES`): the three hydrogens of each methyl group (ACE 0/2/3, ALA CB
11/12/13, NME 19/20/21) share a type, since permuting them leaves the energy unchanged; every
other atom has its own type. 16 types, numbered in order of first appearance::

    [0, 1, 0, 0, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 10, 11, 12, 13, 14, 15, 15, 15]

Speed: a configuration costs ~60 µs with forces on OpenMM's Reference platform (its CPU
platform is ~10x slower for 22 atoms); energy-only evaluation, used when ``x`` does not require
grad, saves ~30 %. Batches of at least ``pool_threshold`` (128) configurations are spread over a
persistent pool of worker processes (one per usable core, at most 16), each holding its own
Context; smaller batches use one in-process Context, since a pool round trip costs ~1.5 ms.
Contexts are created once and reused. Pools are shared between instances, started lazily with
the ``fork`` start method (override: ``start_method=`` or ``EQBG_MP_START_METHOD``), and
terminated at interpreter exit or by :func:`shutdown_pools`.

OpenMM and mdtraj are imported inside the functions that use them: they are heavy imports,
and every other system's run imports the system registry without them.

Modules: :mod:`~eqbg.systems.aldp.topology` (atoms, types, force field, the shipped structure) <
:mod:`~eqbg.systems.aldp.geometry` (building the structure, dihedrals, chirality) and
:mod:`~eqbg.systems.aldp.openmm_pool` (energy evaluation) < :mod:`~eqbg.systems.aldp.system`.
"""

from __future__ import annotations

from eqbg.systems.aldp.geometry import (
    build_minimised_structure,
    chirality_volume,
    dihedral,
    improper_zeta,
    internal_coordinate_structure,
    map_d_to_l,
    write_structure,
)
from eqbg.systems.aldp.openmm_pool import POOLS, shutdown_pools
from eqbg.systems.aldp.system import AlanineDipeptide
from eqbg.systems.aldp.topology import (
    ATOM_NAMES,
    ATOM_TYPES,
    BONDS,
    CA,
    CB,
    HA,
    METHYL_HYDROGENS,
    PHI_ATOMS,
    PSI_ATOMS,
    STRUCTURE_PATH,
    C,
    N,
    build_topology,
    create_openmm_system,
    load_structure,
)

__all__ = [
    "ATOM_NAMES", "ATOM_TYPES", "BONDS", "CA", "CB", "HA", "METHYL_HYDROGENS", "PHI_ATOMS", "PSI_ATOMS",
    "STRUCTURE_PATH", "C", "N", "POOLS", "AlanineDipeptide", "build_minimised_structure", "build_topology",
    "chirality_volume", "create_openmm_system", "dihedral", "improper_zeta", "internal_coordinate_structure",
    "load_structure", "map_d_to_l", "shutdown_pools", "write_structure",
]
