"""Checkpoints: everything needed to resume exactly, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import torch

from hpcnas.errors import UserError
from hpcnas.rundir import atomic_path


def save_checkpoint(path: Path, state: Dict[str, Any]) -> Path:
    """Write a checkpoint (``RunDir.latest`` or ``RunDir.best``) via a temporary file and a rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: Path, map_location: Optional[torch.device] = None) -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; a broken file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no such checkpoint", source=str(path))
    try:
        return torch.load(path, map_location=map_location or "cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise UserError(
            f"unreadable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})", source=str(path)
        ) from None
