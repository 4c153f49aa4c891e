"""What each paper found, checked against a run: claims as predicates over the metrics of named
runs (``workflow/resources/claims.yaml``), each with an interval and a verdict.

Layers: :mod:`~eqbg.claims.spec` (the claims file), :mod:`~eqbg.claims.estimates` (a metric of
a run with its bootstrap replicates), :mod:`~eqbg.claims.verdicts` (predicates, intervals,
verdicts), :mod:`~eqbg.claims.table` (every claim over a run folder tree, written as tables).
It reads run folders and data; nothing below it imports it.
"""

from eqbg.claims.estimates import Estimate, RunData, estimate
from eqbg.claims.spec import Check, Claim, load_claims
from eqbg.claims.table import claims_table, write_claims
from eqbg.claims.verdicts import VERDICTS, CheckResult, combine, judge

__all__ = [
    "Check", "CheckResult", "Claim", "Estimate", "RunData", "VERDICTS", "claims_table", "combine",
    "estimate", "judge", "load_claims", "write_claims",
]
