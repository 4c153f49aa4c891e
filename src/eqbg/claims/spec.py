"""The claims file: each claim of a paper as predicates (checks) over metrics of named runs.

A claim (``workflow/resources/claims.yaml``)::

    - id: efm_shorter_paths
      paper: Klein et al. 2023 (EFM)
      where: abstract
      claim: Equivariant OT flow matching gives shorter integration paths ...
      paper_scale: "DW4/LJ13: 1e5 training configurations, ..."
      interval: how the intervals are obtained (said in the table)
      checks:
        - {system: dw4, metric: path_length, predicate: less, a: egnn/eqotfm, b: egnn/otfm}

A run is ``model/loss[/variant]`` of the check's system; ``b`` may list several runs and say
``best: min`` or ``best: max`` (the best of them by point estimate, e.g. "the best E-CNF").
Predicates (:mod:`eqbg.claims.verdicts`): ``less``, ``greater``, ``not_less`` (a >= b),
``ratio_at_least`` (a / b >= ``threshold``), ``at_least`` / ``above`` / ``below`` (a against
``threshold``, which may be ``1/n``: one over the run's sample count), ``within`` (a - b <=
``threshold``). ``b_system`` compares with runs of another system (default: the check's).
The data's own measurements are runs too: ``data/coupling`` (rule coupling_cost).
``optional: true`` marks a check whose runs only some grids have (skipped when absent).
``b: flows`` stands for every flow of the system (every run but the ``mcmc`` baselines), the best
of them by ``best``: the budget-matched MCMC is compared with whichever flow of the grid is best.

The file states the claims as the papers do; configurations change, claims do not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Check", "Claim", "RunRef", "load_claims", "data_measurements", "PREDICATES", "FLOWS",
           "BASELINE_MODEL"]

#: predicate -> whether it compares two runs (else one run against a threshold)
PREDICATES: dict[str, bool] = {
    "less": True, "greater": True, "not_less": True, "ratio_at_least": True, "within": True,
    "at_least": False, "above": False, "below": False,
}
#: ``b:`` value naming every flow of the system; the runs of model :data:`BASELINE_MODEL` are not flows
FLOWS, BASELINE_MODEL = "flows", "mcmc"
#: predicates that need a threshold
_THRESHOLD = {"ratio_at_least", "within", "at_least", "above", "below"}


@dataclass(frozen=True)
class RunRef:
    """A run of a system's grid: ``model/loss[/variant]``."""

    model: str
    loss: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> "RunRef":
        parts = str(text).split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"a run is model/loss[/variant], got {text!r}")
        return cls(*parts)

    def __str__(self) -> str:
        return "/".join(p for p in (self.model, self.loss, self.variant) if p)


@dataclass(frozen=True)
class Check:
    """One predicate of a claim (see the module docstring)."""

    system: str
    metric: str
    predicate: str
    a: RunRef
    b: tuple[RunRef, ...] = ()
    best: str | None = None
    threshold: float | str | None = None
    optional: bool = False
    label: str = ""
    b_system: str = ""
    b_flows: bool = False  #: ``b: flows``: every flow of the system (see the module docstring)

    def __post_init__(self) -> None:
        if self.predicate not in PREDICATES:
            raise ValueError(f"unknown predicate {self.predicate!r}; known: {sorted(PREDICATES)}")
        if self.b_flows and self.best not in ("min", "max"):
            raise ValueError(f"b: flows needs best: min or max ({self.system} {self.metric})")
        if PREDICATES[self.predicate] != (bool(self.b) or self.b_flows):
            need = "a run b" if PREDICATES[self.predicate] else "no run b"
            raise ValueError(f"predicate {self.predicate!r} needs {need} ({self.system} {self.metric})")
        if len(self.b) > 1 and self.best not in ("min", "max"):
            raise ValueError(f"several runs b need best: min or max ({self.system} {self.metric})")
        if (self.predicate in _THRESHOLD) != (self.threshold is not None):
            raise ValueError(f"predicate {self.predicate!r} {'needs' if self.predicate in _THRESHOLD else 'takes no'} threshold")
        if isinstance(self.threshold, str) and self.threshold != "1/n":
            raise ValueError(f"a threshold is a number or '1/n', got {self.threshold!r}")


@dataclass(frozen=True)
class Claim:
    """A paper's finding and the checks that measure it."""

    id: str
    paper: str
    where: str
    claim: str
    measured_as: str
    paper_scale: str
    interval: str
    checks: tuple[Check, ...] = field(default_factory=tuple)
    note: str = ""


_CLAIM_KEYS = {"id", "paper", "where", "claim", "measured_as", "paper_scale", "interval", "checks", "note"}
_CHECK_KEYS = {"system", "metric", "predicate", "a", "b", "best", "threshold", "optional", "label", "b_system"}


def _check(raw: dict[str, Any], where: str) -> Check:
    unknown = set(raw) - _CHECK_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown check keys {sorted(unknown)}")
    b = raw.get("b")
    b_flows = b == FLOWS
    b_list = [] if b is None or b_flows else (b if isinstance(b, list) else [b])
    try:
        return Check(system=str(raw["system"]), metric=str(raw["metric"]), predicate=str(raw["predicate"]),
                     a=RunRef.parse(raw["a"]), b=tuple(RunRef.parse(x) for x in b_list),
                     best=raw.get("best"), threshold=raw.get("threshold"),
                     optional=bool(raw.get("optional", False)), label=str(raw.get("label", "")),
                     b_system=str(raw.get("b_system", "")), b_flows=b_flows)
    except KeyError as err:
        raise ValueError(f"{where}: a check needs {err}") from None
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def load_claims(path: str | Path) -> list[Claim]:
    """Read and validate the claims file; a clear error names the claim and the problem."""
    raw = yaml.safe_load(Path(path).read_text())
    items = raw.get("claims") if isinstance(raw, dict) else None
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: expected a non-empty list under 'claims'")
    claims, seen = [], set()
    for i, item in enumerate(items):
        where = f"{path}: claim {item.get('id', i) if isinstance(item, dict) else i}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: not a mapping")
        missing = _CLAIM_KEYS - {"note"} - set(item)
        if missing or set(item) - _CLAIM_KEYS:
            raise ValueError(f"{where}: missing keys {sorted(missing)}, unknown keys {sorted(set(item) - _CLAIM_KEYS)}")
        if item["id"] in seen:
            raise ValueError(f"{where}: duplicate id")
        seen.add(item["id"])
        checks = tuple(_check(c, where) for c in item["checks"])
        if not checks:
            raise ValueError(f"{where}: no checks")
        claims.append(Claim(**{k: (checks if k == "checks" else str(v)) for k, v in item.items()}))
    return claims


def data_measurements(claims: list[Claim]) -> set[tuple[str, str]]:
    """``(system, name)`` of every measurement of a system's data the claims read
    (``data/<name>`` runs; ``coupling``: rule coupling_cost)."""
    out = set()
    for claim in claims:
        for c in claim.checks:
            for system, ref in ((c.system, c.a), *((c.b_system or c.system, b) for b in c.b)):
                if ref.model == "data":
                    out.add((system, ref.loss))
    return out
