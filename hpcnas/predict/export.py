"""``hpcnas export``: a trained network as TorchScript or ONNX, checked against PyTorch before it is kept.

The exported file carries the model card (bands, normalization, tile,
classes) as metadata, so ``hpcnas predict`` runs it like the checkpoint.
The parity check runs both on the same random batch; the file appears at
its path only when the largest absolute difference of the logits is within
the tolerance.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from hpcnas.errors import UserError
from hpcnas.predict.engines import CARD_KEY, OnnxEngine, TorchEngine, TorchScriptEngine
from hpcnas.predict.run import check_tile
from hpcnas.rundir import make_folders, publish, remove_if_empty, temporary_sibling

FORMATS = ("torchscript", "onnx")
TOLERANCE = 1e-4
ONNX_OPSET = 17

log = logging.getLogger("hpcnas")


def export_model(
    checkpoint: str, fmt: str, out: str, tile: Optional[int] = None, tolerance: float = TOLERANCE
) -> Dict[str, Any]:
    """Export ``checkpoint`` to ``out``; returns the parity figures (``max_abs_diff``, ``ok``)."""
    import torch

    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}' (known: {', '.join(FORMATS)})", source="--format")
    target = Path(out)
    if target.exists():
        raise UserError("already exists: choose another --out (nothing is overwritten)", source=out)
    check_tile(tile)
    source = TorchEngine(checkpoint, "cpu")
    card = source.card
    size = tile or card.tile_size
    if size is None:
        raise UserError("this checkpoint does not record its training tile: give --tile", source=checkpoint)
    card.tile_size = size
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, card.in_channels, size, size, generator=generator)
    check = torch.randn(3, card.in_channels, size, size, generator=generator).numpy()  # another batch size
    created = make_folders(target.parent, out)
    tmp = temporary_sibling(target)
    ok = False
    started = time.monotonic()
    # each phase of a large network takes minutes on a CPU: say which one runs (the log shows it too)
    log.info("export: %s of a %d px tile, %d band(s) -> %s", fmt, size, card.in_channels, target)
    try:
        if fmt == "torchscript":
            with torch.inference_mode(False), torch.no_grad():
                traced = torch.jit.trace(source.model, example, check_trace=False)
            torch.jit.save(traced, str(tmp), _extra_files={f"{CARD_KEY}.json": card.to_json()})
            exported: Any = TorchScriptEngine(str(tmp), "cpu")
        else:
            _export_onnx(source.model, example, tmp, card.to_json())
            exported = OnnxEngine(str(tmp), "cpu")
        log.info("export: written in %.1f s; checking it against PyTorch on a batch of 3", time.monotonic() - started)
        diff = float(np.abs(exported(check) - source(check)).max())
        ok = bool(diff <= tolerance)
        if ok:
            publish(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        if not ok:
            remove_if_empty(created)
    return {"format": fmt, "out": str(target), "tile": size, "max_abs_diff": diff, "tolerance": tolerance, "ok": ok}


def _export_onnx(model, example, path: Path, card_json: str) -> None:
    import onnx
    import torch

    with warnings.catch_warnings():  # the TorchScript-based exporter: no onnxscript needed, still supported
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=ONNX_OPSET,
        )
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = CARD_KEY, card_json
    onnx.save(proto, str(path))
