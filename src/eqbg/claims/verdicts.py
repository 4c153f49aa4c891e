"""Predicates, the 95 % interval of what they compare, and the verdict.

For two runs the statistic is the difference ``a - b`` (or the ratio ``a / b``), its replicates
the element-wise difference (ratio) of the two runs' independent bootstrap replicates; for one
run, the run's own. The verdict of a check:

* **reproduced**: the interval lies wholly on the claimed side (of zero, or of the threshold);
* **not reproduced**: it lies wholly on the other side;
* **inconclusive at this size**: it straddles;
* **not run**: a run the check needs is not in the grid (or has no finite value).

A point estimate (a metric without replicates, e.g. a sampling speed) has a zero-width interval;
the table says so. A claim is reproduced when all its checks are, not reproduced when one is,
not run when a required check is, and inconclusive otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from eqbg.claims.estimates import Estimate, RunData, estimate
from eqbg.claims.spec import Check, RunRef

__all__ = ["VERDICTS", "CheckResult", "judge", "combine", "decide", "LEVEL"]

REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED, NOT_RUN = (
    "reproduced", "inconclusive at this size", "not reproduced", "not run")
VERDICTS = (REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED, NOT_RUN)
#: coverage of every interval
LEVEL = 0.95


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: its statistic with interval, the runs' values, the verdict."""

    check: Check
    verdict: str
    value: float = math.nan
    low: float = math.nan
    high: float = math.nan
    a_value: float = math.nan
    b_value: float = math.nan
    b_run: str = ""
    threshold: float = math.nan
    how: str = ""


def _interval(value: float, reps: np.ndarray | None) -> tuple[float, float]:
    if reps is None:
        return value, value
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return math.nan, math.nan
    return float(np.quantile(reps, (1 - LEVEL) / 2)), float(np.quantile(reps, (1 + LEVEL) / 2))


def _combine_reps(a: Estimate, b: Estimate, ratio: bool) -> np.ndarray | None:
    if a.replicates is None and b.replicates is None:
        return None
    ra = a.replicates if a.replicates is not None else np.full_like(b.replicates, a.value)
    rb = b.replicates if b.replicates is not None else np.full_like(ra, b.value)
    with np.errstate(divide="ignore", invalid="ignore"):
        return ra / rb if ratio else ra - rb


def decide(predicate: str, low: float, high: float, threshold: float = 0.0) -> str:
    """The verdict of an interval ``[low, high]`` of a predicate's statistic."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    if predicate == "less":
        yes, no = high < 0, low > 0
    elif predicate in ("greater", "above"):
        ref = 0.0 if predicate == "greater" else threshold
        yes, no = low > ref, high <= ref
    elif predicate == "below":
        yes, no = high < threshold, low >= threshold
    elif predicate == "not_less":
        yes, no = low >= 0, high < 0
    elif predicate in ("ratio_at_least", "at_least"):
        yes, no = low >= threshold, high < threshold
    elif predicate == "within":
        yes, no = high <= threshold, low > threshold
    else:
        raise ValueError(f"unknown predicate {predicate!r}")
    return REPRODUCED if yes else NOT_REPRODUCED if no else INCONCLUSIVE


def _run_key(system: str, ref: RunRef) -> str:
    return f"{system}/{ref}"


def judge(check: Check, runs: Mapping[str, RunData]) -> CheckResult:
    """Evaluate one check over the runs (keys ``system/model/loss[/variant]``)."""
    def get(ref: RunRef, system: str = check.system) -> Estimate | None:
        run = runs.get(_run_key(system, ref))
        return None if run is None else estimate(run, check.metric)

    a = get(check.a)
    if a is None:
        return CheckResult(check, NOT_RUN, how=f"no {check.system}/{check.a}")
    threshold = math.nan
    if check.threshold is not None:
        threshold = 1.0 / a.n_samples if check.threshold == "1/n" and a.n_samples else float(check.threshold)
    if not check.b:
        low, high = _interval(a.value, a.replicates)
        return CheckResult(check, decide(check.predicate, low, high, threshold), a.value, low, high,
                           a_value=a.value, threshold=threshold, how=a.how)
    b_system = check.b_system or check.system
    found = [(ref, est) for ref in check.b if (est := get(ref, b_system)) is not None]
    if not found:
        return CheckResult(check, NOT_RUN, a_value=a.value, how=f"no {b_system}/{check.b[0]}")
    pick = min if check.best == "min" else max
    b_ref, b = pick(found, key=lambda rb: rb[1].value) if len(found) > 1 else found[0]
    ratio = check.predicate == "ratio_at_least"
    value = a.value / b.value if ratio else a.value - b.value
    low, high = _interval(value, _combine_reps(a, b, ratio))
    how = a.how if a.how == b.how else f"{a.how}; {b.how}"
    return CheckResult(check, decide(check.predicate, low, high, 0.0 if math.isnan(threshold) else threshold),
                       value, low, high, a.value, b.value,
                       str(b_ref) if b_system == check.system else f"{b_system}/{b_ref}", threshold, how)


def combine(results: Sequence[CheckResult]) -> str:
    """A claim's verdict from its checks' (optional checks that were not run are skipped)."""
    verdicts = [r.verdict for r in results if not (r.verdict == NOT_RUN and r.check.optional)]
    if not verdicts or NOT_RUN in verdicts:
        return NOT_RUN
    if NOT_REPRODUCED in verdicts:
        return NOT_REPRODUCED
    return REPRODUCED if all(v == REPRODUCED for v in verdicts) else INCONCLUSIVE
