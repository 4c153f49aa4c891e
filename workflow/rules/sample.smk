# Sampling with exact likelihood: x ~ q and log q(x) for reweighting.


rule sample:
    input:
        model="results/runs/{system}/{model}/{loss}/seed{seed}/model.pt",
        config="results/runs/{system}/{model}/{loss}/seed{seed}/config.json",
    output:
        samples="results/runs/{system}/{model}/{loss}/seed{seed}/samples.npz",
    log:
        "results/runs/{system}/{model}/{loss}/seed{seed}/sample.log",
    benchmark:
        "results/runs/{system}/{model}/{loss}/seed{seed}/sample.benchmark.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1
    resources:
        gpu=1 if USES_GPU else 0,
        runtime=720,
    params:
        settings=settings_of,
    script:
        "../scripts/sample.py"
