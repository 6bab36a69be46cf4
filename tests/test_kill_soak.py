"""Kill anywhere, resume: SIGKILL at random instants, then ``--resume-existing``, as a requeued SLURM job does.

A smoke search, a smoke train and a 3-rank smoke evolve are each killed (the whole process group, as SLURM
kills a job step) at instants drawn from a seeded generator, restarted with the same command line after each
kill, and finally run to the end. The search and the train must end exactly as an uninterrupted run (genotype,
theta, weights, metrics); the evolve must hold every evaluation exactly once. The seed and the instants are
printed; ``HPCNAS_SOAK_SEED=N`` replays a run.

Each run of the suite kills 6 searches, 6 trainings and 3 evolves (15 kills: 89 CPU-seconds here, 147 with twice
the kills), at instants drawn afresh every time, so the runs of the suite add up to a soak. ``HPCNAS_SOAK_KILLS=K``
multiplies the kills by K for a deeper soak in one go (K=2 is what the suite ran before the cut for its time).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hpcnas.rundir import read_jsonl
from tests.conftest import MPI_ENV, MPIRUN, ROOT, needs_mpi, set_args

SMOKE = str(ROOT / "configs" / "smoke.yaml")
TINY = ["data.synth.n=16", "data.synth.size=32", "space.channels=8", "space.depth=2", "space.nodes=2", "device=cpu",
        "monitor.tensorboard=false"]  # fmt: skip
SOAK_KILLS = int(os.environ.get("HPCNAS_SOAK_KILLS", "1"))
COMMANDS = {
    "search": (["search", "--config", SMOKE] + set_args(TINY + ["search.epochs=4", "search.arch_start_epoch=2"]), 6),
    "train": (
        ["train", "--config", SMOKE, "--genotype", "random", "--seed", "3"]
        + set_args(TINY + ["train.epochs=4", "train.select_from_epoch=2"]),
        6,
    ),
}
EVOLVE = ["evolve", "--config", str(ROOT / "configs" / "smoke-evolve.yaml")] + set_args(
    [
        "evolve.max_evaluations=8",
        "evolve.memory.limit=null",
        "evolve.prescreen.score=null",
        "evolve.asha.min_resource=null",
        "monitor.tensorboard=false",
    ]  # fmt: skip
)
EVOLVE_KILLS = 3
TIMING = ("time_s", "train_s", "data_wait_s", "peak_memory_mb")  # wall-clock figures differ between runs


def soak_rng() -> tuple:
    seed = int(os.environ.get("HPCNAS_SOAK_SEED", random.SystemRandom().randrange(10**6)))
    print(f"kill soak: HPCNAS_SOAK_SEED={seed}")
    return seed, random.Random(seed)


def start(argv: list, out: Path, ranks: int = 1) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "hpcnas.cli", *argv, "--out", str(out), "--resume-existing"]
    if ranks > 1:
        cmd = [MPIRUN, "-np", str(ranks), "--oversubscribe", *cmd]
    env = dict(os.environ, **MPI_ENV)
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def finish(argv: list, out: Path, ranks: int = 1, timeout: float = 600) -> float:
    """Run to the end; the seconds it took."""
    t0 = time.perf_counter()
    proc = start(argv, out, ranks)
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{out}: exit {proc.returncode}\n{err[-3000:]}"
    return time.perf_counter() - t0


def kill_at(argv: list, out: Path, instant: float, ranks: int = 1) -> str:
    """Start, SIGKILL the whole process group ``instant`` seconds later (unless it ended first); what happened."""
    proc = start(argv, out, ranks)
    try:
        proc.wait(timeout=instant)
        _, err = proc.communicate()
        assert proc.returncode == 0, f"{out}: a start after a kill failed, exit {proc.returncode}\n{err[-3000:]}"
        return "finished first"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if ranks > 1:  # the worker children of the killed ranks see their rank gone and leave
            deadline = time.time() + 30
            while time.time() < deadline:
                alive = subprocess.run(["pgrep", "-f", f"hpcnas.execution.worker.*{out}"], capture_output=True)
                if not alive.stdout.strip():
                    break
                time.sleep(0.2)
        return "killed"


def soak(argv: list, tmp_path: Path, kills: int, rng: random.Random, ranks: int = 1) -> tuple:
    """The uninterrupted run's folder, the killed-and-resumed ones' (chains of 3 kills, so that kills fall on
    work still to do rather than on a finished run), and the instants used."""
    reference = tmp_path / "reference"
    whole = finish(argv, reference, ranks)
    chains, instants = [], []
    for c in range(0, kills, 3):
        cut = tmp_path / f"cut-{c // 3}"
        chain = [round(rng.uniform(0.1, 1.0) * whole, 2) for _ in range(min(3, kills - c))]
        outcomes = [kill_at(argv, cut, t, ranks) for t in chain]
        print(f"{argv[0]}: uninterrupted {whole:.1f} s; {cut.name}: kills at {chain} s after each start: {outcomes}")
        finish(argv, cut, ranks)
        chains.append(cut)
        instants.append(chain)
    return reference, chains, instants


def metrics(run: Path) -> list:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(run / "metrics.jsonl")]


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
@pytest.mark.parametrize("command", list(COMMANDS))
def test_killed_at_random_instants_a_run_resumes_to_the_uninterrupted_end(command, tmp_path):
    seed, rng = soak_rng()
    argv, kills = COMMANDS[command]
    reference, chains, instants = soak(argv, tmp_path, kills * SOAK_KILLS, random.Random(f"{seed}-{command}"))
    for cut, chain in zip(chains, instants):
        replay = f"{cut.name}, replay: HPCNAS_SOAK_SEED={seed} (instants {chain})"
        assert metrics(cut) == metrics(reference), replay
        assert same_weights(reference / "checkpoints" / "latest.pt", cut / "checkpoints" / "latest.pt"), replay
        if command == "search":
            assert (cut / "genotype.json").read_text() == (reference / "genotype.json").read_text(), replay
            assert json.loads((cut / "arch.json").read_text()) == json.loads((reference / "arch.json").read_text())
        else:
            assert same_weights(reference / "checkpoints" / "best.pt", cut / "checkpoints" / "best.pt"), replay
        assert not [p for p in cut.rglob(".*.tmp-*")], "temporary files left behind"


@needs_mpi
@pytest.mark.slow
def test_a_killed_three_rank_evolve_holds_every_evaluation_exactly_once(tmp_path):
    seed, rng = soak_rng()
    _, chains, instants = soak(EVOLVE, tmp_path, EVOLVE_KILLS * SOAK_KILLS, random.Random(f"{seed}-evolve"), ranks=3)
    for cut, chain in zip(chains, instants):
        history = read_jsonl(cut / "history.jsonl")
        replay = f"{cut.name}, replay: HPCNAS_SOAK_SEED={seed} (instants {chain})"
        assert sorted(r["id"] for r in history) == list(range(8)), replay
        assert {r["status"] for r in history} == {"ok"}, replay
        assert (cut / "genotype.json").exists(), replay
