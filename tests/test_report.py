"""The headline table across systems and the report's front page that shows it."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from docutils.core import publish_parts
from jinja2 import Environment
from snakemake.report import Category

from eqbg.tables import headline_counts, headline_table, system_table, write_headline_table
from eqbg.tables.headline import HEADLINE_METRICS, headline_display

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTION = ROOT / "workflow" / "report" / "workflow.rst"


def _run(system: str, model: str, loss: str, seed: int, ess: float, **extra) -> dict:
    row = {
        "system": system, "model": model, "loss": loss, "seed": seed,
        "ess": ess, "ess_ci_low": ess - 0.05, "ess_ci_high": ess + 0.04, "ess_ci_level": 0.9, "ess_n": 500,
        "ess_per_s": 100.0 * ess, "samples_per_s": 100.0, "nll": 7.0 + seed, "energy_w2": 0.1 * (seed + 1),
    }
    row.update(extra)
    return row


def _runs() -> pd.DataFrame:
    """dw4: egnn/fm with three seeds (one NaN NLL), egnn/ml with one; lj13: egnn/fm with two
    seeds of different sample counts."""
    rows = [
        _run("dw4", "egnn", "fm", 0, 0.40),
        _run("dw4", "egnn", "fm", 1, 0.50),
        _run("dw4", "egnn", "fm", 2, 0.60, nll=float("nan")),
        _run("dw4", "egnn", "ml", 0, 0.20),
        _run("lj13", "egnn", "fm", 0, 0.10, ess_n=300),
        _run("lj13", "egnn", "fm", 1, 0.30, ess_n=400),
    ]
    return pd.DataFrame(rows)


def test_headline_table_has_one_row_per_system_model_loss_with_seed_counts():
    table = headline_table(_runs())
    assert list(zip(table["system"], table["model"], table["loss"])) == [
        ("dw4", "egnn", "fm"), ("dw4", "egnn", "ml"), ("lj13", "egnn", "fm"),
    ]
    assert table["n_seeds"].tolist() == [3, 1, 2]
    fm = table.iloc[0]
    assert fm["ess_mean"] == pytest.approx(0.5)
    # ess 0.4, 0.5, 0.6: sd(ddof=0) = 0.1 sqrt(2/3), over sqrt(3) seeds (FAB's and EACF's sem)
    assert fm["ess_sem"] == pytest.approx(0.1 * math.sqrt(2 / 3) / math.sqrt(3))
    # the interval spans the seeds' bootstrap intervals: 0.40 - 0.05 to 0.60 + 0.04
    assert (fm["ess_ci_low"], fm["ess_ci_high"]) == (pytest.approx(0.35), pytest.approx(0.64))
    assert fm["ess_ci_level"] == pytest.approx(0.9)
    assert fm["ess_per_s_mean"] == pytest.approx(50.0)
    # the NaN NLL of seed 2 is left out of the mean and counted
    assert fm["nll_mean"] == pytest.approx(7.5) and fm["nll_n_seeds"] == 2
    assert fm["energy_w2_mean"] == pytest.approx(0.2)
    single = table.iloc[1]
    assert math.isnan(single["ess_sem"])
    assert (single["ess_ci_low"], single["ess_ci_high"]) == (pytest.approx(0.15), pytest.approx(0.24))
    lj = table.iloc[2]
    assert (lj["n_samples"], lj["n_samples_max"]) == (300, 400)
    assert (lj["ess_ci_low"], lj["ess_ci_high"]) == (pytest.approx(0.05), pytest.approx(0.34))


def test_headline_display_states_interval_samples_and_partial_seeds():
    display = headline_display(headline_table(_runs()))
    assert list(display.columns) == [
        "system", "model", "loss", "seeds", "ESS [90% interval]", "n samples", *HEADLINE_METRICS.values(),
    ]
    fm, ml, lj = (display.iloc[i] for i in range(3))
    assert fm["ESS [90% interval]"] == "0.5 ± 0.047 [0.35, 0.64]"
    assert ml["ESS [90% interval]"] == "0.2 [0.15, 0.24]"
    assert fm["n samples"] == "500" and lj["n samples"] == "300–400"
    assert fm["NLL (eqbg)"] == "7.5 ± 0.35 (n=2)"
    assert ml["eff. samples/s"] == "20"
    assert fm["seeds"] == 3


def test_headline_survives_runs_without_intervals_or_new_metrics():
    runs = pd.DataFrame([{"system": "gmm40", "model": "egnn", "loss": "fm", "seed": 0, "ess": 0.7, "ess_n": 100}])
    display = headline_display(headline_table(runs))
    assert display.iloc[0]["ESS [interval]"] == "0.7"
    assert display.iloc[0]["eff. samples/s"] == "–"


def test_headline_rejects_empty_runs():
    with pytest.raises(ValueError, match="no runs"):
        headline_table(pd.DataFrame(columns=["system", "model", "loss"]))


def test_write_headline_table_from_runs_csv_files(tmp_path):
    runs = _runs()
    paths = []
    for system, sub in runs.groupby("system"):
        path = tmp_path / system / "runs.csv"
        path.parent.mkdir()
        sub.to_csv(path, index=False)
        paths.append(path)
    out = {ext: tmp_path / f"headline.{ext}" for ext in ("md", "csv", "rst")}
    display = write_headline_table(paths, out["md"], out["csv"], out["rst"])
    assert len(display) == 3
    md = out["md"].read_text()
    assert md.count("| egnn") == 3 and "ESS [90% interval]" in md and "Kish" in md
    numbers = pd.read_csv(out["csv"])
    assert numbers["n_seeds"].tolist() == [3, 1, 2]
    assert numbers.loc[0, "ess_ci_high"] == pytest.approx(0.64)
    # the reST fragment is a valid table with every row, as the report's front page shows it
    html = publish_parts(out["rst"].read_text(), writer="html")["body"]
    assert "system-message" not in html
    assert html.count("<tr>") == 4  # header + three rows
    assert "0.5 ± 0.047 [0.35, 0.64]" in html and "300–400" in html
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dw4", "headline.csv", "headline.md", "headline.rst", "lj13"]


def test_headline_counts():
    assert headline_counts(headline_table(_runs())) == {
        "systems": 2, "system × model × loss": 3, "runs (all seeds)": 6,
    }


def test_system_table_shows_effective_samples_per_second():
    runs = _runs()
    published = pd.DataFrame(columns=["system", "metric", "model", "loss", "value", "value_low", "value_high",
                                      "convention", "verified", "paper", "table", "method", "setting", "source"])
    table, _ = system_table(runs, "dw4", published)
    assert table["eff. samples/s"].tolist() == ["50 ± 4.7", "20"]


# ----------------------------------------------------------------------------- front page


def _render_description(files: list[str], categories: list[str]) -> str:
    """workflow.rst rendered as Snakemake's report renders it: Jinja2 (trim/lstrip blocks) with
    ``snakemake.config``, ``categories`` and ``files``, the link targets appended, then
    docutils, from the working directory."""
    records = [SimpleNamespace(path=Path(f), target=Path(f).name) for f in files]
    cats = {Category(c): {} for c in categories}
    links = "\n\n" + "\n".join(
        [f".. _{c}: javascript:app.showCategory('{c}')" for c in categories]
        + [f".. _{r.target}: javascript:app.showResultInfo('{r.path}')" for r in records]
    ) + "\n"
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    env = Environment(trim_blocks=True, lstrip_blocks=True)
    text = env.from_string(DESCRIPTION.read_text() + links).render(
        snakemake=SimpleNamespace(config=config), categories=cats, files=records
    )
    return publish_parts(text, writer="html", settings_overrides={"report_level": 2})["html_body"]


def test_front_page_shows_the_headline_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = Path("results/tables/dw4/runs.csv")
    runs.parent.mkdir(parents=True)
    _runs().to_csv(runs, index=False)
    write_headline_table([runs], *(f"results/tables/headline.{ext}" for ext in ("md", "csv", "rst")))
    html = _render_description(
        ["results/tables/headline.md", "results/tables/headline.csv", "results/tables/dw4/summary.md"],
        ["Across systems", "Figures", "Tables"],
    )
    assert "system-message" not in html, html
    # the headline table comes before anything else on the page
    assert html.index("<table") < html.index("What this is")
    assert "0.5 ± 0.047 [0.35, 0.64]" in html
    assert "showCategory('Across" in html  # the link to the headline's category
    for text in ("NLL", "Kish", "pair sum", "sampling_speed", "lj13"):
        assert text in html


def test_front_page_without_a_headline_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    html = _render_description([], [])
    assert "system-message" not in html, html
    assert "<table" in html  # the papers table only
    assert "headline table is not part of this report" in html
    assert "showCategory" not in html


def test_variants_are_their_own_rows_and_a_column_of_the_tables(tmp_path):
    """Runs of one model and loss in two variants (e.g. training-set sizes) are two methods,
    not seeds of one; runs without a variant keep an empty cell (also after a CSV round trip,
    where the empty string reads back as NaN)."""
    rows = [
        _run("dw4", "egnn", "ml", 0, 0.2, variant="n100"),
        _run("dw4", "egnn", "ml", 1, 0.4, variant="n100"),
        _run("dw4", "egnn", "ml", 0, 0.7, variant="n1000"),
        _run("dw4", "egnn", "fm", 0, 0.5, variant=None),
    ]
    path = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    runs = pd.read_csv(path)
    table = headline_table(runs)
    got = {(r["loss"], r["variant"]): (r["n_seeds"], r["ess_mean"]) for _, r in table.iterrows()}
    assert got == {("fm", ""): (1, 0.5), ("ml", "n100"): (2, pytest.approx(0.3)), ("ml", "n1000"): (1, 0.7)}
    assert "variant" in headline_display(table)
    published = pd.DataFrame(columns=["system", "metric", "model", "loss", "value", "value_low", "value_high",
                                      "convention", "verified", "paper", "table", "method", "setting", "source"])
    display, _ = system_table(runs, "dw4", published)
    assert sorted(display["variant"]) == ["", "n100", "n1000"]
    # a grid without variants shows no variant column
    plain, _ = system_table(runs[runs["loss"] == "fm"], "dw4", published)
    assert "variant" not in plain


def test_training_size_table_and_figure_carry_the_size_beside_published_values():
    from eqbg.tables import load_published, training_size_table
    from eqbg.plots import training_size_plot

    rows = []
    for n_train, nlls in ((100, (8.6, 8.8)), (1000, (8.0, 8.2)), (10000, (7.6, 7.7))):
        for seed, nll in enumerate(nlls):
            rows.append(_run("dw4", "egnn", "ml", seed, 0.3, nll=nll, variant=f"n{n_train}",
                             n_train=n_train, n_train_setting=n_train))
    rows.append(_run("dw4", "egnn", "fm", 0, 0.5, n_train=10000, n_train_setting=float("nan")))
    runs = pd.DataFrame(rows)
    published = load_published(ROOT / "workflow" / "resources" / "published.csv")
    table = training_size_table(runs, "dw4", published)
    assert table["n train"].tolist() == [100, 1000, 10000]  # the fm run asked for no size
    assert table["seeds"].tolist() == [2, 2, 2]
    assert table["NLL (eqbg)"].iloc[0].startswith("8.7 ±")
    # EFM convention drops the prior normaliser: (n-1)d/2 log(2 pi) = 5.514 nats for DW4
    assert table["NLL (EFM conv.)"].iloc[0].startswith("3.186")
    # E-NF's published DW4 values (same convention as ours) sit beside their sizes, flagged
    assert "8.31†" in table["published NLL (eqbg)"].iloc[0]
    assert "2.796†" in table["published NLL (EFM conv.)"].iloc[0]
    fig = training_size_plot(runs, "dw4")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    (line,) = ax.get_lines()[:1]
    assert list(line.get_xdata()) == [100, 1000, 10000]
    assert list(line.get_ydata()) == pytest.approx([8.7, 8.1, 7.65])
    assert "no training-set-size" not in " ".join(t.get_text() for t in ax.texts)
