"""Process-level runtime helpers for torch code: device choice, seeding, RNG state, memory, progress.

Imports torch: use only from the layers that train (search, train), never
from the dispatcher.
"""

from __future__ import annotations

import logging
import random
import resource
from typing import Any, Dict

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


class ComputeFormat:
    """How a training step computes: ``precision`` ``bf16`` runs the forward under bfloat16 autocast (the
    loss, the optimizer and the weights stay float32; no loss scaling needed), ``channels_last`` lays the
    network's and the inputs' 4-d tensors out NHWC, which tensor cores and oneDNN prefer."""

    def __init__(self, device: torch.device, precision: str = "fp32", channels_last: bool = False, key: str = ""):
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError(f"bf16 is not supported by {torch.cuda.get_device_name(device)}", key=f"{key}precision")
        if channels_last and device.type != "cuda":
            # benchmarks/formats.py found it: a search crashed with heap corruption (oneDNN issue 6035)
            raise UserError(
                "is for GPUs: on a CPU, oneDNN's NHWC backward of a strided 1x1 convolution with under 16 input "
                "channels (every DARTS reduction) writes out of bounds",
                key=f"{key}channels_last",
            )
        self.device, self.precision, self.channels_last = device, precision, channels_last
        self.memory_format = torch.channels_last if channels_last else torch.preserve_format

    def model(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in this format's memory layout."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of images on the device, in this format's memory layout."""
        return x.to(self.device, non_blocking=True, memory_format=self.memory_format)

    def autocast(self) -> torch.autocast:
        """The context of a forward pass in this format's precision."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def describe(self) -> str:
        """``fp32`` or ``bf16``, and whether channels last (for the log)."""
        return f"{self.precision}{', channels last' if self.channels_last else ''}"


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
