"""Shared test set-up."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# The suite runs on one pytest-xdist worker per core, one test file per work unit (pyproject's
# addopts: `-n auto --dist loadfile --no-loadscope-reorder`; xdist's default reorder would sort
# files by their number of tests). A worker takes the next file when it finishes one, so the
# longest files go first: started last, any of them leaves the other core idle for minutes.
# Seconds on 2 cores, measured 2026-12-04 (`pytest --durations`).
LONGEST_FILES = {
    "test_slurm.py": 250,
    "test_smoke_presets.py": 215,
    "test_crash.py": 180,
    "test_pipeline.py": 175,
    "test_flows.py": 90,
    "test_eacf.py": 65,
    "test_fab.py": 55,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest files first, stable within and after them (xdist's loadfile keeps the order)."""
    items.sort(key=lambda item: -LONGEST_FILES.get(Path(str(item.path)).name, 0))


@pytest.fixture(autouse=True)
def _one_thread():
    """The tests use small tensors on a shared 2-core machine, where intra-op threads only add
    contention (measured ~100x slower per EGNN call with 2 threads while other processes use the
    cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
