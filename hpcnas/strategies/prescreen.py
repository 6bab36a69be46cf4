"""The zero-cost pre-screen, a wrapper around any strategy: propose several, train the most promising.

For each dispatch the inner strategy is asked ``sample`` times; each candidate is scored at initialization
(NASWOT, SynFlow, grad-norm or the parameter count, by a scorer the execution layer supplies: strategies
never touch torch) and the ``keep`` best are proposed, one per ask; the others are dropped.  Each kept
proposal carries its score, and every candidate's score is logged by genotype key, so a resumed search
replays the same choices without scoring again.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from dataclasses import replace
from typing import Callable, Deque, Dict, List, Optional

from hpcnas.space.genotype import Genotype
from hpcnas.strategies.base import Proposal, Strategy, Wrapper


def genotype_key(genotype: Genotype) -> str:
    """A short key of a genotype, stable across processes and Python versions."""
    text = json.dumps(genotype.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class Prescreen(Wrapper):
    """Ask the inner strategy ``sample`` times, propose the ``keep`` best by ``score(genotype)``."""

    def __init__(self, inner: Strategy, score: Callable[[Genotype], float], name: str, sample: int, keep: int):
        super().__init__(inner)
        self.score, self.score_name = score, name
        self.sample, self.keep = sample, min(keep, sample)
        self.known: Dict[str, float] = {}  # genotype key -> score: scored already, or read back from the log
        self.queue: Deque[Proposal] = deque()

    def remember(self, screened: Dict[str, float]) -> None:
        """Scores logged by an earlier run, so replaying its asks costs no scoring."""
        self.known.update(screened)

    def _score(self, genotype: Genotype) -> float:
        key = genotype_key(genotype)
        if key not in self.known:
            self.known[key] = float(self.score(genotype))
        return self.known[key]

    def ask(self) -> Optional[Proposal]:
        if self.queue:
            return self.queue.popleft()
        candidates: List[Proposal] = []
        for _ in range(self.sample):
            proposal = self.inner.ask()
            if proposal is None:
                break
            candidates.append(proposal)
        if not candidates:
            return None
        scored = [(self._score(p.genotype), i, p) for i, p in enumerate(candidates)]
        screened = {genotype_key(p.genotype): s for s, _, p in scored}
        scored.sort(key=lambda t: (-t[0], t[1]))  # best first; ties keep the inner strategy's order
        for rank, (s, _, p) in enumerate(scored[: self.keep]):  # the first carries the screening's log
            self.queue.append(replace(p, scores={self.score_name: s}, screened=screened if rank == 0 else {}))
        return self.queue.popleft()
