"""OpenMM energy and force evaluation of alanine dipeptide: an in-process Context for small
batches, a persistent pool of worker processes (one Context each) for large ones."""

from __future__ import annotations

import atexit
import hashlib
import math
import multiprocessing as mp
import os
import threading
from multiprocessing.pool import Pool

import numpy as np


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
