"""The paths that only a CUDA GPU takes: pinned host memory, the latency objective, a real CUDA OOM.

Marked ``gpu`` and skipped without one; ``benchmarks/gpu_check.py`` runs them on a lent GPU (``pytest -m gpu``).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_training_batches_come_in_pinned_memory_and_reach_the_gpu(synth_h5):
    from hpcnas.data.torch_dataset import SegmentationDataset, make_loader

    loader = make_loader(SegmentationDataset(str(synth_h5), "train"), 4, seed=0)
    images, masks = next(iter(loader))
    assert images.is_pinned() and masks.is_pinned()
    on_gpu = images.to("cuda", non_blocking=True)
    torch.cuda.synchronize()
    assert on_gpu.is_cuda and torch.equal(on_gpu.cpu(), images)


def test_the_latency_objective_times_the_network_on_the_gpu():
    import random

    from hpcnas.config import load_config
    from hpcnas.execution.worker import measure_latency
    from hpcnas.space.networks import build_discrete_network
    from hpcnas.space.searchspace import SearchSpace

    cfg = load_config(None, ["space.depth=2", "space.channels=8"])
    genotype = SearchSpace.from_config(cfg).sample(random.Random(0))
    small = build_discrete_network(genotype, 3, 2, channels=8, depth=2).cuda()
    large = build_discrete_network(genotype, 3, 2, channels=64, depth=2).cuda()
    device = torch.device("cuda")
    small_ms = measure_latency(small, 3, 256, device, runs=10)
    large_ms = measure_latency(large, 3, 1024, device, runs=10)
    assert 0 < small_ms < large_ms  # synchronized timing: 8x the width on 16x the pixels is slower


def test_a_real_cuda_out_of_memory_is_classified_as_oom_and_the_device_stays_usable():
    from hpcnas.execution.worker import inject, is_oom

    with pytest.raises(torch.cuda.OutOfMemoryError) as caught:
        inject("oom", torch.device("cuda"))
    assert is_oom(caught.value)
    assert is_oom(RuntimeError("CUDA error: an illegal memory access")) is False
    x = torch.ones(1024, device="cuda")  # the failed allocation left the allocator working
    assert float(x.sum()) == 1024.0
