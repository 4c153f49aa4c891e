# What people read: per-system tables and figures, and the HTML report that collects them.


rule table:
    input:
        runs="results/tables/{system}/runs.csv",
        published=PUBLISHED,
    output:
        md=report(
            "results/tables/{system}/summary.md",
            caption="../report/table.rst",
            category="Tables",
            labels={"system": "{system}", "format": "markdown"},
        ),
        tex="results/tables/{system}/summary.tex",
    log:
        "results/logs/table/{system}.log",
    benchmark:
        "results/benchmarks/table/{system}.tsv"
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/table.py"


rule plot:
    input:
        runs="results/tables/{system}/runs.csv",
        arrays=lambda wc: [
            f"results/runs/{run.path}/eval.npz" for run in runs_of(wc.system)
        ],
        curves=lambda wc: [
            f"results/runs/{run.path}/train.csv" for run in runs_of(wc.system)
        ],
    output:
        figures=report(
            directory("results/figures/{system}"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
            subcategory="{system}",
            labels={"system": "{system}", "figure": "{name}"},
        ),
    log:
        "results/logs/plot/{system}.log",
    benchmark:
        "results/benchmarks/plot/{system}.tsv"
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/plot.py"


rule figures:
    input:
        report_targets(),


rule html_report:
    input:
        expand(
            [
                "results/tables/{system}/summary.md",
                "results/figures/{system}",
            ],
            system=RUN_SYSTEMS,
        ),
    output:
        "results/report.html",
    log:
        "results/logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        snakefile=workflow.main_snakefile,
    script:
        "../scripts/html_report.py"
