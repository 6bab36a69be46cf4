"""Inference engines: a training checkpoint (PyTorch), a TorchScript file, an ONNX file (onnxruntime).

Each engine knows the network's input contract, a :class:`ModelCard` read
from the file itself: the bands and normalization the network was trained
with, its tile, its classes.  Exported files carry the card as metadata, so
an ONNX model runs with onnxruntime alone, on a machine without torch.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

import numpy as np

from hpcnas.data.raster import Normalization
from hpcnas.errors import UserError

if TYPE_CHECKING:
    from hpcnas.train.spec import ModelSpec

ENGINES = ("auto", "torch", "torchscript", "onnxruntime")
CARD_KEY = "hpcnas"  # ONNX metadata key / TorchScript extra file (".json" added) holding the card


@dataclass
class ModelCard:
    """What a network expects and gives: stored at training time, carried into every export."""

    in_channels: int
    class_names: List[str]
    dtype: str = "uint8"
    bands: Optional[List[int]] = None
    normalization: Dict[str, List[float]] = field(default_factory=dict)
    tile_size: Optional[int] = None
    overlap: Optional[int] = None

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> "ModelCard":
        """From a training checkpoint's model spec (older checkpoints: 8-bit RGB, no stored tile)."""
        data = spec.data
        return cls(
            in_channels=int(spec.in_channels),
            class_names=list(data.get("class_names") or spec.class_names),
            dtype=data.get("dtype", "uint8"),
            bands=data.get("bands"),
            normalization=data.get("normalization") or {},
            tile_size=data.get("tile_size"),
            overlap=data.get("overlap"),
        )

    @classmethod
    def from_json(cls, text: str, source: str) -> "ModelCard":
        """From :meth:`to_json`'s text."""
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError) as exc:
            raise UserError(f"the model's hpcnas metadata is unreadable: {exc}", source=source) from None

    def to_json(self) -> str:
        """The card as JSON (stored in exported files)."""
        return json.dumps(self.__dict__)

    @property
    def num_classes(self) -> int:
        """Output channels."""
        return len(self.class_names)

    @property
    def norm(self) -> Normalization:
        """The per-band input normalization."""
        return Normalization.from_dict(self.normalization, self.in_channels)


class Engine:
    """Runs a network on normalized (N, C, H, W) float32 batches, returning (N, classes, H, W) logits."""

    card: ModelCard
    name = "engine"
    fixed_tile: Optional[int] = None  # an input size the file cannot change (ONNX exports)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class TorchEngine(Engine):
    """A training checkpoint (``RUN/checkpoints/best.pt``), rebuilt from its model spec."""

    name = "torch"

    def __init__(self, path: str, device: str = "auto"):
        import torch

        from hpcnas.distributed import use_cpu_threads
        from hpcnas.runtime import select_device
        from hpcnas.train.evaluate import load_model

        use_cpu_threads()
        self.device = select_device(device)
        self.model, spec = load_model(path, self.device)
        self.card = ModelCard.from_spec(spec)
        self._torch = torch

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            x = self._torch.from_numpy(batch).to(self.device, non_blocking=True)
            return self.model(x).float().cpu().numpy()


class TorchScriptEngine(Engine):
    """A file written by ``hpcnas export --format torchscript``."""

    name = "torchscript"

    def __init__(self, path: str, device: str = "auto"):
        import torch

        from hpcnas.distributed import use_cpu_threads
        from hpcnas.runtime import select_device

        use_cpu_threads()
        self.device = select_device(device)
        extra = {f"{CARD_KEY}.json": ""}
        try:
            self.model = torch.jit.load(path, map_location=self.device, _extra_files=extra)
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"not a TorchScript file: {str(exc).splitlines()[0][:160]}", source=path) from None
        if not extra[f"{CARD_KEY}.json"]:
            raise UserError("a TorchScript file, but not one hpcnas exported (no model card)", source=path)
        self.card = ModelCard.from_json(extra[f"{CARD_KEY}.json"], path)
        self.model.eval()
        self._torch = torch

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model(self._torch.from_numpy(batch).to(self.device)).float().cpu().numpy()


class OnnxEngine(Engine):
    """A file written by ``hpcnas export --format onnx``, run by onnxruntime (no torch needed)."""

    name = "onnxruntime"

    def __init__(self, path: str, device: str = "auto"):
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("--engine onnxruntime needs the onnxruntime package (pip install onnxruntime)") from None
        providers = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(path, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for a bad file
            raise UserError(f"not an ONNX model onnxruntime can run: {str(exc).splitlines()[0][:160]}", source=path)
        meta = self.session.get_modelmeta().custom_metadata_map
        if CARD_KEY not in meta:
            raise UserError("an ONNX model, but not one hpcnas exported (no model card)", source=path)
        self.card = ModelCard.from_json(meta[CARD_KEY], path)
        self.input = self.session.get_inputs()[0]
        size = self.input.shape[-1]
        self.fixed_tile = size if isinstance(size, int) else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input.name: np.ascontiguousarray(batch, np.float32)})[0]


def engine_for(path: str, engine: str = "auto", device: str = "auto") -> Engine:
    """Open ``path`` with ``engine``; ``auto`` picks by content: ``.onnx``, a TorchScript archive, or a checkpoint."""
    p = Path(path)
    if not p.is_file():
        raise UserError("no such file", source=path)
    if engine == "auto":
        engine = _guess_engine(p)
    kinds = {"torch": TorchEngine, "torchscript": TorchScriptEngine, "onnxruntime": OnnxEngine}
    if engine not in kinds:
        raise UserError(f"unknown engine '{engine}' (known: {', '.join(ENGINES)})", source="--engine")
    return kinds[engine](path, device)


def _guess_engine(path: Path) -> str:
    if path.suffix.lower() == ".onnx":
        return "onnxruntime"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith(f"extra/{CARD_KEY}.json") for name in archive.namelist()):
                return "torchscript"
    return "torch"
