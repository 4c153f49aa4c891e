# Evaluation: one layer judges every model the same way (ESS, NLL, energy and distance W2, cost).


rule evaluate:
    input:
        samples="results/runs/{run}/samples.npz",
        model="results/runs/{run}/model.pt",
        curve="results/runs/{run}/train.csv",
        config="results/runs/{run}/config.json",
        test=lambda wc: f"results/data/{run_of(wc).system}/test.npz",
        # the data stage's cost, charged pro rata to runs that train on its data
        data_provenance=lambda wc: f"results/data/{run_of(wc).system}/provenance.json",
        population=lambda wc: population_input(run_of(wc).system),
    output:
        metrics="results/runs/{run}/metrics.json",
        arrays="results/runs/{run}/eval.npz",
    log:
        "results/runs/{run}/evaluate.log",
    benchmark:
        "results/runs/{run}/evaluate.benchmark.tsv"
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        gpu=1 if USES_GPU else 0,
        runtime=360,
    params:
        run=lambda wc: evaluate_params(config, run_of(wc)),
    script:
        "../scripts/evaluate.py"


rule collect:
    input:
        lambda wc: [
            f"results/runs/{run.path}/metrics.json"
            for run in reported_runs_of(wc.system)
        ],
    output:
        "results/tables/{system}/runs.csv",
    log:
        "results/logs/collect/{system}.log",
    benchmark:
        "results/benchmarks/collect/{system}.tsv"
    conda:
        "../../envs/evaluate.yaml"
    script:
        "../scripts/collect.py"
