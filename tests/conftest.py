"""Shared test set-up."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The tests use small tensors on a shared 2-core machine, where intra-op threads only add
    contention (measured ~100x slower per EGNN call with 2 threads while other processes use the
    cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
