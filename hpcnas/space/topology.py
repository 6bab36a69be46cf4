"""The vocabulary of the search spaces (no torch): op sets, cell kinds, topologies, the UNet++ grid.

A cell kind carries every rule that tells one kind of cell from another, so
that networks, decoding, genotype checks, drawings and strategies ask it
instead of branching on the kind's name.  A new kind of cell is a new
:class:`CellKind` subclass (plus its torch module, registered in
:data:`hpcnas.plugins.CELL_MODULES` under the kind's name).

Input indices inside a cell: a cell's inputs come first (a DARTS cell has 2,
grand-parent and parent; a ResNeXt cell 1), then node ``j`` is index
``j + inputs``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple, Union

from hpcnas.errors import UserError, unknown_name
from hpcnas.plugins import OP_SETS, OPS, TOPOLOGIES, import_target  # noqa: F401 - re-exported: this vocabulary

# the op sets and topologies a config names are registered in hpcnas.plugins (OP_SETS, TOPOLOGIES), and the
# ops below in OPS
O_BASE: Tuple[str, ...] = (
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "avg_pool_3x3",
    "max_pool_3x3",
    "skip_connect",
    "none",
)
O_LARGE: Tuple[str, ...] = (
    "conv2d_1",
    "conv2d_2",
    "conv2d_3",
    "depthconv2d_1",
    "depthconv2d_2",
    "depthconv2d_3",
    "splitconv2d_1",
    "splitconv2d_2",
    "splitconv2d_3",
    "skip",
    "cut",
)


@dataclass(frozen=True)
class Op:
    """A candidate operation: the name genotypes store, what kind of op it is, and how its module is built.

    ``build(channels, stride, affine)`` returns a torch module mapping C channels to C channels with stride 1
    or 2; it is a callable, or ``"package.module:function"`` imported only when a network is built (so the
    vocabulary, decoding and the strategies stay torch-free).  A new op is one call,
    ``OPS.add(name, Op(name, build))``, plus an op set (``OP_SETS.add``) that names it.
    """

    name: str
    build: Union[str, Callable[..., Any]]
    weighted: bool = True  # False: no weights (skips, pooling, zero); what a parameter-free cap counts
    skip: bool = False  # an identity at stride 1: what a skip cap counts
    zero: bool = False  # the "none" of a mixed op: never decoded, never sampled
    rescaled: bool = False  # a BatchNorm follows it inside a mixed op, to match the convolutions' scale (DARTS)
    settings: Tuple[Any, ...] = ()  # passed to ``build`` after (channels, stride, affine): one builder, many ops
    strides: Tuple[int, ...] = (1, 2)  # the strides it is built at (a block of a hand-designed network: 1 only)

    def module(self, channels: int, stride: int, affine: bool) -> Any:
        """The op's torch module for ``channels`` channels at ``stride``."""
        build = import_target(self.build) if isinstance(self.build, str) else self.build
        return build(channels, stride, affine, *self.settings)


def _register_builtin_ops() -> None:
    free = {"weighted": False}
    kinds: Dict[str, Dict[str, Any]] = {
        "none": {**free, "zero": True},
        "cut": {**free, "zero": True},
        "skip_connect": {**free, "skip": True},
        "skip": {**free, "skip": True},
        "avg_pool_3x3": {**free, "rescaled": True},
        "max_pool_3x3": {**free, "rescaled": True},
    }
    for name in dict.fromkeys(O_BASE + O_LARGE):
        OPS.add(name, Op(name, f"hpcnas.space.ops:{name}", **kinds.get(name, {})))


_register_builtin_ops()

# The block variants of a searchable ResNet-UNet (each maps C to C channels at stride 1; "w" scales the inner
# width: the expansion of the IR-NAS row of the search spaces).  plain_3x3 is the hand-designed decoder's
# conv-BN-ReLU, basic_3x3_w1 the hand-designed encoder's ResNet block, identity the hand-designed skip.
BLOCK_VARIANTS: Tuple[str, ...] = ("basic", "bottleneck", "separable", "dilated")
BLOCK_KERNELS: Tuple[int, ...] = (3, 5)
BLOCK_WIDTHS: Tuple[float, ...] = (0.5, 1.0, 1.5)


def _block_name(variant: str, kernel: int, width: float) -> str:
    return f"{variant}_{kernel}x{kernel}_w{width:g}"


def _register_block_ops() -> None:
    def add(name: str, builder: str, *settings: Any, **kind: bool) -> None:
        OPS.add(name, Op(name, f"hpcnas.space.blocks:{builder}", settings=settings, strides=(1,), **kind))

    add("identity", "identity", weighted=False, skip=True)
    for kernel in BLOCK_KERNELS:
        add(f"plain_{kernel}x{kernel}", "plain", kernel)
    for variant in BLOCK_VARIANTS:
        for kernel in BLOCK_KERNELS:
            for width in BLOCK_WIDTHS:
                add(_block_name(variant, kernel, width), variant, kernel, width)


_register_block_ops()
O_BLOCKS: Tuple[str, ...] = (
    ("identity",)
    + tuple(f"plain_{k}x{k}" for k in BLOCK_KERNELS)
    + tuple(_block_name(v, k, w) for v in BLOCK_VARIANTS for k in BLOCK_KERNELS for w in BLOCK_WIDTHS)
)


def zero_ops(names: Sequence[str]) -> FrozenSet[str]:
    """Those of ``names`` that are zero ops."""
    return frozenset(name for name in names if OPS[name].zero)


def skip_ops(names: Sequence[str]) -> FrozenSet[str]:
    """Those of ``names`` that are skips."""
    return frozenset(name for name in names if OPS[name].skip)


def parameter_free_ops(names: Sequence[str]) -> FrozenSet[str]:
    """Those of ``names`` that have no weights and are not zero (skips, pooling): what a collapsed DARTS cell is
    made of (they win the softmax early)."""
    return frozenset(name for name in names if not OPS[name].weighted and not OPS[name].zero)


Pair = Tuple[str, int]
Cell = Tuple[Tuple[Pair, ...], ...]
GridNode = Tuple[int, int]
Path_ = Tuple[GridNode, ...]


@dataclass(frozen=True)
class CellShape:
    """The configured size of a cell: what the kinds' rules depend on."""

    nodes: int = 4  # DARTS: intermediate nodes
    towers: int = 4  # ResNeXt: parallel towers
    tower_depth: int = 2  # ResNeXt: nodes per tower
    edges_per_node: int = 2  # DARTS: input edges a decoded node keeps (K of eq. 12)


class CellKind:
    """The rules of one kind of cell; subclasses say what differs."""

    name = ""
    inputs = 1  # cell inputs before the first node
    concatenates = False  # output: the concatenation of every node (else the sum of the nodes nothing reads)
    residual = False  # whether the cell's input is added to that output (a residual block: ResNeXt)
    edge_normalization = False  # whether eq. 8's edge weights apply
    free_inputs = False  # whether a node chooses its inputs (mutable, decoded) or has fixed ones
    size_keys = ""  # the config keys that set the node count, for error messages
    reduces = True  # whether the encoder cells halve the resolution themselves (their input edges are strided)
    capped = True  # whether decoding's skip and parameter-free caps apply (they fight DARTS' collapse)

    def node_count(self, shape: CellShape) -> int:
        """Intermediate nodes per cell."""
        raise NotImplementedError

    def sources(self, shape: CellShape, node: int) -> List[int]:
        """The states node ``node`` may read (the edges of a search cell)."""
        raise NotImplementedError

    def kept_per_node(self, shape: CellShape) -> int:
        """Input edges a discrete node keeps."""
        raise NotImplementedError

    def node_inputs(self, shape: CellShape) -> List[int]:
        """The number of search edges of every node, in node order."""
        return [len(self.sources(shape, j)) for j in range(self.node_count(shape))]

    def network_inputs(self, states: Sequence) -> list:
        """Of the states (grand-parent, parent), the ones a cell of this kind takes."""
        return list(states[-self.inputs :])

    def problem(self, cell: Cell, shape: CellShape) -> "Tuple[int, str] | None":
        """``(node, message)`` of the first way a cell breaks this kind's structure, else ``None``."""
        for j, node in enumerate(cell):
            sources = self.sources(shape, j)
            for _, inp in node:
                if inp not in sources:
                    return j, f"input {inp} breaks the {self.name} cell structure (expected one of {sources})"
        return None


class DartsKind(CellKind):
    """The DARTS cell: every node reads any earlier state and keeps its K strongest edges."""

    name = "darts"
    inputs = 2
    concatenates = True
    edge_normalization = True
    free_inputs = True
    size_keys = "space.nodes"

    def node_count(self, shape: CellShape) -> int:
        return shape.nodes

    def sources(self, shape: CellShape, node: int) -> List[int]:
        return list(range(node + self.inputs))

    def kept_per_node(self, shape: CellShape) -> int:
        return shape.edges_per_node


class ResNeXtKind(CellKind):
    """The ResNeXt-like cell: parallel towers, every node fed by its tower's previous node."""

    name = "resnext"
    inputs = 1
    residual = True
    size_keys = "space.towers * space.tower_depth"

    def node_count(self, shape: CellShape) -> int:
        return shape.towers * shape.tower_depth

    def sources(self, shape: CellShape, node: int) -> List[int]:
        return [0 if node % shape.tower_depth == 0 else node]  # node j has index j + 1, its predecessor index j

    def kept_per_node(self, shape: CellShape) -> int:
        return 1


class BlockKind(CellKind):
    """A choice point of a hand-designed network: one block, applied to the block's input.

    The network around it does the downsampling, so no edge is strided; the caps do not apply, because the
    hand-designed network's own blocks include the identity (a plain skip connection)."""

    name = "block"
    inputs = 1
    size_keys = "(one block per choice point)"
    reduces = False
    capped = False

    def node_count(self, shape: CellShape) -> int:
        return 1

    def sources(self, shape: CellShape, node: int) -> List[int]:
        return [0]

    def kept_per_node(self, shape: CellShape) -> int:
        return 1


CELL_KINDS: Dict[str, CellKind] = {kind.name: kind for kind in (DartsKind(), ResNeXtKind(), BlockKind())}


@dataclass(frozen=True)
class Topology:
    """Network structure + cell structure + default op set.

    A *role* names the cells that share one set of architecture weights and one genotype cell.  Shared cells
    (the DARTS convention): one role per cell type, ``"reduce"`` and ``"normal"``.  Per-stage cells: one role
    per cell type and resolution level, ``"reduce@1"`` .. ``"reduce@D"`` for the encoder cells that make level
    1..D, ``"normal@0"`` .. ``"normal@D-1"`` for the decoder cells at level 0..D-1 (UNet++: every decoder cell
    of grid row i is at level i).
    """

    name: str
    cell_kind: CellKind
    cell_names: Tuple[str, str]  # (encoder cell type, decoder cell type)
    op_set: str
    nested: bool  # UNet++ (paths decoded) or U-Net
    network: str = ""  # "module:Class" of the torch network; empty: the U-Net (or UNet++) of cells

    @property
    def cell_types(self) -> Tuple[str, ...]:
        """Every type of cell (of choice point) the network has, encoder first."""
        return tuple(self.cell_names)

    def stride(self, depth: int) -> int:
        """Input sizes must be multiples of this."""
        return 2**depth * (4 if self.nested else 1)

    def levels(self, cell_type: str, depth: int) -> range:
        """The resolution levels the cells of ``cell_type`` work at: 1..depth (encoder), 0..depth-1 (others)."""
        return range(1, depth + 1) if cell_type == self.cell_names[0] else range(depth)

    def roles(self, depth: int, per_stage: bool, searchable: Optional[Sequence[str]] = None) -> Tuple[str, ...]:
        """Every role of a network of ``depth`` levels, encoder first; of the cell types ``searchable`` only,
        when given (those of a topology with hand-designed :meth:`default_cell` s)."""
        types = [t for t in self.cell_types if searchable is None or t in searchable]
        if not per_stage:
            return tuple(types)
        return tuple(stage_role(t, level) for t in types for level in self.levels(t, depth))

    def is_decoder(self, role: str) -> bool:
        """Whether ``role`` names decoder (normal, up) cells."""
        return split_role(role)[0] == self.cell_names[1]

    def depth_of(self, role: str) -> int:
        """The least network depth that has a per-stage ``role``."""
        cell_type, level = split_role(role)
        return (level or 0) + (cell_type != self.cell_names[0])

    def default_cell(self, role: str) -> Optional[Cell]:
        """The hand-designed cell of ``role``, which a genotype may then leave out; None: every role is searched."""
        return None

    def check_candidates(self, op_set: str, source: Optional[str] = None) -> None:
        """A :class:`UserError` when ``op_set`` cannot stand for this topology's cells (its hand-designed ops
        missing, so the searched network could not even be the hand-designed one)."""
        missing = [op for op in dict.fromkeys(op for op, _ in self.hand_designed_ops()) if op not in OP_SETS[op_set]]
        if missing:
            raise UserError(
                f"op set '{op_set}' lacks {self.name}'s hand-designed op(s) {', '.join(missing)}: use {self.op_set} "
                f"(space.op_set: null) or an op set that holds them",
                source=source,
                key="space.op_set",
            )

    def hand_designed_ops(self) -> List[Tuple[str, str]]:
        """``(op, cell type)`` of every cell type with a hand-designed op."""
        return [(cell[0][0][0], t) for t in self.cell_types if (cell := self.default_cell(t)) is not None]

    def check_searchable(self, searchable: "Sequence[str] | str | None", source: Optional[str] = None) -> None:
        """A :class:`UserError` when ``space.searchable`` names no cell type, or one this topology lacks, or is a
        string other than ``auto:K``, or this topology has no hand-designed cells to fall back on."""
        if searchable is None:
            return
        key = "space.searchable"
        if self.default_cell(self.cell_types[0]) is None:
            raise UserError(
                f"{self.name} searches every cell; space.searchable applies to a topology with hand-designed "
                f"blocks (resnet_unet)",
                source=source,
                key=key,
            )
        if isinstance(searchable, str):
            auto_blocks(searchable, source)
            return
        if not searchable:
            raise UserError(f"names no block group (known: {', '.join(self.cell_types)})", source=source, key=key)
        for name in searchable:
            if name not in self.cell_types:
                raise UserError(unknown_name("block group", name, self.cell_types), source=source, key=key)


def auto_blocks(searchable: "Sequence[str] | str | None", source: Optional[str] = None) -> Optional[int]:
    """K of ``space.searchable: auto:K`` (a warm-up picks the K blocks searched); None for a list of groups."""
    if not isinstance(searchable, str):
        return None
    match = re.fullmatch(r"auto:(\d+)", searchable.strip())
    if match is None or int(match.group(1)) < 1:
        raise UserError(
            f"expected a list of block groups or auto:K (K >= 1 blocks, picked by a warm-up), got {searchable!r}",
            source=source,
            key="space.searchable",
        )
    return int(match.group(1))


@dataclass(frozen=True)
class BlockTopology(Topology):
    """A hand-designed network whose blocks are choice points (NNI's ``LayerChoice``): each cell type is a group
    of blocks with a hand-designed default op; ``space.searchable`` picks the groups searched, and a genotype
    lists only those (a block it leaves out is the hand-designed one)."""

    groups: Tuple[Tuple[str, str], ...] = ()  # (cell type, its hand-designed op), encoder first

    @property
    def cell_types(self) -> Tuple[str, ...]:
        return tuple(group for group, _ in self.groups)

    def default_cell(self, role: str) -> Optional[Cell]:
        op = dict(self.groups)[split_role(role)[0]]
        return (((op, 0),),)


def stage_role(cell_type: str, level: int) -> str:
    """The role of the cells of ``cell_type`` at resolution ``level`` when every stage has its own cell."""
    return f"{cell_type}@{level}"


def split_role(role: str) -> Tuple[str, Optional[int]]:
    """``(cell type, level)`` of a role; the level is None for a shared role."""
    cell_type, at, level = role.partition("@")
    return cell_type, (int(level) if at and level.isdigit() else None)


# registered in hpcnas.plugins.TOPOLOGIES
DARTS_UNET = Topology("darts_unet", CELL_KINDS["darts"], ("reduce", "normal"), "O_base", nested=False)
DARTS_UNETPP = Topology("darts_unetpp", CELL_KINDS["darts"], ("reduce", "normal"), "O_base", nested=True)
RESNEXT_UNET = Topology("resnext_unet", CELL_KINDS["resnext"], ("down", "up"), "O_large", nested=False)
# the ResNet-UNet baseline with choice points: the second block of each encoder stage, the second conv of each
# decoder stage, and each skip connection (hpcnas.space.blocks)
RESNET_UNET = BlockTopology(
    "resnet_unet",
    CELL_KINDS["block"],
    ("encoder", "decoder"),
    "O_blocks",
    nested=False,
    network="hpcnas.space.blocks:ResNetUNetOfChoices",
    groups=(("encoder", "basic_3x3_w1"), ("decoder", "plain_3x3"), ("skip", "identity")),
)


# --------------------------------------------------------------------------
# the UNet++ grid


def unetpp_nodes(depth: int) -> List[GridNode]:
    """The UNet++ grid nodes X(i, j) in an order where every input comes first."""
    return [(i, j) for j in range(depth + 1) for i in range(depth + 1 - j)]


def unetpp_in_edges(node: GridNode) -> List[GridNode]:
    """Sources of X(i, j): down from X(i-1, 0) for j = 0; else up from X(i+1, j-1), then skips X(i, k<j)."""
    i, j = node
    if j == 0:
        return [(i - 1, 0)] if i > 0 else []
    return [(i + 1, j - 1)] + [(i, k) for k in range(j)]


def unetpp_paths(depth: int) -> List[Path_]:
    """Every path from the input node X(0, 0) to the output node X(0, depth)."""
    outs: Dict[GridNode, List[GridNode]] = {n: [] for n in unetpp_nodes(depth)}
    for n in unetpp_nodes(depth):
        for src in unetpp_in_edges(n):
            outs[src].append(n)
    target = (0, depth)
    paths: List[Path_] = []

    def walk(node: GridNode, trail: Tuple[GridNode, ...]) -> None:
        if node == target:
            paths.append(trail)
            return
        for nxt in outs[node]:
            walk(nxt, trail + (nxt,))

    walk((0, 0), ((0, 0),))
    return paths
