"""The metrics of one set of samples, one module each, registered in evaluation order (the
order of ``metrics.json``). A new metric is one module and one :func:`register_metric` line here.
"""

from __future__ import annotations

from eqbg.evaluation.metric import implements, register_metric
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
from eqbg.systems.observables import HasChirality, HasDihedrals, HasModes, HasTestFunction

register_metric("failures", failures.failures, failures.KEYS, "sample counts and failed samples",
                labels={"frac_failed": "failed (frac.)"})
register_metric("ess", ess.reverse_ess, ess.KEYS, "Kish's ESS of the importance weights, bootstrap interval",
                labels={"ess": "ESS (frac.)"}, notes=ess.NOTES)
register_metric("log_z", log_z.log_z_error, log_z.KEYS, "importance-sampling log Z and its error",
                applies=log_z.knows_log_z, labels={"log_z_error": "log Z err."})
register_metric("modes", modes.mode_coverage, modes.KEYS, "modes reached by the valid samples",
                applies=implements(HasModes),
                labels={"mode_coverage": "modes reached (frac.)", "mode_coverage_bound": "modes bound (n/modes)"})
register_metric("quadratic_bias", quadratic_bias.quadratic_bias, quadratic_bias.KEYS,
                "FAB's bias of a quadratic expectation, both conventions",
                applies=implements(HasTestFunction), labels={
                    "quadratic_bias_weighted": "bias E[f] rew.", "quadratic_bias_unweighted": "bias E[f]",
                    "quadratic_bias_weighted_fab": "bias E[f] rew. (FAB conv.)",
                    "quadratic_bias_unweighted_fab": "bias E[f] (FAB conv.)"}, notes=quadratic_bias.NOTES)
register_metric("likelihood", likelihood.nll_and_forward_ess, likelihood.KEYS,
                "test NLL, forward ESS and forward KL (exact divergence)",
                optional_keys=likelihood.OPTIONAL_KEYS, labels={
                    "forward_ess": "fwd ESS", "nll": "NLL (eqbg)", "nll_efm": "NLL (EFM conv.)",
                    "forward_kl": "fwd KL"}, notes=likelihood.NOTES)
register_metric("energy", energy.energy_distribution, energy.KEYS, "energy distributions: W1, W2, means",
                labels={"energy_w2": "E-W2 (kT)", "energy_w2_reweighted": "E-W2 rew. (kT)",
                        "mean_energy_reweighted": "<u> rew. (kT)"})
register_metric("distances", distances.distance_distribution, distances.KEYS,
                "interatomic distance distributions: W2", applies=distances.is_particle_system,
                labels={"distance_w2": "dist-W2"})
register_metric("chirality", chirality.d_chirality, chirality.KEYS, "share of D configurations",
                applies=implements(HasChirality), labels={"frac_d_chirality_flow": "D-form (frac.)"})
register_metric("dihedrals", dihedrals.dihedral_observables, dihedrals.KEYS,
                "basin free energy, Ramachandran and phi/psi KL", applies=implements(HasDihedrals), labels={
                    "delta_f_data": "ΔF MD test (kT)", "delta_f_reweighted": "ΔF rew. (kT)",
                    "ramachandran_kl_flow": "Rama KL", "ramachandran_kl_reweighted": "Rama KL rew.",
                    "phi_kl_reweighted": "φ KL rew.", "psi_kl_reweighted": "ψ KL rew."})
register_metric("sampling_cost", sampling_cost.sampling_cost, sampling_cost.KEYS,
                "sampling and training cost", optional_keys=sampling_cost.OPTIONAL_KEYS, labels={
                    "samples_per_s": "samples/s", "ess_per_s": "eff. samples/s", "nfe": "NFE",
                    "path_length": "path length", "train_time_s": "train time (s)"})
