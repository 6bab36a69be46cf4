"""Checkpoints: everything needed to resume exactly, written atomically, read without running code.

A checkpoint holds tensors and plain data only (dicts, lists, tuples, numbers, strings), so it is read
with ``torch.load(weights_only=True)``: torch's restricted unpickler builds those types and nothing else,
so a crafted file cannot run code through ``predict``, ``evaluate``, ``export`` or ``--resume``.
Checkpoints written before this rule may hold numpy arrays (the numpy RNG state), which only the full
unpickler reads: they are refused with the command that converts them once, on the user's word
(:func:`upgrade_checkpoint`, ``hpcnas checkpoint upgrade FILE``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from hpcnas.errors import UserError
from hpcnas.rundir import atomic_path

UPGRADE = "hpcnas checkpoint upgrade"


class OldFormatCheckpoint(UserError):
    """A checkpoint that only the full unpickler reads (earlier hpcnas versions wrote numpy arrays)."""


def plain(obj: Any) -> Any:
    """``obj`` with every numpy value turned into a tensor or a Python number (what the safe loader reads)."""
    if isinstance(obj, dict):
        return {key: plain(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(value) for value in obj)
    if isinstance(obj, np.ndarray):
        if obj.dtype == np.uint32:  # the MT19937 key: torch keeps no uint32 it can load back everywhere
            obj = obj.astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save_checkpoint(path: Path, state: Dict[str, Any]) -> Path:
    """Write a checkpoint (``RunDir.latest`` or ``RunDir.best``) via a temporary file and a rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(plain(state), tmp)
    return path


def load_checkpoint(path: Path, map_location: Optional[torch.device] = None) -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, running no code from it; a broken, foreign or
    old-format file is a UserError (the old format names the command that converts it)."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no such checkpoint", source=str(path))
    try:
        state = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise _unreadable(exc, path) from None
        raise OldFormatCheckpoint(
            "holds Python objects besides tensors and plain data, which loading would have to run: not loaded "
            f"(earlier hpcnas versions wrote numpy arrays; if you trust this file, convert it once: {UPGRADE} {path})",
            source=str(path),
        ) from None
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise _unreadable(exc, path) from None
    if not isinstance(state, dict):
        raise UserError(f"not an hpcnas checkpoint (it holds a {type(state).__name__})", source=str(path))
    return state


def _unreadable(exc: BaseException, path: Path) -> UserError:
    return UserError(
        f"unreadable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})", source=str(path)
    )


def upgrade_checkpoint(path: str) -> str:
    """``hpcnas checkpoint upgrade``: rewrite a checkpoint of the old format in the safe one, in place.

    This is the one place that runs the full unpickler, and only on the user's explicit word: the file's
    pickle may run code. The result is checked to load safely before it replaces the file (atomically).
    """
    p = Path(path)
    if not p.is_file():
        raise UserError("no such checkpoint", source=path)
    try:
        load_checkpoint(p)
        return "already in the safe format: nothing to do"
    except OldFormatCheckpoint:
        pass  # what this command is for
    try:
        state = torch.load(p, map_location="cpu", weights_only=False)  # the user vouched for this file
    except Exception as exc:  # noqa: BLE001 - whatever an arbitrary pickle raises
        raise _unreadable(exc, p) from None
    if not isinstance(state, dict) or "model" not in state:
        raise UserError("not an hpcnas checkpoint (no model weights)", source=path)
    with atomic_path(p) as tmp:
        torch.save(plain(state), tmp)
        torch.load(tmp, map_location="cpu", weights_only=True)  # proof, before the rename
    return "converted: it now loads without running code"
