# Evaluation: one layer judges every model the same way (ESS, NLL, energy and distance W2, cost).


rule evaluate:
    input:
        samples="results/runs/{system}/{model}/{loss}/seed{seed}/samples.npz",
        model="results/runs/{system}/{model}/{loss}/seed{seed}/model.pt",
        curve="results/runs/{system}/{model}/{loss}/seed{seed}/train.csv",
        test="results/data/{system}/test.npz",
    output:
        metrics="results/runs/{system}/{model}/{loss}/seed{seed}/metrics.json",
        arrays="results/runs/{system}/{model}/{loss}/seed{seed}/eval.npz",
    log:
        "results/runs/{system}/{model}/{loss}/seed{seed}/evaluate.log",
    benchmark:
        "results/runs/{system}/{model}/{loss}/seed{seed}/evaluate.benchmark.tsv"
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        gpu=1 if USES_GPU else 0,
        runtime=360,
    params:
        settings=settings_of,
    script:
        "../scripts/evaluate.py"


rule collect:
    input:
        lambda wc: [
            f"results/runs/{run.path}/metrics.json" for run in runs_of(wc.system)
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
