"""Which sample indices a rank reads in an epoch (no torch).

The same epoch-seeded permutation is drawn on every rank, padded to a
multiple of the world size, then rank ``r`` takes every ``world``-th index
from ``r``.  So N ranks with per-rank batch b see, step for step, exactly the
samples one rank with batch N*b sees.
"""

from __future__ import annotations

from typing import List

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
