"""Discrete search strategies: plain Python with an ask/tell interface, never torch.

A strategy proposes architectures (:meth:`Strategy.ask`) and learns from
finished evaluations (:meth:`Strategy.tell`).  Its randomness comes from one
seeded ``random.Random`` used only in ``ask``, so replaying the same
sequence of asks and tells rebuilds exactly the same state (that is how a
killed search resumes).
"""

from hpcnas.strategies.base import Proposal, Strategy

__all__ = ["Proposal", "Strategy"]
