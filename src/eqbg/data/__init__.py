"""Reference data: MCMC / MD / exact samplers, convergence diagnostics, chain-aware splits and
validated dataset files.

Files (the contract with the training and evaluation stages): ``{out_dir}/{split}.npz`` for
``split`` in train, val, test, each holding ``x``: float32 ``(N, n_particles, spatial_dim)``
(centre-of-mass free for CoM-free systems) and the 0-d strings ``system`` and ``split``; beside
them ``{out_dir}/provenance.json`` (sampler and its description, resolved settings, seed,
versions, git commit, diagnostics, file hashes). The pipeline uses ``results/data/{system}/``;
:func:`make_reference_data` writes these files and :func:`load_dataset` validates them.

Public API:

* :func:`make_reference_data` -- generate, check and write ``{train,val,test}.npz`` +
  ``provenance.json``; raises :class:`NotConvergedError`.
* :func:`load_dataset` -- read and validate one split; raises :class:`DatasetError`.
* :func:`metropolis`, :func:`minimise`, :func:`random_nonoverlapping` -- the MCMC engine.
* :mod:`eqbg.data.diagnostics` -- IAT, ESS, split R-hat, configurational temperature.
* :mod:`eqbg.data.settings` -- every settings key with its default.
"""

from __future__ import annotations

from eqbg.data.dataset import (
    DatasetError,
    NotConvergedError,
    assign_chains,
    check_convergence,
    check_disjoint,
    load_dataset,
    make_reference_data,
    sampler_for,
)
from eqbg.data.diagnostics import (
    configurational_temperature,
    effective_sample_size,
    integrated_autocorrelation_time,
    split_rhat,
)
from eqbg.data.mcmc import MCMCResult, metropolis, minimise, random_nonoverlapping
from eqbg.data.settings import EXACT_DEFAULTS, MCMC_DEFAULTS, MD_DEFAULTS, resolve_settings

__all__ = [
    "DatasetError",
    "NotConvergedError",
    "make_reference_data",
    "load_dataset",
    "sampler_for",
    "assign_chains",
    "check_disjoint",
    "check_convergence",
    "configurational_temperature",
    "effective_sample_size",
    "integrated_autocorrelation_time",
    "split_rhat",
    "MCMCResult",
    "metropolis",
    "minimise",
    "random_nonoverlapping",
    "resolve_settings",
    "MCMC_DEFAULTS",
    "MD_DEFAULTS",
    "EXACT_DEFAULTS",
]
