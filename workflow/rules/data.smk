# Reference data: MCMC for particle systems, OpenMM MD for alanine dipeptide, exact samplers for
# the toy targets. Splits are by chain (or time block), never by configuration.


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
        system="dw4|lj13|lj55|gmm40|manywell32",
    conda:
        "../../envs/data.yaml"
    # one torch thread (eqbg.data.settings num_threads: 1): two data jobs share two cores
    threads: 1
    resources:
        runtime=120,
    params:
        settings=lambda wc: config["systems"][wc.system]["data"],
        options=lambda wc: system_options(config, wc.system),
    script:
        "../scripts/reference_data.py"


use rule reference_data as reference_md with:
    log:
        "results/logs/data/{system}.log",
    benchmark:
        "results/benchmarks/data/{system}.tsv"
    wildcard_constraints:
        system="aldp",
    conda:
        "../../envs/md.yaml"
    resources:
        runtime=720,
