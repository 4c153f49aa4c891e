# Training: one rule for every model and loss; the loss picks the objective.


rule train:
    input:
        train="results/data/{system}/train.npz",
        val="results/data/{system}/val.npz",
    output:
        model="results/runs/{system}/{model}/{loss}/seed{seed}/model.pt",
        curve="results/runs/{system}/{model}/{loss}/seed{seed}/train.csv",
        config="results/runs/{system}/{model}/{loss}/seed{seed}/config.json",
    log:
        "results/runs/{system}/{model}/{loss}/seed{seed}/train.log",
    benchmark:
        "results/runs/{system}/{model}/{loss}/seed{seed}/train.benchmark.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        gpu=1 if USES_GPU else 0,
        runtime=1440,
    params:
        settings=settings_of,
    script:
        "../scripts/train.py"
