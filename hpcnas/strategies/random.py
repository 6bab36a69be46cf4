"""Random search: every node's op (and input) drawn uniformly with replacement (paper section 5.4)."""

from __future__ import annotations

from typing import Optional

from hpcnas.strategies.base import Proposal, Strategy


class RandomSearch(Strategy):
    """Independent uniform samples; results change nothing."""

    name = "random"

    def ask(self) -> Optional[Proposal]:
        return Proposal(self.fresh(lambda: self.space.sample(self.rng)))
