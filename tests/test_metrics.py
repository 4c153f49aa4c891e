"""The metric registry's contract: every registered metric writes exactly the keys it declares,
where it declares it applies, and a metric registered from outside the package reaches
``evaluate_samples`` with no other edit."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from eqbg.evaluation import METRIC_KEYS, METRICS, evaluate_samples, register_metric
from eqbg.evaluation.context import EvaluationContext
from eqbg.evaluation.cost import run_cost
from eqbg.evaluation.metric import always
from eqbg.evaluation.settings import resolve_settings
from eqbg.flows import CoMFreeGaussian
from eqbg.systems import get_system
from eqbg.tables import TABLE_METRICS, load_published, system_table
from eqbg.tables.system import footnotes, table_metrics

SETTINGS = {"bootstrap_reps": 50, "nll_n": 20, "distance_n": 50}
PUBLISHED = Path(__file__).resolve().parents[1] / "workflow" / "resources" / "published.csv"


def _exact_gmm40(n: int = 300) -> tuple:
    """GMM-40 with samples drawn from the target and their exact log density: q = p."""
    system = get_system("gmm40")
    x = system.sample(n, generator=torch.Generator().manual_seed(0))
    x_test = system.sample(200, generator=torch.Generator().manual_seed(1))
    log_q = system.log_prob(x).double()
    return system, {"x": x.numpy(), "log_q": log_q.numpy(), "wall_time_s": 1.0}, x_test


def _dw4_from_a_gaussian(n: int = 200) -> tuple:
    """DW4 with samples from the CoM-free Gaussian prior and their exact log density."""
    system = get_system("dw4")
    prior = CoMFreeGaussian(4, 2).to(torch.float64)
    x = prior.sample(n, generator=torch.Generator().manual_seed(0))
    x_test = prior.sample(150, generator=torch.Generator().manual_seed(1))
    return system, {"x": x.numpy(), "log_q": prior.log_prob(x).numpy(), "wall_time_s": 2.0}, x_test


def _aldp_near_its_structure(n: int = 12) -> tuple:
    """Alanine dipeptide: its structure with 0.005 nm noise, half of the samples mirrored (D)."""
    system = get_system("aldp")
    g = torch.Generator().manual_seed(0)
    base = system.positions - system.positions.mean(dim=0)
    x = base + 0.005 * torch.randn(n, 22, 3, generator=g, dtype=torch.float64)
    x[: n // 2, :, 0] *= -1
    x_test = base + 0.005 * torch.randn(10, 22, 3, generator=g, dtype=torch.float64)
    return system, {"x": x.numpy(), "log_q": np.zeros(n), "wall_time_s": 1.0}, x_test


CASES = {"gmm40": _exact_gmm40, "dw4": _dw4_from_a_gaussian, "aldp": _aldp_near_its_structure}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    system, samples, x_test = CASES[request.param]()
    ctx = EvaluationContext.build(system, samples, x_test, resolve_settings(SETTINGS))
    metrics, arrays = evaluate_samples(system, samples, x_test, settings=SETTINGS)
    return request.param, ctx, metrics, arrays


@pytest.mark.parametrize("name", sorted(METRICS))
def test_a_metric_writes_its_declared_keys_where_it_applies(case, name):
    system_name, ctx, metrics, _ = case
    spec = METRICS[name]
    if spec.applies(ctx):
        values, _ = spec.compute(ctx)
        assert set(spec.keys) <= set(values) <= set(spec.keys) | set(spec.optional_keys)
        assert set(spec.keys) <= set(metrics)
    else:
        assert not (set(spec.keys) | set(spec.optional_keys)) & set(metrics), system_name


def test_metrics_apply_where_the_system_declares_them(case):
    system_name, ctx, _, _ = case
    applied = {name for name, spec in METRICS.items() if spec.applies(ctx)}
    expected = {
        "gmm40": {"log_z", "modes", "quadratic_bias"},
        "dw4": {"distances"},
        "aldp": {"distances", "chirality", "dihedrals"},
    }[system_name]
    every = {name for name, spec in METRICS.items() if spec.applies is always}
    assert applied == every | expected


def test_keys_of_every_system_are_the_always_metrics_keys(case):
    _, _, metrics, _ = case
    per_run = {"system", "model", "loss", "variant", "seed", "run_dir", "provenance", "n_train", "n_train_setting"}
    assert set(METRIC_KEYS) - per_run <= set(metrics)


def test_registered_metrics_hold_their_values_on_known_cases(case):
    """What the cases determine: q = p for GMM-40 (ESS 1, log Z error 0, all 40 modes), half the
    alanine samples mirrored into D (and mapped back for the dihedrals)."""
    system_name, _, metrics, arrays = case
    if system_name == "gmm40":
        assert metrics["ess"] == pytest.approx(1.0, abs=1e-12)
        assert metrics["log_z_error"] == pytest.approx(0.0, abs=1e-12)
        assert metrics["modes_reached"] == 40 and arrays["mode_index"].shape == (300,)
    elif system_name == "aldp":
        assert metrics["frac_d_chirality_flow"] == 0.5 and metrics["n_mapped_d_to_l"] == 6
        # mirrored back into L, the dihedrals of the noisy copies all sit at the structure's
        assert np.ptp(arrays["phi_flow"]) < 0.5
    else:
        assert "log_z_error" not in metrics and metrics["n_failed"] == 0
        assert metrics["distance_n_flow"] == metrics["distance_n_data"] == SETTINGS["distance_n"]


def test_every_table_column_is_labelled_by_the_code_that_computes_it():
    """The per-system table's columns are the labelled keys: of the samples' metrics and of the
    run-folder metrics (AIS refinement, the umbrella-sampling reference, the cost record)."""
    from eqbg.evaluation import metric_labels
    from eqbg.evaluation.cost import COST_LABELS
    from eqbg.evaluation.run_metrics import RUN_METRICS

    declared = {key for spec in METRICS.values() for key in (*spec.keys, *spec.optional_keys)}
    registry_labels = {key for spec in METRICS.values() for key in spec.labels}
    assert registry_labels <= declared
    assert set(TABLE_METRICS) == set(metric_labels())
    run_labels = {key for spec in RUN_METRICS.values() for key in spec.labels}
    assert set(TABLE_METRICS) - registry_labels == run_labels == {"ess_ais", "delta_f_reference", *COST_LABELS}
    cost = run_cost({"ess": 0.5, "ess_n": 10}, None)
    assert set(COST_LABELS) <= set(cost)  # run_cost writes every labelled cost key
    with pytest.raises(ValueError, match="labels keys it does not write"):
        register_metric("mislabelled", lambda ctx: ({}, {}), ("a",), "x", labels={"b": "B"})
    assert "mislabelled" not in METRICS


BELOW_ZERO_NOTE = "u < 0 (frac.): share of samples with a negative reduced energy."


@pytest.fixture
def toy_metric():
    """A metric registered as a user's module would: the fraction of samples with u below 0."""

    def below_zero(ctx: EvaluationContext):
        return {"frac_energy_below_zero": float(np.mean(ctx.u_flow < 0))}, {"below_zero": ctx.u_flow < 0}

    register_metric("below_zero", below_zero, ("frac_energy_below_zero",), "samples with u < 0",
                    labels={"frac_energy_below_zero": "u < 0 (frac.)"}, notes=(BELOW_ZERO_NOTE,))
    yield
    del METRICS["below_zero"]


def test_a_metric_registered_from_outside_reaches_the_evaluation(toy_metric):
    system, samples, x_test = _dw4_from_a_gaussian(50)
    metrics, arrays = evaluate_samples(system, samples, x_test, settings=SETTINGS)
    u = arrays["energy_flow"]
    assert metrics["frac_energy_below_zero"] == pytest.approx(float(np.mean(u < 0)))
    assert arrays["below_zero"].sum() == round(50 * metrics["frac_energy_below_zero"])
    assert list(metrics)[-1] == "frac_energy_below_zero"  # after every metric registered before
    with pytest.raises(ValueError, match="already registered"):
        register_metric("below_zero", lambda ctx: ({}, {}), (), "again")
    assert math.isfinite(metrics["ess"])
    # ... and, labelled, becomes a column of the per-system table after the built-in ones
    runs = pd.DataFrame([{**metrics, "system": "dw4", "model": "egnn", "loss": "fm", "variant": None, "seed": 0}])
    table, _ = system_table(runs, "dw4", load_published(PUBLISHED))
    assert table.columns[-1] == "u < 0 (frac.)" and list(table_metrics())[-1] == "frac_energy_below_zero"
    # ... and its note is written under the table, after the notes of the metrics before it
    notes = footnotes()
    assert BELOW_ZERO_NOTE in notes
    assert notes.index(BELOW_ZERO_NOTE) > max(i for i, n in enumerate(notes) if n.startswith("ESS: Kish"))
