"""Discrete search strategies: plain Python with an ask/tell interface, never torch.

A strategy proposes architectures (:meth:`Strategy.ask`) and learns from
finished evaluations (:meth:`Strategy.tell`).  Its randomness comes from one
seeded ``random.Random`` used only in ``ask``, so replaying the same
sequence of asks and tells rebuilds exactly the same state (that is how a
killed search resumes).  A strategy is known to ``evolve.strategy.name`` by its
name in :data:`hpcnas.plugins.STRATEGIES`.
"""

from hpcnas.plugins import STRATEGIES
from hpcnas.strategies.base import Generational, Proposal, Strategy

__all__ = ["STRATEGIES", "Generational", "Proposal", "Strategy"]
