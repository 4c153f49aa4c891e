# Budget-matched MCMC (eqbg.baselines): what a user would run instead of a Boltzmann generator,
# given the budget of target-energy evaluations of the system's best flow (its sampling stage
# alone, or everything it cost). Its run folder is read like a flow's by tables, figures, claims.


rule mcmc:
    input:
        flows=lambda wc: [
            f"results/runs/{run.path}/metrics.json"
            for run in runs_of(mcmc_of(wc).system)
        ],
        test=lambda wc: f"results/data/{mcmc_of(wc).system}/test.npz",
    output:
        config="results/runs/{mcmc_run}/config.json",
        samples="results/runs/{mcmc_run}/samples.npz",
        metrics="results/runs/{mcmc_run}/metrics.json",
        arrays="results/runs/{mcmc_run}/eval.npz",
    log:
        "results/runs/{mcmc_run}/mcmc.log",
    benchmark:
        "results/runs/{mcmc_run}/mcmc.benchmark.tsv"
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        runtime=240,
    params:
        run=lambda wc: mcmc_params(config, mcmc_of(wc)),
    script:
        "../scripts/mcmc.py"
