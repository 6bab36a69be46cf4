"""Networks: U-Net and UNet++ of cells, the architecture parameters, and the builders.

* U-Net: a stem, ``depth`` encoder cells that halve the resolution, then
  ``depth`` decoder cells, each fed by the encoder skip at its level
  (grand-parent) and the upsampled deeper feature (parent).
* UNet++ (Zhou et al. 2018): two fixed stride-2 stem cells, then the nested
  grid X(i, j): X(i, 0) are encoder (reduction) cells, every other node sums
  its incoming network edges (up from X(i+1, j-1), skips from X(i, k<j)),
  weighted by softmax(beta) in search and kept-path edges after decoding.
* A segmentation head returns logits at input resolution; inputs must be
  divisible by the network's :func:`stride`.

Encoder cells share one set of architecture weights, decoder cells another
(the DARTS convention of one reduction and one normal cell), unless each
level has its own (``space.cells: per_stage``): a cell's *role* says which
weights and which genotype cell it uses (see :class:`Topology`).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from hpcnas.space.cells import CellArch, GraphCell, discrete_edges, make_cell, search_edges
from hpcnas.space.genotype import Genotype
from hpcnas.space.mixed import MixedOp
from hpcnas.space.ops import ReLUConvBN
from hpcnas.space.searchspace import SearchSpace
from hpcnas.space.topology import (
    TOPOLOGIES,
    CellKind,
    GridNode,
    Topology,
    import_target,
    stage_role,
    unetpp_in_edges,
    unetpp_nodes,
)


class ArchParams(nn.Module):
    """Architecture parameters: op weights per cell type, edge weights, UNet++ betas.

    ``mode="simplex"`` (GAEA): each parameter row *is* a probability vector,
    updated by exponentiated gradient.  ``mode="logits"`` (DARTS): parameters
    are logits and the weights are their softmax.
    """

    def __init__(
        self,
        mode: str,
        cells: Dict[str, List[int]],
        op_names: Sequence[str],
        edge_norm: bool,
        betas: Sequence[GridNode] = (),
    ):
        super().__init__()
        self.mode = mode
        self.roles = list(cells)
        self.node_inputs = {role: list(counts) for role, counts in cells.items()}
        self.op_names = tuple(op_names)  # the columns of every op weight row
        self.ops = nn.ParameterDict({role: self._init(sum(counts), len(op_names)) for role, counts in cells.items()})
        self.edges = nn.ParameterDict(
            {f"{role}_{j}": self._init(n) for role, counts in cells.items() for j, n in enumerate(counts)}
            if edge_norm
            else {}
        )
        self.betas = nn.ParameterDict({f"{i}_{j}": self._init(len(unetpp_in_edges((i, j)))) for i, j in betas})
        # role -> edge -> the op weights that edge carries instead of theta's (a decision of perturbation-based
        # selection, or an op removed while it is measured); not a parameter, never checkpointed
        self.fixed_rows: Dict[str, Dict[int, torch.Tensor]] = {}
        # role -> the op its every edge holds, one-hot, whatever theta says: a block left hand-designed by
        # space.searchable auto:K after its warm-up (checkpointed by the search loop)
        self.held: Dict[str, int] = {}

    def _init(self, *shape: int) -> nn.Parameter:
        if self.mode == "simplex":
            return nn.Parameter(torch.full(shape, 1.0 / shape[-1]))
        return nn.Parameter(1e-3 * torch.randn(*shape))

    def weights(self, p: torch.Tensor) -> torch.Tensor:
        """The probability vectors (last dim) a parameter stands for."""
        return p if self.mode == "simplex" else F.softmax(p, dim=-1)

    def cell_arch(self, role: str) -> CellArch:
        """Weights for one forward pass of the cells of type ``role``."""
        edges = None
        if len(self.edges):
            edges = [self.weights(self.edges[f"{role}_{j}"]) for j in range(len(self.node_inputs[role]))]
        ops = self.op_weights(role)
        fixed = self.fixed_rows.get(role)
        if fixed:
            index = torch.tensor(list(fixed), device=ops.device)
            ops = ops.index_put((index,), torch.stack(list(fixed.values())).to(ops))
        return CellArch(ops, edges)

    def op_weights(self, role: str) -> torch.Tensor:
        """The op weights of ``role``'s edges as its cells use them (theta's, or the op a held role holds)."""
        weights = self.weights(self.ops[role])
        if role in self.held:  # no gradient reaches theta's rows of a held role
            return F.one_hot(torch.tensor(self.held[role]), weights.shape[-1]).to(weights).expand_as(weights)
        return weights

    def searched_roles(self) -> List[str]:
        """The roles whose theta is still searched (every role but those :attr:`held`)."""
        return [role for role in self.roles if role not in self.held]

    def beta(self, node: GridNode) -> torch.Tensor:
        """softmax(beta) over the incoming network edges of UNet++ node ``node``."""
        return self.weights(self.betas[f"{node[0]}_{node[1]}"])

    def snapshot(self) -> Dict[str, object]:
        """Plain numpy copies of every probability vector (for decoding and logs)."""
        with torch.no_grad():
            out: Dict[str, object] = {"ops": {r: self.op_weights(r).cpu().numpy() for r in self.ops}}
            out["edges"] = (
                {
                    r: [self.weights(self.edges[f"{r}_{j}"]).cpu().numpy() for j in range(len(c))]
                    for r, c in self.node_inputs.items()
                }
                if len(self.edges)
                else None
            )
            out["betas"] = {
                tuple(int(v) for v in k.split("_")): self.weights(p).cpu().numpy() for k, p in self.betas.items()
            }
        return out

    def entropies(self, normalized: bool = False) -> Dict[str, float]:
        """Mean entropy of the op distributions per searched role, and their mean: in nats, or
        ``normalized`` by ln|O| (1 = uniform, 0 = one op)."""
        with torch.no_grad():
            out = {}
            for role in self.searched_roles():
                p = self.ops[role]
                w = self.weights(p).clamp_min(1e-12)
                scale = math.log(p.shape[-1]) if normalized and p.shape[-1] > 1 else 1.0
                out[role] = float(-(w * w.log()).sum(-1).mean()) / scale
            out["mean"] = sum(out.values()) / len(out)
        return out


class CellFactory:
    """Builds the cells of a network: search cells (mixed ops of a space) or discrete cells (a genotype)."""

    def __init__(
        self,
        kind: CellKind,
        cell_types: Sequence[str],
        space: Optional[SearchSpace] = None,
        partial: int = 1,
        generator=None,
        genotype: Optional[Genotype] = None,
        sampling: str = "shuffle",
    ):
        self.kind, self.cell_types, self.space = kind, tuple(cell_types), space
        self.partial, self.generator, self.genotype, self.sampling = partial, generator, genotype, sampling
        per_stage = genotype.per_stage if genotype is not None else space is not None and space.per_stage
        self.role = stage_role if per_stage else (lambda cell_type, level: cell_type)

    @property
    def search(self) -> bool:
        """Whether the cells hold mixed ops."""
        return self.genotype is None

    def _hand_designed(self, role: str):
        assert self.space is not None  # only a supernet has roles it does not search
        cell = self.space.topology.default_cell(role)
        if cell is None:
            raise KeyError(role)
        return cell

    def __call__(
        self, cell_type: str, level: int, in_channels: Sequence[int], c: int, reduce_prev: bool = False
    ) -> GraphCell:
        """A cell of ``cell_type`` (encoder or decoder) that works at resolution ``level``."""
        reduction = cell_type == self.cell_types[0]
        role = self.role(cell_type, level)
        searched = self.space is not None and role in self.space.roles()
        if self.genotype is None and searched:
            edges = search_edges(self.space, c, reduction, self.partial, self.generator, self.sampling)
        else:  # a genotype's cell, or (in a supernet) a block left hand-designed
            cell_of = self.genotype.cell if self.genotype is not None else self._hand_designed
            edges = discrete_edges(self.kind, cell_of(role), c, reduction)
        cell = make_cell(self.kind, edges, in_channels, c, reduction, reduce_prev, affine=not searched)
        cell.role = role  # which cell type's architecture weights it uses
        return cell


class UNet(nn.Module):
    """U-Net of cells; ``arch`` given means a search network."""

    def __init__(
        self,
        factory: CellFactory,
        in_channels: int,
        num_classes: int,
        channels: int,
        depth: int,
        arch: Optional[ArchParams] = None,
    ):
        super().__init__()
        self.kind, self.arch = factory.kind, arch
        encoder, decoder = factory.cell_types
        two_inputs = (
            self.kind.inputs == 2
        )  # a cell that also reads its grand-parent, at twice the resolution from level 2
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        enc_ch = [channels]
        self.down = nn.ModuleList()
        for level in range(1, depth + 1):
            ins = self.kind.network_inputs([enc_ch[max(level - 2, 0)], enc_ch[level - 1]])
            cell = factory(encoder, level, ins, channels * 2**level, reduce_prev=two_inputs and level >= 2)
            self.down.append(cell)
            enc_ch.append(cell.out_channels)
        self.up = nn.ModuleList()
        prev = enc_ch[-1]
        for level in reversed(range(depth)):
            cell = factory(decoder, level, [enc_ch[level], prev], channels * 2**level)
            self.up.append(cell)
            prev = cell.out_channels
        self.head = nn.Conv2d(prev, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arch = cell_archs(self.arch)
        enc = [self.stem(x)]
        for level, cell in enumerate(self.down, start=1):
            enc.append(cell(self.kind.network_inputs([enc[max(level - 2, 0)], enc[level - 1]]), arch(cell)))
        d = enc[-1]
        for level, cell in zip(reversed(range(len(self.down))), self.up):
            up = F.interpolate(d, size=enc[level].shape[-2:], mode="bilinear", align_corners=False)
            d = cell([enc[level], up], arch(cell))
        return self.head(d)


def cell_archs(arch: Optional[ArchParams]) -> Callable[[GraphCell], Optional[CellArch]]:
    """``arch(cell)``: the weights of one forward pass for ``cell``'s role (None in a discrete network), each
    role's computed once per pass."""
    memo: Dict[str, CellArch] = {}

    def of(cell: GraphCell) -> Optional[CellArch]:
        role = str(cell.role)
        if arch is None or role not in arch.node_inputs:  # a discrete network, or a block not searched
            return None
        if role not in memo:
            memo[role] = arch.cell_arch(role)
        return memo[role]

    return of


class EdgeAdapter(nn.Module):
    """A UNet++ network edge: resample to the target level, then 1x1 to its width."""

    def __init__(self, c_in: int, c_out: int, upsample: bool, affine: bool):
        super().__init__()
        self.upsample = upsample
        self.proj = ReLUConvBN(c_in, c_out, 1, affine=affine)

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.proj(x)


class UNetPlusPlus(nn.Module):
    """Nested UNet++ of cells; in search every edge exists, after decoding only kept-path edges."""

    def __init__(
        self,
        factory: CellFactory,
        in_channels: int,
        num_classes: int,
        channels: int,
        depth: int,
        arch: Optional[ArchParams] = None,
        paths=None,
    ):
        super().__init__()
        self.kind, self.arch, self.depth = factory.kind, arch, depth
        encoder, decoder = factory.cell_types
        half = max(channels // 2, 1)
        self.stem = nn.Sequential(  # two fixed stem cells: 4x smaller
            nn.Conv2d(in_channels, half, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=False),
            nn.Conv2d(half, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        kept_edges = None
        if paths is not None:
            kept_edges = {(a, b) for path in paths for a, b in zip(path, path[1:])}
        self.order: List[GridNode] = []
        self.inputs: Dict[GridNode, List[GridNode]] = {}
        out_ch: Dict[GridNode, int] = {(0, 0): channels}
        self.cells = nn.ModuleDict()
        self.adapters = nn.ModuleDict()
        for node in unetpp_nodes(depth)[1:]:
            srcs = [s for s in unetpp_in_edges(node) if kept_edges is None or (s, node) in kept_edges]
            srcs = [s for s in srcs if s in out_ch]
            if not srcs:
                continue
            i, j = node
            c = channels * 2**i
            if j == 0:
                pp = (max(i - 2, 0), 0)
                ins = self.kind.network_inputs([out_ch[pp], out_ch[(i - 1, 0)]])
                cell = factory(encoder, i, ins, c, reduce_prev=self.kind.inputs == 2 and i >= 2)
            else:
                for s in srcs:
                    self.adapters[_key(s, node)] = EdgeAdapter(out_ch[s], c, upsample=s[0] > i, affine=arch is None)
                ins = [c] * self.kind.inputs
                cell = factory(decoder, i, ins, c)
            self.cells[_key(node)] = cell
            out_ch[node] = cell.out_channels
            self.inputs[node] = srcs
            self.order.append(node)
        self.output = (0, depth)
        if self.output not in out_ch:
            raise ValueError("no kept path reaches the output node")
        self.head = nn.Conv2d(out_ch[self.output], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arch = cell_archs(self.arch)
        states = {(0, 0): self.stem(x)}
        n_in = self.kind.inputs
        for node in self.order:
            i, j = node
            cell = self.cells[_key(node)]
            if j == 0:
                states[node] = cell(
                    self.kind.network_inputs([states[(max(i - 2, 0), 0)], states[(i - 1, 0)]]), arch(cell)
                )
                continue
            size = states[(i, 0)].shape[-2:]
            adapted = [self.adapters[_key(s, node)](states[s], size) for s in self.inputs[node]]
            if self.arch is not None:
                w = self.arch.beta(node)
                agg = sum(wk * a for wk, a in zip(w, adapted))
            else:
                agg = sum(adapted) / len(adapted)
            states[node] = cell([agg] * n_in, arch(cell))
        logits = self.head(states[self.output])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _key(*nodes: GridNode) -> str:
    return "__".join(f"{i}_{j}" for i, j in nodes)


# --------------------------------------------------------------------------
# builders


class SearchNetwork(nn.Module):
    """A supernet: the network of search cells plus its architecture parameters."""

    def __init__(self, net: nn.Module, arch: ArchParams, channel_rng: torch.Generator):
        super().__init__()
        self.net = net
        self.arch = arch
        self.channel_rng = channel_rng

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def set_aux_skip(self, coefficient: float) -> None:
        """DARTS-: the weight of the auxiliary skip on every stride-1 mixed edge (0 turns it off)."""
        for module in self.modules():
            if isinstance(module, MixedOp):
                module.aux_skip = coefficient

    def arch_parameters(self) -> List[nn.Parameter]:
        """theta / alpha, gamma and beta."""
        return list(self.arch.parameters())

    def weight_parameters(self) -> List[nn.Parameter]:
        """Every parameter that is not an architecture parameter."""
        arch_ids = {id(p) for p in self.arch.parameters()}
        return [p for p in self.parameters() if id(p) not in arch_ids]


def build_search_network(
    space: SearchSpace,
    in_channels: int,
    num_classes: int,
    *,
    channels: int,
    partial: int = 1,
    edge_norm: bool = True,
    arch_mode: str = "simplex",
    seed: int = 0,
    sampling: str = "shuffle",
    device: Optional[torch.device] = None,
) -> SearchNetwork:
    """The supernet of a space, with channel sampling seeded by ``seed``.

    The channel generator lives on ``device`` (the CPU by default; a module's ``.to()`` does not move it), so
    that on a GPU each edge draws its permutation there, without a copy from the host and a wait for it.
    """
    for level in range(space.depth + 1):
        if (channels * 2**level) % partial:
            raise ValueError(
                f"channels {channels * 2**level} at level {level} are not divisible by partial_channels={partial}"
            )
    topo = space.topology
    rng = torch.Generator(device=device if device is not None else "cpu").manual_seed(seed)
    factory = CellFactory(space.kind, topo.cell_names, space, partial, rng, sampling=sampling)
    counts = space.node_inputs()
    betas = [n for n in unetpp_nodes(space.depth) if n[1] > 0] if topo.nested else []
    arch = ArchParams(
        arch_mode,
        {role: counts for role in space.roles()},
        space.ops,
        edge_norm and space.kind.edge_normalization,
        betas,
    )
    cls = network_class(topo)
    return SearchNetwork(cls(factory, in_channels, num_classes, channels, space.depth, arch=arch), arch, rng)


def build_discrete_network(
    genotype: Genotype, in_channels: int, num_classes: int, *, channels: int, depth: int
) -> nn.Module:
    """The network of a genotype: only the chosen ops (and, for UNet++, kept paths)."""
    topo = TOPOLOGIES[genotype.topology]
    factory = CellFactory(topo.cell_kind, topo.cell_names, genotype=genotype)
    if topo.nested:
        return UNetPlusPlus(factory, in_channels, num_classes, channels, depth, paths=genotype.paths)
    return network_class(topo)(factory, in_channels, num_classes, channels, depth)


def network_class(topology: Topology) -> type:
    """The torch network a topology names (its ``network``), else the U-Net or UNet++ of cells."""
    if topology.network:
        return import_target(topology.network)
    return UNetPlusPlus if topology.nested else UNet
