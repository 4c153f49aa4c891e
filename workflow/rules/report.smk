# What people read: the headline table across systems, per-system tables and figures, and the
# HTML report that collects them and opens on the headline (workflow/report/workflow.rst).


rule headline:
    input:
        runs=expand("results/tables/{system}/runs.csv", system=RUN_SYSTEMS),
    output:
        md=report(
            "results/tables/headline.md",
            caption="../report/headline.rst",
            category="Across systems",
            labels={"table": "headline", "format": "markdown"},
        ),
        csv=report(
            "results/tables/headline.csv",
            caption="../report/headline.rst",
            category="Across systems",
            labels={"table": "headline", "format": "csv"},
        ),
        rst="results/tables/headline.rst",
    log:
        "results/logs/headline.log",
    benchmark:
        "results/benchmarks/headline.tsv"
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/headline.py"


# What each paper found, checked by this run (eqbg.claims): the report opens on it.
rule claims:
    input:
        unpack(lambda wc: claims_inputs()),
        claims=CLAIMS,
    output:
        md=report(
            "results/tables/claims.md",
            caption="../report/claims.rst",
            category="Across systems",
            labels={"table": "claims", "format": "markdown"},
        ),
        csv=report(
            "results/tables/claims.csv",
            caption="../report/claims.rst",
            category="Across systems",
            labels={"table": "claims", "format": "csv"},
        ),
        rst="results/tables/claims.rst",
    log:
        "results/logs/claims.log",
    benchmark:
        "results/benchmarks/claims.tsv"
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/claims.py"


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
            f"results/runs/{run.path}/eval.npz" for run in reported_runs_of(wc.system)
        ],
        curves=lambda wc: [
            f"results/runs/{run.path}/train.csv" for run in runs_of(wc.system)
        ],
        configs=lambda wc: [
            f"results/runs/{run.path}/config.json" for run in runs_of(wc.system)
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
        results=expand(
            [
                "results/tables/{system}/summary.md",
                "results/figures/{system}",
            ],
            system=RUN_SYSTEMS,
        ),
        headline=rules.headline.output,
        claims=rules.claims.output,
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
