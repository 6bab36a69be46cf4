"""Process-level runtime helpers for torch code: device choice, seeding, RNG state, memory, progress.

Imports torch: use only from the layers that train (search, train), never
from the dispatcher.
"""

from __future__ import annotations

import logging
import random
import resource
import sys
from typing import Any, Dict, Iterable, Optional

import numpy as np
import torch

from hpcnas.errors import UserError

log = logging.getLogger("hpcnas")


def select_device(name: str = "auto") -> torch.device:
    """``auto`` -> the first CUDA GPU if there is one, else CPU; ``cuda`` without a GPU is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)", source="--device") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"device {name!r} requested but no CUDA GPU is available "
                f"(torch {torch.__version__}, cuda {torch.version.cuda})",
                source="--device",
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) are visible", source="--device"
            )
    elif device.type != "cpu":
        raise UserError(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)", source="--device")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> Dict[str, Any]:
    """Every global RNG state, for an exact resume."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA only; host RSS peak is per process)."""
    if (
        device.type == "cuda" and torch.cuda.is_initialized()
    ):  # before CUDA starts there is nothing to reset (and torch refuses)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated since the last reset, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def progress(iterable: Iterable, total: Optional[int], desc: str, enabled: bool = True) -> Iterable:
    """A tqdm bar on an interactive terminal, the bare iterable otherwise (logs stay clean)."""
    if enabled and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)
    return iterable
