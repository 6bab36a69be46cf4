"""Discrete search strategies: plain Python with an ask/tell interface, never torch.

A strategy proposes architectures (:meth:`Strategy.ask`) and learns from
finished evaluations (:meth:`Strategy.tell`).  Its randomness comes from one
seeded ``random.Random`` used only in ``ask``, so replaying the same
sequence of asks and tells rebuilds exactly the same state (that is how a
killed search resumes).  A strategy is known to ``evolve.strategy.name`` by the
name it registers with :func:`register`.
"""

from hpcnas.strategies import evolution, nsga2, random, random_exploit  # noqa: F401 - importing registers them
from hpcnas.strategies.base import STRATEGIES, Generational, Proposal, Strategy, register, strategy_class

__all__ = ["STRATEGIES", "Generational", "Proposal", "Strategy", "register", "strategy_class"]
