"""Optimal transport between batches of configurations: couplings for flow matching
(independent, minibatch OT, equivariant OT) and the rigid alignment they rest on (Kabsch,
Hungarian assignment within atom types).

Cost matrices, rotations and alignment run on the tensors' device; only the assignment problems
themselves go to the CPU solvers (POT's exact EMD, scipy's Hungarian), which have no GPU
implementation here.
"""

from __future__ import annotations

from eqbg.ot.alignment import align, batched_assignment, kabsch, random_rotation
from eqbg.ot.coupling import (
    EquivariantCost,
    emd_permutation,
    equivariant_cost_matrix,
    equivariant_ot,
    independent_coupling,
    ot_permutation,
    pairwise_squared_distance,
)

__all__ = [
    "align",
    "batched_assignment",
    "kabsch",
    "random_rotation",
    "EquivariantCost",
    "emd_permutation",
    "equivariant_cost_matrix",
    "equivariant_ot",
    "independent_coupling",
    "ot_permutation",
    "pairwise_squared_distance",
]
