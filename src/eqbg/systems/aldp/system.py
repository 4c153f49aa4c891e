"""The alanine dipeptide system: energies in kT from OpenMM (differentiable through the forces),
its dihedral and chirality observables."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from eqbg.systems.aldp.geometry import chirality_volume, map_d_to_l
from eqbg.systems.aldp.openmm_pool import (
    POOLS,
    _default_start_method,
    _Evaluator,
    _usable_cores,
    _worker_eval,
    shutdown_pools,
)
from eqbg.systems.aldp.topology import (
    ATOM_NAMES,
    ATOM_TYPES,
    STRUCTURE_PATH,
    create_openmm_system,
    load_structure,
)
from eqbg.systems.base import System
from eqbg.systems.dihedrals import phi_psi

if TYPE_CHECKING:
    import mdtraj


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
    ``eqbg.data.md``); observables ``"dihedrals"`` (:meth:`dihedrals`, :class:`~eqbg.systems.base.HasDihedrals`)
    and ``"chirality"`` (:meth:`chirality`, :class:`~eqbg.systems.base.HasChirality`); no second derivatives (OpenMM supplies energies and forces, no
    Hessian, so the autograd backward is once-differentiable).
    """

    reference_sampler = "md"
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
