"""Which sample indices a rank reads in an epoch (no torch).

The same epoch-seeded permutation is drawn on every rank, padded to a
multiple of the world size, then rank ``r`` takes every ``world``-th index
from ``r``.  So N ranks with per-rank batch b see, step for step, exactly the
samples one rank with batch N*b sees.

Each sample's augmentation has its own seed (:func:`sample_seed`), drawn from
the epoch, its position in the padded order and its index: the same with any
number of ranks or DataLoader workers, and after a resume.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np


def shard_indices(
    count: int, rank: int = 0, world: int = 1, epoch: int = 0, seed: int = 0, shuffle: bool = True
) -> List[int]:
    """The indices rank ``rank`` of ``world`` reads in ``epoch``."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world of size {world}")
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(count)
    else:
        order = np.arange(count)
    if count and count % world:
        order = np.concatenate([order, order[: world - count % world]])
    return order[rank::world].tolist()


def sample_seed(seed: int, epoch: int, position: int, index: int) -> int:
    """The augmentation seed of the sample ``index`` at ``position`` of ``epoch``'s padded order."""
    return int(np.random.SeedSequence([seed, epoch, position, index]).generate_state(1)[0])


def shard_keys(
    count: int, rank: int = 0, world: int = 1, epoch: int = 0, seed: int = 0, shuffle: bool = True
) -> List[Tuple[int, int]]:
    """``(index, augmentation seed)`` of every sample rank ``rank`` of ``world`` reads in ``epoch``."""
    indices = shard_indices(count, rank, world, epoch, seed, shuffle)
    return [(k, sample_seed(seed, epoch, rank + world * j, k)) for j, k in enumerate(indices)]
