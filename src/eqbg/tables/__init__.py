"""The tables of a pipeline run, from the per-run ``metrics.json`` files: the per-system
comparison (Markdown and LaTeX) with published numbers beside ours, the training-set-size and
sampling-speed tables under it, and the headline table across systems.

Layers: :mod:`~eqbg.tables.runs` (metrics as one frame, ``mean ± sem`` cells) <
:mod:`~eqbg.tables.published` < :mod:`~eqbg.tables.speed` < :mod:`~eqbg.tables.system` <
:mod:`~eqbg.tables.headline`.
"""

from __future__ import annotations

from eqbg.tables.headline import headline_counts, headline_table, write_headline_table
from eqbg.tables.published import load_published
from eqbg.tables.runs import SMOKE_NOTE, collect_metrics, mean_sem_table
from eqbg.tables.speed import sampling_speed_table
from eqbg.tables.system import TABLE_METRICS, system_table, training_size_table, write_system_table

__all__ = [
    "SMOKE_NOTE",
    "TABLE_METRICS",
    "collect_metrics",
    "headline_counts",
    "headline_table",
    "load_published",
    "mean_sem_table",
    "sampling_speed_table",
    "system_table",
    "training_size_table",
    "write_headline_table",
    "write_system_table",
]
