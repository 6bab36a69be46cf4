"""Whether a search's architecture learned anything, read off its metrics lines (for the log and the report).

A theta whose op distributions end near uniform was hardly moved by its steps: the decode then picks among
near-ties, and the genotype says more about the tie-breaking than about the data.
"""

from __future__ import annotations

from typing import Iterable, Optional

UNMOVED_ENTROPY = 0.98  # mean edge entropy / ln|O| at or above which theta counts as unmoved


def unmoved_theta(records: Iterable[dict]) -> Optional[str]:
    """A sentence naming the problem and its fix when a supernet search's theta ended at or above
    :data:`UNMOVED_ENTROPY` of uniform; ``None`` when it moved, or when ``records`` are not a search's."""
    searched = [r for r in records if r.get("entropy_normalized")]
    if not searched:
        return None
    entropy = searched[-1]["entropy_normalized"]["mean"]
    if entropy < UNMOVED_ENTROPY:
        return None
    steps = sum(r.get("steps", 0) for r in searched if r.get("arch_updates"))
    movement = searched[-1].get("arch_movement")
    lr = searched[-1].get("arch_lr")
    if movement:
        step = f"search.arch_movement {movement:g}"
        larger = f"e.g. search.arch_movement={2 * movement:g}"
    else:
        step = f"search.arch_lr {lr:g}" if lr else "its search.arch_lr"
        larger = f"e.g. search.arch_lr={10 * lr:g}" if lr else "a larger search.arch_lr"
    return (
        f"theta learned nothing: its mean edge entropy ended at {entropy:.3f} of uniform (>= {UNMOVED_ENTROPY}) "
        f"after {steps} architecture steps with {step}, so the decoded genotype picks among near-ties; "
        f"give theta a larger step ({larger}) or more steps (more search.epochs, an earlier search.arch_start_epoch)"
    )
