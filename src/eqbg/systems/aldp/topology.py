"""Alanine dipeptide's atoms, bonds, atom types and dihedral atoms; its OpenMM topology and force
field (amber99sbildn + amber99_obc), and the shipped structure."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np


if TYPE_CHECKING:
    import openmm
    import openmm.app


STRUCTURE_PATH = Path(__file__).parents[1] / "structures" / "aldp.pdb"

#: (residue name, atom name) in file order.
ATOM_NAMES: tuple[tuple[str, str], ...] = (
    ("ACE", "HH31"), ("ACE", "CH3"), ("ACE", "HH32"), ("ACE", "HH33"), ("ACE", "C"), ("ACE", "O"),
    ("ALA", "N"), ("ALA", "H"), ("ALA", "CA"), ("ALA", "HA"), ("ALA", "CB"), ("ALA", "HB1"),
    ("ALA", "HB2"), ("ALA", "HB3"), ("ALA", "C"), ("ALA", "O"),
    ("NME", "N"), ("NME", "H"), ("NME", "C"), ("NME", "H1"), ("NME", "H2"), ("NME", "H3"),
)  # fmt: skip

#: Covalent bonds (atom indices).
BONDS: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (1, 3), (1, 4), (4, 5), (4, 6), (6, 7), (6, 8), (8, 9), (8, 10), (10, 11),
    (10, 12), (10, 13), (8, 14), (14, 15), (14, 16), (16, 17), (16, 18), (18, 19), (18, 20),
    (18, 21),
)  # fmt: skip

#: Hydrogens of the three methyl groups (ACE, ALA side chain, NME): the permutable atoms.
METHYL_HYDROGENS: tuple[tuple[int, int, int], ...] = ((0, 2, 3), (11, 12, 13), (19, 20, 21))

#: Backbone atom indices used for dihedrals and the chirality check.
PHI_ATOMS = (4, 6, 8, 14)  # C(ACE) N CA C
PSI_ATOMS = (6, 8, 14, 16)  # N CA C N(NME)
CA, N, C, CB, HA = 8, 6, 14, 10, 9


def _atom_types() -> tuple[int, ...]:
    group_of = {i: g for g, members in enumerate(METHYL_HYDROGENS) for i in members}
    types: list[int] = []
    seen: dict[Any, int] = {}
    for i in range(len(ATOM_NAMES)):
        key = ("methyl", group_of[i]) if i in group_of else ("atom", i)
        types.append(seen.setdefault(key, len(seen)))
    return tuple(types)


#: Atom type of each atom (see module docstring); ``(22,)``.
ATOM_TYPES: tuple[int, ...] = _atom_types()


# --------------------------------------------------------------------------------------------
# OpenMM objects
# --------------------------------------------------------------------------------------------


def build_topology() -> openmm.app.Topology:
    """OpenMM topology of ACE-ALA-NME built from :data:`ATOM_NAMES` and :data:`BONDS`."""
    from openmm import app

    top = app.Topology()
    chain = top.addChain(id="A")
    atoms = []
    residue = None
    for res_name, atom_name in ATOM_NAMES:
        if residue is None or residue.name != res_name:
            residue = top.addResidue(res_name, chain)
        atoms.append(top.addAtom(atom_name, app.element.get_by_symbol(atom_name[0]), residue))
    for a, b in BONDS:
        top.addBond(atoms[a], atoms[b])
    return top


def create_openmm_system(topology: openmm.app.Topology) -> openmm.System:
    """amber99sbildn + amber99_obc, NoCutoff, no constraints (rigid water irrelevant here)."""
    from openmm import app

    forcefield = app.ForceField("amber99sbildn.xml", "amber99_obc.xml")
    return forcefield.createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )


def load_structure(
    path: str | os.PathLike[str] = STRUCTURE_PATH,
) -> tuple[openmm.app.Topology, np.ndarray]:
    """Read the shipped PDB: OpenMM topology and positions ``(22, 3)`` float64 in nm.

    The atom order is checked against :data:`ATOM_NAMES` (OpenMM renames ACE ``HH3x`` to
    ``Hx`` on reading, so only residue names and heavy-atom names are compared).
    """
    from openmm import app, unit

    pdb = app.PDBFile(str(path))
    top = pdb.topology
    atoms = list(top.atoms())
    if len(atoms) != len(ATOM_NAMES):
        raise ValueError(f"{path}: expected {len(ATOM_NAMES)} atoms, found {len(atoms)}")
    for i, (atom, (res_name, name)) in enumerate(zip(atoms, ATOM_NAMES)):
        if atom.residue.name != res_name or atom.element.symbol != name[0]:
            raise ValueError(
                f"{path}: atom {i} is {atom.residue.name} {atom.name}, expected {res_name} {name}"
            )
    bonds = {tuple(sorted((b[0].index, b[1].index))) for b in top.bonds()}
    if bonds != set(BONDS):
        raise ValueError(f"{path}: bonds differ from the ACE-ALA-NME bond list")
    pos = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=np.float64)
    return top, pos
