"""Decoding a discrete genotype from architecture weights (numpy only, no torch).

* An edge's op is the argmax of its weights, never ``none`` / ``cut``
  (eq. 6); with edge normalization its strength is alpha * gamma (eq. 9).
* A DARTS node keeps its K strongest input edges (eq. 12, K = 2).
* A ResNeXt node keeps its single edge with its best op.
* UNet++: every input -> output path is scored by its average
  log-likelihood under the betas; keep the paths scoring >= mu + 3 sigma
  (eq. 13; at least the best one) or a fixed K, or the single Viterbi path
  (Auto-DeepLab).
* ``max_skips`` (P-DARTS): while the decoder cell holds more skip
  connections than that, the weakest kept skip edge has its skip op masked
  and the cell is decoded again.  ``max_parameter_free`` does the same for
  every op without weights (skips and pooling), as a fraction of the edges.

Ties are broken deterministically: the earlier op in the op set, the lower
input index, the earlier path in enumeration order.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from hpcnas.space.genotype import Genotype
from hpcnas.space.searchspace import SearchSpace
from hpcnas.space.topology import (
    Cell,
    GridNode,
    Path_,
    parameter_free_ops,
    skip_ops,
    unetpp_in_edges,
    unetpp_nodes,
    zero_ops,
)


def best_op(weights: np.ndarray, op_names: Sequence[str], banned: frozenset = frozenset()) -> Tuple[int, float]:
    """(index, weight) of the strongest op that is neither zero nor ``banned``; the first one wins a tie."""
    excluded = zero_ops(op_names) | banned
    allowed = np.array([name not in excluded for name in op_names])
    masked = np.where(allowed, weights, -np.inf)
    k = int(np.argmax(masked))
    return k, float(weights[k])


def decode_cell(
    space: SearchSpace,
    op_weights: np.ndarray,
    edge_weights: Optional[Sequence[np.ndarray]] = None,
    max_skips: Optional[int] = None,
    max_parameter_free: Optional[float] = None,
) -> Cell:
    """One cell's ``(op, input)`` pairs from its (edges, |O|) op weights in edge order.

    ``max_skips`` caps the skip connections kept (a count), ``max_parameter_free`` the
    parameter-free ops (skips and pooling: a fraction of the kept edges); while a cap is
    exceeded, the weakest offending kept edge loses those ops and the cell is decoded again.
    """
    caps = []
    if max_skips is not None:
        caps.append((skip_ops(space.ops), max_skips))
    if max_parameter_free is not None:
        kept_edges = sum(min(count, space.kept_per_node()) for count in space.node_inputs())
        caps.append((parameter_free_ops(space.ops), int(max_parameter_free * kept_edges + 1e-9)))
    banned: Dict[int, frozenset] = {}  # edge index -> ops a cap has masked on it
    while True:
        cell, kept = _decode_cell_once(space, op_weights, edge_weights, banned)
        for ops, limit in caps:
            offending = [(edge, op) for edge, op, name in kept if name in ops]
            if len(offending) > limit:
                weakest = min(offending, key=lambda eo: (op_weights[eo[0]][eo[1]], -eo[0]))
                banned[weakest[0]] = banned.get(weakest[0], frozenset()) | ops
                break
        else:
            return cell


def _decode_cell_once(space: SearchSpace, op_weights, edge_weights, banned):
    """The cell, and its kept edges as ``(edge index, op index, op name)``."""
    op_names = space.ops
    nodes, kept_edges = [], []
    e = 0
    for j in range(space.node_count()):
        candidates = []
        sources = space.sources(j)
        for k, source in enumerate(sources):
            op, strength = best_op(op_weights[e + k], op_names, banned.get(e + k, frozenset()))
            if edge_weights is not None:
                strength *= float(edge_weights[j][k])
            candidates.append((strength, source, op_names[op], e + k, op))
        e += len(sources)
        keep = sorted(candidates, key=lambda c: (-c[0], c[1]))[: space.kept_per_node()]
        kept_edges += [(edge, op, name) for _, _, name, edge, op in keep]
        nodes.append(tuple((name, source) for _, source, name, _, _ in sorted(keep, key=lambda c: c[1])))
    return tuple(nodes), kept_edges


def path_log_likelihoods(betas: Dict[GridNode, np.ndarray], paths: Sequence[Path_]) -> np.ndarray:
    """Average log-probability of the network edges of each path.

    The encoder edges X(i-1, 0) -> X(i, 0) are each node's only input, so they
    have no beta: they count as log 1 = 0, a certain edge.  Every path runs
    down the encoder, so counting them (rather than leaving them out of the
    average) dilutes the decoder scores of deep and shallow paths alike by
    their encoder length; the convention is this code's choice, the paper
    does not say.
    """
    scores = []
    for path in paths:
        logs = []
        for src, dst in zip(path, path[1:]):
            if dst in betas:
                logs.append(float(np.log(max(betas[dst][unetpp_in_edges(dst).index(src)], 1e-12))))
            else:
                logs.append(0.0)
        scores.append(float(np.mean(logs)) if logs else 0.0)
    return np.asarray(scores)


def select_paths(scores: np.ndarray, k: Union[str, int] = "auto") -> List[int]:
    """Indices of kept paths: ``score >= mu + 3 sigma`` (at least the best) or the ``k`` best."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    if k == "auto":
        threshold = scores.mean() + 3 * scores.std()
        chosen = [i for i in order if scores[i] >= threshold - 1e-12]
        return sorted(chosen or order[:1])
    return sorted(order[: int(k)])


def viterbi_path(betas: Dict[GridNode, np.ndarray], depth: int) -> Path_:
    """The single most likely path (maximum summed log-probability), Auto-DeepLab style."""
    best: Dict[GridNode, Tuple[float, Path_]] = {(0, 0): (0.0, ((0, 0),))}
    for node in unetpp_nodes(depth)[1:]:
        options = []
        for k, src in enumerate(unetpp_in_edges(node)):
            if src in best:
                logp = float(np.log(max(betas[node][k], 1e-12))) if node in betas else 0.0
                score, trail = best[src]
                options.append((score + logp, trail + (node,)))
        if options:  # max score; on a tie the earliest source in edge order
            best[node] = max(options, key=lambda o: o[0])
    return best[(0, depth)][1]


def decode_genotype(
    space: SearchSpace,
    snapshot: Dict,
    *,
    paths: Union[str, int] = "auto",
    path_decoder: str = "multipath",
    max_skips: Optional[int] = None,
    max_parameter_free: Optional[float] = None,
    max_parameter_free_other: Optional[float] = None,
) -> Genotype:
    """A genotype of ``space`` from an :meth:`ArchParams.snapshot`.

    ``max_skips`` and ``max_parameter_free`` cap each decoder (normal) cell; ``max_parameter_free_other``
    caps every other cell (the reduction cells) on its own; per-stage cells are capped one by one."""
    topo = space.topology
    cells = []
    for role in space.roles():
        edges = snapshot["edges"][role] if snapshot.get("edges") else None
        decoder = topo.is_decoder(role)  # the caps apply to the normal (decoder) cells, as in P-DARTS
        capped = space.kind.capped
        cells.append(
            (
                role,
                decode_cell(
                    space,
                    snapshot["ops"][role],
                    edges,
                    max_skips if decoder and capped else None,
                    (max_parameter_free if decoder else max_parameter_free_other) if capped else None,
                ),
            )
        )
    kept: Optional[Tuple[Path_, ...]] = None
    if topo.nested:
        if path_decoder == "viterbi":
            kept = (viterbi_path(snapshot["betas"], space.depth),)
        else:
            every = space.paths()
            scores = path_log_likelihoods(snapshot["betas"], every)
            kept = tuple(sorted(every[i] for i in select_paths(scores, paths)))
    return Genotype(topo.name, space.op_set, tuple(cells), kept)


def decode_configured(cfg, snapshot: Dict) -> Genotype:
    """The genotype an :meth:`ArchParams.snapshot` stands for under a run's configuration (space + decode rules)."""
    d = cfg.search.decode
    return decode_genotype(
        SearchSpace.from_config(cfg),
        snapshot,
        paths=d.paths,
        path_decoder=d.path_decoder,
        max_skips=d.max_skips,
        max_parameter_free=d.max_parameter_free,
        max_parameter_free_other=d.max_parameter_free_reduction,
    )


def snapshot_from_json(raw: Dict) -> Dict:
    """The snapshot a search's ``arch.json`` holds, as numpy arrays again (to decode it with other rules)."""
    edges = raw.get("edges")
    return {
        "ops": {role: np.asarray(w) for role, w in raw["ops"].items()},
        "edges": {role: [np.asarray(e) for e in es] for role, es in edges.items()} if edges else None,
        "betas": {tuple(int(v) for v in key.split(",")): np.asarray(b) for key, b in raw.get("betas", {}).items()},
    }


def darts_plus_stops(genotype: Genotype, epoch: int, arch_start_epoch: int, limit: Optional[int]) -> bool:
    """DARTS+'s criterion: after epoch ``epoch`` (counted from 1), an epoch with architecture steps,
    the decoded decoder cell holds ``limit`` skips or more (``limit=None``: never)."""
    return limit is not None and epoch >= arch_start_epoch and genotype.skip_count() >= limit
