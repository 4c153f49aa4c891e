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
"""

from __future__ import annotations

import atexit
import hashlib
import math
import multiprocessing as mp
import os
import threading
from functools import cached_property
from multiprocessing.pool import Pool
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from eqbg.io import atomic_path
from eqbg.systems.base import System
from eqbg.systems.dihedrals import phi_psi

if TYPE_CHECKING:
    import mdtraj
    import openmm
    import openmm.app

STRUCTURE_PATH = Path(__file__).parent / "structures" / "aldp.pdb"

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


# --------------------------------------------------------------------------------------------
# Energy evaluation (in-process and in a persistent pool)
# --------------------------------------------------------------------------------------------


class _Evaluator:
    """One OpenMM Context; evaluates energies (kJ/mol) and forces (kJ/mol/nm) of a batch."""

    def __init__(self, system_xml: str, platform: str) -> None:
        import openmm

        system = openmm.XmlSerializer.deserialize(system_xml)
        # the integrator is never stepped; a Context just needs one
        self.context = openmm.Context(
            system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform)
        )
        self.n_atoms = system.getNumParticles()

    def __call__(
        self, x: np.ndarray, with_forces: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``x: (m, n, 3)`` nm -> energies ``(m,)`` kJ/mol, forces ``(m, n, 3)`` kJ/mol/nm.

        Forces are ``None`` when ``with_forces`` is false (energies alone are ~30 % cheaper).
        Never raises on bad coordinates: non-finite input or energy gives energy ``+inf`` and
        zero force; a finite energy with non-finite forces (e.g. two bonded atoms on top of
        each other) keeps its energy and gets zero force. A sampler or a loss thus sees an
        impossible configuration instead of a crash.
        """
        from openmm import unit

        m = x.shape[0]
        energies = np.full(m, np.inf)
        forces = np.zeros((m, self.n_atoms, 3)) if with_forces else None
        finite_in = np.isfinite(x).all(axis=(1, 2))
        kj = unit.kilojoule_per_mole
        kj_nm = kj / unit.nanometer
        for k in range(m):
            if not finite_in[k]:
                continue
            try:
                self.context.setPositions(x[k])
                state = self.context.getState(getEnergy=True, getForces=with_forces)
                e = state.getPotentialEnergy().value_in_unit(kj)
                f = (
                    np.asarray(state.getForces(asNumpy=True).value_in_unit(kj_nm))
                    if with_forces
                    else None
                )
            except Exception:  # OpenMM raises on e.g. NaN pair distances; treat as impossible
                continue
            if math.isfinite(e):
                energies[k] = e
                if forces is not None and np.isfinite(f).all():
                    forces[k] = f
        return energies, forces


# Worker-process state: one evaluator per process, created by the pool initializer.
_WORKER: _Evaluator | None = None


def _init_worker(system_xml: str, platform: str) -> None:
    global _WORKER
    # OpenMM's Reference platform is single threaded; keep stray BLAS/torch threads from
    # oversubscribing the cores the pool is meant to spread over.
    os.environ["OMP_NUM_THREADS"] = "1"
    _WORKER = _Evaluator(system_xml, platform)


def _worker_eval(task: tuple[np.ndarray, bool]) -> tuple[np.ndarray, np.ndarray | None]:
    assert _WORKER is not None, "pool worker was not initialised"
    return _WORKER(*task)


class _PoolRegistry:
    """Persistent worker pools shared by all :class:`AlanineDipeptide` instances.

    Pools are keyed by (system XML hash, platform, workers, start method), so two instances with
    the same force field share workers. All pools are terminated at interpreter exit.
    """

    def __init__(self) -> None:
        self._pools: dict[tuple[str, str, int, str], Pool] = {}
        self._lock = threading.Lock()
        atexit.register(self.shutdown)

    def get(self, system_xml: str, platform: str, n_workers: int, start_method: str) -> Pool:
        key = (hashlib.sha1(system_xml.encode()).hexdigest(), platform, n_workers, start_method)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                ctx = mp.get_context(start_method)
                pool = ctx.Pool(
                    n_workers, initializer=_init_worker, initargs=(system_xml, platform)
                )
                self._pools[key] = pool
            return pool

    def shutdown(self) -> None:
        """Terminate every pool (safe to call more than once)."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.terminate()
            pool.join()

    def __len__(self) -> int:
        return len(self._pools)


POOLS = _PoolRegistry()


def shutdown_pools() -> None:
    """Terminate all alanine-dipeptide worker pools (they are restarted on demand)."""
    POOLS.shutdown()


def _usable_cores() -> int:
    # the affinity mask honours cgroup/SLURM CPU sets; cpu_count does not
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _default_start_method() -> str:
    # fork: no re-import of __main__ in the workers (spawn/forkserver would re-run an unguarded
    # Snakemake script) and a start-up of milliseconds. Workers only run numpy and OpenMM's
    # single-threaded Reference platform, never torch, so the usual fork-after-threads hazards
    # (OpenMP/CUDA state) do not apply. Override with EQBG_MP_START_METHOD.
    env = os.environ.get("EQBG_MP_START_METHOD")
    if env:
        return env
    return "fork" if "fork" in mp.get_all_start_methods() else "spawn"


class _OpenMMEnergy(torch.autograd.Function):
    """Reduced energy with the gradient ``-F / kT`` supplied by OpenMM (first order only)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, owner: AlanineDipeptide) -> Tensor:  # type: ignore[override]
        xs = x.detach().to("cpu", torch.float64).numpy()
        # forces only when a gradient can be asked for: energy-only evaluation is cheaper
        with_forces = bool(ctx.needs_input_grad[0])
        energy_kj, forces = owner.energy_and_forces_kj(xs, with_forces=with_forces)
        kt = owner.kt_kj_per_mol
        u = torch.from_numpy(energy_kj / kt).to(device=x.device, dtype=x.dtype)
        if forces is not None:
            ctx.save_for_backward(torch.from_numpy(-forces / kt).to(device=x.device, dtype=x.dtype))
        return u

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad_out[:, None, None] * grad, None


class AlanineDipeptide(System):
    """Alanine dipeptide (ACE-ALA-NME) in OBC implicit solvent; positions in nm.

    Args:
        temperature: kelvin (300 K, as in the EFM/TBG data).
        n_workers: processes in the worker pool (default: usable cores, at most 16). With 1 the
            pool is never used.
        pool_threshold: batches of at least this many configurations go to the pool.
        platform: OpenMM platform of every Context (``"Reference"``: fastest for 22 atoms).
        start_method: multiprocessing start method of the pool (default ``fork`` on Linux, or
            the ``EQBG_MP_START_METHOD`` environment variable).
        structure: PDB to read (default: the shipped, energy-minimised L-alanine dipeptide).

    Capabilities: reference data by molecular dynamics (``reference_sampler = "md"``, see
    ``eqbg.data.md``); observables ``"dihedrals"`` (:meth:`dihedrals`) and ``"chirality"``
    (:meth:`chirality`); no second derivatives (OpenMM supplies energies and forces, no
    Hessian, so the autograd backward is once-differentiable).
    """

    reference_sampler = "md"
    observables = ("dihedrals", "chirality")
    second_derivatives = False

    def __init__(
        self,
        temperature: float = 300.0,
        *,
        n_workers: int | None = None,
        pool_threshold: int = 128,
        platform: str = "Reference",
        start_method: str | None = None,
        structure: str | os.PathLike[str] = STRUCTURE_PATH,
    ) -> None:
        super().__init__(
            name="aldp",
            n_particles=len(ATOM_NAMES),
            spatial_dim=3,
            atom_types=torch.tensor(ATOM_TYPES, dtype=torch.long),
            temperature=temperature,
            com_free=True,
            length_unit="nm",
            reference={
                "integrator": "langevin",
                "friction_per_ps": 1.0,
                "timestep_fs": 1.0,
                "temperature_K": float(temperature),
                "platform": platform,
            },
        )
        if not temperature > 0:
            raise ValueError(f"temperature must be positive (kelvin), got {temperature}")
        from openmm import XmlSerializer, unit

        self.topology, positions = load_structure(structure)
        self.system = create_openmm_system(self.topology)
        self._system_xml = XmlSerializer.serialize(self.system)
        #: positions of the shipped structure ``(22, 3)``, float64, nm
        self.positions = torch.from_numpy(positions)
        r = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
        #: kT in kJ/mol
        self.kt_kj_per_mol = float(r * self.temperature)
        self.platform = platform
        self.n_workers = int(n_workers) if n_workers is not None else min(_usable_cores(), 16)
        if self.n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {self.n_workers}")
        self.pool_threshold = int(pool_threshold)
        self.start_method = start_method or _default_start_method()
        self._local: _Evaluator | None = None
        self._local_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Contexts and locks cannot be pickled; a copy builds its own Context on first use
        state = self.__dict__.copy()
        state["_local"] = None
        del state["_local_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local_lock = threading.Lock()

    # -- helpers for the data stage ----------------------------------------------------------

    def mdtraj_topology(self) -> mdtraj.Topology:
        """The topology as an ``mdtraj.Topology`` (for dihedrals, trajectories)."""
        import mdtraj

        return mdtraj.Topology.from_openmm(self.topology)

    @cached_property
    def _mdtraj_topology(self) -> mdtraj.Topology:
        return self.mdtraj_topology()

    # -- observables ------------------------------------------------------------------------

    def dihedrals(self, x: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Backbone dihedrals ``(phi, psi)`` of ``x: (B, 22, 3)`` nm, each ``(B,)`` float64 in
        radians in ``(-pi, pi]`` (mdtraj's ``compute_phi``/``compute_psi``; phi = C(ACE)-N-CA-C,
        psi = N-CA-C-N(NME), atoms :data:`PHI_ATOMS`, :data:`PSI_ATOMS`)."""
        return phi_psi(x, self._mdtraj_topology)

    def map_to_l(self, x: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """D configurations mirrored into L (:func:`map_d_to_l`): ``(mapped, was_d)``."""
        return map_d_to_l(x)

    def chirality(self, x: Tensor | np.ndarray) -> np.ndarray:
        """Chirality volume at the alpha carbon ``(B,)`` nm^3 of ``x: (B, 22, 3)`` nm: positive
        for L-alanine, negative for its mirror image D-alanine (:func:`chirality_volume`)."""
        return chirality_volume(x)

    @cached_property
    def atom_names(self) -> tuple[str, ...]:
        """``"RES-NAME"`` labels of the 22 atoms, in order."""
        return tuple(f"{r}-{a}" for r, a in ATOM_NAMES)

    # -- energies ---------------------------------------------------------------------------

    def energy_and_forces_kj(
        self, x: np.ndarray, with_forces: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Energies ``(B,)`` in kJ/mol and forces ``(B, 22, 3)`` in kJ/mol/nm of ``x: (B, 22, 3)`` nm.

        Forces are ``None`` if ``with_forces`` is false. Batches of at least ``pool_threshold``
        configurations are split over the worker pool; smaller ones use a single in-process
        Context (no inter-process overhead). Bad configurations: see :class:`_Evaluator`.
        """
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 3 or x.shape[1:] != (self.n_particles, 3):
            raise ValueError(f"aldp: positions must have shape (batch, 22, 3), got {x.shape}")
        b = x.shape[0]
        if b == 0:
            return np.zeros(0), (np.zeros((0, self.n_particles, 3)) if with_forces else None)
        # daemonic processes (e.g. workers of someone else's Pool) may not have children
        use_pool = self.n_workers > 1 and not mp.current_process().daemon
        if use_pool and b >= self.pool_threshold:
            pool = POOLS.get(self._system_xml, self.platform, self.n_workers, self.start_method)
            chunks = np.array_split(x, min(self.n_workers, b))
            results = pool.map(_worker_eval, [(c, with_forces) for c in chunks])
            energies = np.concatenate([r[0] for r in results])
            forces = np.concatenate([r[1] for r in results]) if with_forces else None
            return energies, forces
        with self._local_lock:
            if self._local is None:
                self._local = _Evaluator(self._system_xml, self.platform)
            return self._local(x, with_forces)

    def energy(self, x: Tensor) -> Tensor:
        """Reduced energy ``U/(RT)`` ``(batch,)`` of ``x: (batch, 22, 3)`` in nm.

        Differentiable: the backward pass returns ``-F/kT`` from OpenMM (no double backward);
        forces are only computed when ``x`` requires grad. Impossible configurations
        (non-finite input, NaN from OpenMM) give ``+inf`` with zero gradient. Computed in
        float64 on the CPU; the result has the dtype and device of ``x``.
        """
        x = self.check_positions(x)
        return _OpenMMEnergy.apply(x, self)

    def close(self) -> None:
        """Release the in-process Context and shut down all worker pools."""
        self._local = None
        shutdown_pools()


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


if __name__ == "__main__":
    import sys

    write_structure(sys.argv[1] if len(sys.argv) > 1 else STRUCTURE_PATH)
