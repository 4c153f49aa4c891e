# Reference data: MCMC for particle systems, OpenMM MD for alanine dipeptide, exact samplers for
# the toy targets. Splits are by chain (or time block), never by configuration. Which rule makes
# a system's data follows its reference sampler in the registry (eqbg.systems; common.smk puts
# eqbg on the path).
from eqbg.systems import name_pattern


rule reference_data:
    output:
        train="results/data/{system}/train.npz",
        val="results/data/{system}/val.npz",
        test="results/data/{system}/test.npz",
        provenance="results/data/{system}/provenance.json",
    log:
        "results/logs/data/{system}.log",
    benchmark:
        "results/benchmarks/data/{system}.tsv"
    wildcard_constraints:
        system=name_pattern("mcmc", "exact"),
    conda:
        "../../envs/data.yaml"
    # one torch thread (eqbg.data.settings num_threads: 1): two data jobs share two cores
    threads: 1
    resources:
        runtime=120,
    params:
        settings=lambda wc: canonical(data_settings(config, wc.system)),
        options=lambda wc: canonical(system_options(config, wc.system)),
    script:
        "../scripts/reference_data.py"


use rule reference_data as reference_md with:
    log:
        "results/logs/data/{system}.log",
    benchmark:
        "results/benchmarks/data/{system}.tsv"
    wildcard_constraints:
        system=name_pattern("md"),
    conda:
        "../../envs/md.yaml"
    resources:
        runtime=720,


# The converged population of the slow phi > 0 basin by umbrella sampling along phi + MBAR
# (eqbg.data.population): the reference of the reweighted free-energy difference, which the
# laptop MD cannot give (it hardly ever enters phi > 0).
rule md_population:
    output:
        report="results/data/{system}/md_population.json",
        phi="results/data/{system}/md_population_phi.npz",
    log:
        "results/logs/data/{system}_md_population.log",
    benchmark:
        "results/benchmarks/data/{system}_md_population.tsv"
    wildcard_constraints:
        system=name_pattern("md"),
    conda:
        "../../envs/md.yaml"
    threads: lambda wc: population_workers(wc.system)
    resources:
        runtime=1440,
    params:
        settings=lambda wc: canonical(population_settings(config, wc.system)),
        options=lambda wc: canonical(system_options(config, wc.system)),
    script:
        "../scripts/md_population.py"


# The transport cost of OT and equivariant-OT minibatch couplings on the training data (no
# training): the claims stage checks Klein et al.'s "equivariant OT lowers it, more so for
# larger systems" on it (eqbg.ot.transport_cost).
rule coupling_cost:
    input:
        train="results/data/{system}/train.npz",
    output:
        metrics="results/data/{system}/coupling_cost/metrics.json",
        arrays="results/data/{system}/coupling_cost/eval.npz",
    log:
        "results/logs/data/{system}_coupling_cost.log",
    benchmark:
        "results/benchmarks/data/{system}_coupling_cost.tsv"
    wildcard_constraints:
        system=name_pattern("mcmc"),
    conda:
        "../../envs/train.yaml"
    threads: 1
    params:
        settings=lambda wc: canonical(coupling_settings(config, wc.system)),
        options=lambda wc: canonical(system_options(config, wc.system)),
    script:
        "../scripts/coupling_cost.py"
