"""Chain-aware splits of reference data: whole MCMC chains or disjoint MD time blocks per split,
and the checks that no chain and no configuration is shared between splits."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import numpy as np

from eqbg.data.settings import SPLITS

__all__ = ["assign_chains", "check_disjoint", "duplicate_fraction", "md_split_blocks"]


def assign_chains(n_chains: int, sizes: Mapping[str, int], generator: np.random.Generator) -> dict[str, np.ndarray]:
    """Assign whole chains to splits (at least one chain each), minimising the samples needed
    per chain, ``max_s ceil(size_s / chains_s)`` (D'Hondt allocation: each further chain goes to
    the split with the most samples per chain so far). Which chain goes where is random.

    Returns:
        ``{split: sorted chain indices}``; the index sets are disjoint and cover ``range(n_chains)``.
    """
    if n_chains < len(SPLITS):
        raise ValueError(f"n_chains={n_chains} too small for {len(SPLITS)} splits")
    counts = {s: 1 for s in SPLITS}
    for _ in range(n_chains - len(SPLITS)):
        best = max(SPLITS, key=lambda s: sizes[s] / counts[s])
        counts[best] += 1
    perm = generator.permutation(n_chains)
    out, start = {}, 0
    for s in SPLITS:
        out[s] = np.sort(perm[start : start + counts[s]])
        start += counts[s]
    return out


def check_disjoint(chains: Mapping[str, np.ndarray], data: Mapping[str, np.ndarray]) -> None:
    """Assert that no chain and no configuration (bytewise) is shared between splits.

    Raises:
        AssertionError: naming the splits and the shared item.
    """
    names = list(chains)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = np.intersect1d(chains[a], chains[b])
            if len(shared):
                raise AssertionError(f"splits {a} and {b} share chains {shared[:10].tolist()}")
    hashes = {s: {hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in data[s]} for s in data}
    names = list(data)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = hashes[a] & hashes[b]
            if both:
                raise AssertionError(f"splits {a} and {b} share {len(both)} identical configurations")


def duplicate_fraction(x: np.ndarray) -> float:
    n = len(x)
    if n == 0:
        return 0.0
    uniq = len({hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in x})
    return 1.0 - uniq / n


def md_split_blocks(
    sizes: Mapping[str, int], n_trajectories: int, cycles: int, gap: int
) -> dict[str, list[list[int]]]:
    """Frame ranges of each split in every MD trajectory: ``cycles`` repetitions of
    ``[train][gap][val][gap][test][gap]`` (the last gap dropped).

    Contiguous blocks (``cycles`` 1) put each slow excursion (alanine dipeptide's phi > 0 basin
    lives for ~100 ps) into one split only, so the splits disagree on its population; cycling
    the blocks gives every split a share of every stretch of the trajectory, while the gaps keep
    them decorrelated (no frame is shared, neighbours are ``gap`` frames apart).

    Args:
        sizes: frames per split, summed over trajectories.
        n_trajectories: trajectories the frames are spread over.
        cycles: block cycles per trajectory (>= 1).
        gap: frames skipped after each block.

    Returns:
        split -> list of ``[start, stop)`` frame ranges, the same in every trajectory; the
        ranges of a split hold at least ``ceil(sizes[split] / n_trajectories)`` frames.
    """
    if cycles < 1 or n_trajectories < 1 or gap < 0:
        raise ValueError(f"need cycles >= 1, n_trajectories >= 1, gap >= 0; got {cycles}, {n_trajectories}, {gap}")
    per = {k: math.ceil(sizes[k] / (n_trajectories * cycles)) for k in SPLITS}
    blocks: dict[str, list[list[int]]] = {k: [] for k in SPLITS}
    t = 0
    for _ in range(cycles):
        for k in SPLITS:
            blocks[k].append([t, t + per[k]])
            t += per[k] + gap
    return blocks
