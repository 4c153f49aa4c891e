# Sampling: x ~ q with log q(x) for reweighting, from the trained model.


rule sample:
    input:
        model="results/runs/{run}/model.pt",
        config="results/runs/{run}/config.json",
    output:
        samples="results/runs/{run}/samples.npz",
    log:
        "results/runs/{run}/sample.log",
    benchmark:
        "results/runs/{run}/sample.benchmark.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        gpu=1 if USES_GPU else 0,
        runtime=720,
    params:
        run=lambda wc: sample_params(config, run_of(wc)),
    script:
        "../scripts/sample.py"
