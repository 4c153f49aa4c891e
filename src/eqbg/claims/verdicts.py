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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from eqbg.claims.estimates import Estimate, RunData, estimate
from eqbg.claims.spec import BASELINE_MODEL, Check, RunRef

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


#: predicate -> (the interval lies wholly on the claimed side, wholly on the other side), for an
#: interval [low, high] of its statistic and the threshold t (0 for the comparisons of two runs)
SIDES: dict[str, tuple[Callable[[float, float, float], bool], Callable[[float, float, float], bool]]] = {
    "less": (lambda lo, hi, t: hi < t, lambda lo, hi, t: lo > t),
    "below": (lambda lo, hi, t: hi < t, lambda lo, hi, t: lo >= t),
    "greater": (lambda lo, hi, t: lo > t, lambda lo, hi, t: hi <= t),
    "above": (lambda lo, hi, t: lo > t, lambda lo, hi, t: hi <= t),
    "not_less": (lambda lo, hi, t: lo >= t, lambda lo, hi, t: hi < t),
    "ratio_at_least": (lambda lo, hi, t: lo >= t, lambda lo, hi, t: hi < t),
    "at_least": (lambda lo, hi, t: lo >= t, lambda lo, hi, t: hi < t),
    "within": (lambda lo, hi, t: hi <= t, lambda lo, hi, t: lo > t),
}


def decide(predicate: str, low: float, high: float, threshold: float = 0.0) -> str:
    """The verdict of an interval ``[low, high]`` of a predicate's statistic (:data:`SIDES`)."""
    if predicate not in SIDES:
        raise ValueError(f"unknown predicate {predicate!r}")
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    claimed, other = SIDES[predicate]
    if claimed(low, high, threshold):
        return REPRODUCED
    return NOT_REPRODUCED if other(low, high, threshold) else INCONCLUSIVE


def _run_key(system: str, ref: RunRef) -> str:
    return f"{system}/{ref}"


def _flows_of(system: str, runs: Mapping[str, RunData]) -> list[RunRef]:
    """Every run of ``system`` that is a flow (``b: flows``), in key order."""
    refs = [RunRef.parse(key.split("/", 1)[1]) for key in sorted(runs) if key.startswith(f"{system}/")]
    return [ref for ref in refs if ref.model not in (BASELINE_MODEL, "data")]


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
    if not check.b and not check.b_flows:
        low, high = _interval(a.value, a.replicates)
        return CheckResult(check, decide(check.predicate, low, high, threshold), a.value, low, high,
                           a_value=a.value, threshold=threshold, how=a.how)
    b_system = check.b_system or check.system
    b_refs = _flows_of(b_system, runs) if check.b_flows else check.b
    found = [(ref, est) for ref in b_refs if (est := get(ref, b_system)) is not None]
    if not found:
        missing = "flow" if check.b_flows else check.b[0]
        return CheckResult(check, NOT_RUN, a_value=a.value, how=f"no {b_system}/{missing}")
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
