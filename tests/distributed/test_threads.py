"""Torch's threads follow the CPUs this process may use, not the node's count."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROBE = (
    "from hpcnas.distributed import available_cpus, use_cpu_threads; import torch; "
    "use_cpu_threads(int(sys.argv[1])); print(*available_cpus(), torch.get_num_threads())"
)


def probe(*prefix, ranks=1, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK")}
    full.update(env)
    out = subprocess.run([*prefix, sys.executable, "-c", "import sys; " + PROBE, str(ranks)], cwd=ROOT, env=full,
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return int(out[0]), " ".join(out[1:-1]), int(out[-1])


@pytest.mark.slow
def test_affinity_slurm_and_omp_bound_the_threads():
    allowed = len(os.sched_getaffinity(0))
    assert probe() == (allowed, "CPUs this process may run on", allowed)
    assert probe(OMP_NUM_THREADS="1") == (1, "OMP_NUM_THREADS", 1)
    if allowed > 1:
        assert probe(SLURM_CPUS_PER_TASK="1")[::2] == (1, 1)
        assert probe(ranks=allowed)[2] == 1  # split between the ranks of the node
        assert probe(ranks=allowed * 4)[2] == 1  # never 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("taskset") is None, reason="no taskset")
def test_a_process_pinned_to_one_cpu_uses_one_thread():
    assert probe("taskset", "-c", "0") == (1, "CPUs this process may run on", 1)
