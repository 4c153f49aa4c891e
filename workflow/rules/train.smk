# Training: one rule for every model and loss; the loss decides which data the run reads.


rule train:
    input:
        unpack(lambda wc: train_inputs(config, run_of(wc))),
    output:
        model="results/runs/{run}/model.pt",
        curve="results/runs/{run}/train.csv",
        config="results/runs/{run}/config.json",
    log:
        "results/runs/{run}/train.log",
    benchmark:
        "results/runs/{run}/train.benchmark.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        gpu=1 if USES_GPU else 0,
        runtime=1440,
    params:
        run=lambda wc: train_params(config, run_of(wc)),
    script:
        "../scripts/train.py"
