"""The metrics of one set of samples, one module each, registered in evaluation order (the
order of ``metrics.json``). A new metric is one module and one :func:`register_metric` line here.
"""

from __future__ import annotations

from eqbg.evaluation.metric import has_observable, register_metric
from eqbg.evaluation.metrics import (
    chirality,
    dihedrals,
    distances,
    energy,
    ess,
    failures,
    likelihood,
    log_z,
    modes,
    quadratic_bias,
    sampling_cost,
)

register_metric("failures", failures.failures, failures.KEYS, "sample counts and failed samples")
register_metric("ess", ess.reverse_ess, ess.KEYS, "Kish's ESS of the importance weights, bootstrap interval")
register_metric("log_z", log_z.log_z_error, log_z.KEYS, "importance-sampling log Z and its error",
                applies=log_z.knows_log_z)
register_metric("modes", modes.mode_coverage, modes.KEYS, "modes reached by the valid samples",
                applies=has_observable("modes"))
register_metric("quadratic_bias", quadratic_bias.quadratic_bias, quadratic_bias.KEYS,
                "FAB's bias of a quadratic expectation, both conventions",
                applies=has_observable("test_function"))
register_metric("likelihood", likelihood.nll_and_forward_ess, likelihood.KEYS,
                "test NLL, forward ESS and forward KL (exact divergence)",
                optional_keys=likelihood.OPTIONAL_KEYS)
register_metric("energy", energy.energy_distribution, energy.KEYS, "energy distributions: W1, W2, means")
register_metric("distances", distances.distance_distribution, distances.KEYS,
                "interatomic distance distributions: W2", applies=distances.is_particle_system)
register_metric("chirality", chirality.d_chirality, chirality.KEYS, "share of D configurations",
                applies=has_observable("chirality"))
register_metric("dihedrals", dihedrals.dihedral_observables, dihedrals.KEYS,
                "basin free energy, Ramachandran and phi/psi KL", applies=has_observable("dihedrals"))
register_metric("sampling_cost", sampling_cost.sampling_cost, sampling_cost.KEYS,
                "sampling and training cost", optional_keys=sampling_cost.OPTIONAL_KEYS)
