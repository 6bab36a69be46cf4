"""The model spec: everything needed to rebuild a trained network, kept in ``model.json`` and in every checkpoint.

A spec is a :class:`ModelSpec` from the moment it is made until it crosses a file boundary (``to_dict`` /
``from_dict``), so the genotype inside it is validated once, and a checkpoint's spec is read as plain data, never
as code. ``train.channels`` or ``train.target_params`` set a genotype's width (or the baseline's) independently of
the supernet's ``space.channels``: search small, retrain large, as DARTS does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

from torch import nn

from hpcnas.config import Config
from hpcnas.data.hdf5 import DatasetInfo
from hpcnas.errors import UserError
from hpcnas.space.genotype import Genotype
from hpcnas.space.networks import build_discrete_network
from hpcnas.space.searchspace import SearchSpace
from hpcnas.train.baselines import ResNetUNet
from hpcnas.train.complexity import complexity, width_for_parameters

GENOTYPE, BASELINE = "genotype", "resnet_unet"


@dataclass(frozen=True)
class ModelSpec:
    """A discrete network: a genotype at a width, or the ResNet-UNet baseline; with its size once measured."""

    kind: str  # GENOTYPE or BASELINE
    in_channels: int
    num_classes: int
    depth: int
    genotype: Optional[Genotype] = None
    class_names: List[str] = field(default_factory=list)
    channels: int = 0  # the genotype's cell width
    tower_depth: Optional[int] = None
    baseline_width: Union[int, float] = 0
    baseline_blocks: int = 1
    data: Dict[str, Any] = field(default_factory=dict)  # bands, normalization, tile: what predict must feed it
    params: Optional[int] = None
    flops: Optional[int] = None  # of one forward pass of one tile

    def build(self) -> nn.Module:
        """The network, freshly initialized (on the current default device)."""
        if self.genotype is not None:
            return build_discrete_network(
                self.genotype, self.in_channels, self.num_classes, channels=self.channels, depth=self.depth
            )
        return ResNetUNet(self.in_channels, self.num_classes, self.baseline_width, self.depth, self.baseline_blocks)

    @property
    def name(self) -> str:
        """What the network is: its genotype's topology, or the baseline."""
        return self.genotype.topology if self.genotype is not None else BASELINE

    @property
    def width(self) -> Union[int, float]:
        return self.channels if self.genotype is not None else self.baseline_width

    def with_width(self, width: Union[int, float]) -> "ModelSpec":
        key = "channels" if self.genotype is not None else "baseline_width"
        return dataclasses.replace(self, **{key: width}, params=None, flops=None)

    def measured(self, tile: int) -> "ModelSpec":
        """This spec with its parameters and FLOPs per ``tile`` px tile (counted on the meta device)."""
        return dataclasses.replace(self, **complexity(self.build, self.in_channels, tile))

    def to_dict(self) -> Dict[str, Any]:
        """Plain data for ``model.json`` and checkpoints (no size keys until measured)."""
        raw = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        raw["genotype"] = self.genotype.to_dict() if self.genotype is not None else None
        return {k: v for k, v in raw.items() if not (k in ("params", "flops") and v is None)}

    @classmethod
    def from_dict(cls, raw: Any, source: str) -> "ModelSpec":
        """A spec from :meth:`to_dict`'s data (older files lack the data and size keys; unknown keys are ignored)."""
        if not isinstance(raw, dict) or raw.get("kind") not in (GENOTYPE, BASELINE):
            kind = raw.get("kind") if isinstance(raw, dict) else type(raw).__name__
            raise UserError(f"not a model spec (kind {kind!r}, expected '{GENOTYPE}' or '{BASELINE}')", source=source)
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values["genotype"] = Genotype.from_dict(raw["genotype"], source) if raw["kind"] == GENOTYPE else None
        values["class_names"] = list(values.get("class_names") or [])
        values["data"] = dict(values.get("data") or {})
        try:
            return cls(**values)
        except TypeError as exc:  # a required key missing
            raise UserError(f"incomplete model spec: {exc}", source=source) from None


def model_spec(
    cfg: Config, info: DatasetInfo, genotype: Optional[Genotype], source: str = "<genotype>", measure: bool = True
) -> ModelSpec:
    """The network ``cfg`` retrains on ``info``'s data: ``genotype`` (checked against the space) or the baseline.

    ``measure=False`` leaves out the parameter and FLOP counts (a tenth of a second), for callers that only build.
    """
    sp, tr = cfg.space, cfg.train
    spec = ModelSpec(
        kind=GENOTYPE if genotype is not None else BASELINE,
        genotype=genotype,
        in_channels=info.channels,
        num_classes=info.num_classes,
        class_names=list(info.class_names),
        channels=tr.channels or sp.channels,
        depth=sp.depth,
        tower_depth=sp.tower_depth,
        baseline_width=tr.baseline_width,
        baseline_blocks=tr.baseline_blocks,
        data=info.data_spec(),
    )
    if genotype is not None:
        space = SearchSpace.from_config(cfg)
        space.check(genotype, source)
        need = space.stride()
    else:
        need = 2**sp.depth
    if info.tile_size % need:
        raise UserError(
            f"tile size {info.tile_size} is not divisible by the network stride {need} (space.depth={sp.depth})",
            source=str(info.path),
        )
    if tr.target_params:  # search small, retrain at the size of the budget
        width = width_for_parameters(
            lambda w: spec.with_width(w).build(),
            tr.target_params,
            fractions=1 if genotype is not None else 8,  # the ResNet-UNet takes a fractional width
        )
        spec = spec.with_width(width)
    return spec.measured(info.tile_size) if measure else spec
