"""Multi-objective search for real: mpirun with NSGA-II, a bound, kill and resume, hpcnas pareto and report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcnas.config import load_config
from hpcnas.execution.history import SearchLog, read_search
from hpcnas.execution.orchestrator import make_strategy, replay
from hpcnas.rundir import read_jsonl
from hpcnas.space.genotype import Genotype
from hpcnas.space.searchspace import SearchSpace
from hpcnas.strategies.objectives import hypervolume_over_time, pareto_front
from tests.conftest import MPI_ENV, MPIRUN, ROOT, needs_mpi, run_cli
from tests.execution.test_orchestrator import SLEEPY, _wait_for_lines, run, sets

SMOKE_PARETO = str(ROOT / "configs" / "smoke-pareto.yaml")


def pareto_cmd(np_, out, *overrides, resume=False):
    entry = Path(sys.executable).parent / "hpcnas-evolve"  # the console script the README shows
    base = [MPIRUN, "-np", str(np_), "--oversubscribe"] + (
        [str(entry)] if entry.exists() else [sys.executable, "-m", "hpcnas.cli", "evolve"]
    )
    if resume:
        return base + ["--resume", str(out)] + sets(*overrides)
    return base + ["--config", SMOKE_PARETO, "--out", str(out)] + sets(*overrides)


@needs_mpi
@pytest.mark.slow
def test_smoke_pareto_trains_reports_and_exports_its_front(tmp_path):
    out = tmp_path / "pareto"
    proc = run(pareto_cmd(4, out, "evolve.max_evaluations=10", "evolve.strategy.population=4"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    search = read_search(out)
    assert len(search.evaluations) == 10 and [o.name for o in search.objectives] == ["miou", "params"]
    front = search.front
    assert front and all(e.ok and e.objectives["params"] > 0 for e in front)
    # TensorBoard, one point per finished evaluation, written by rank 0's background board
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    assert {"front/hypervolume", "front/size", "utilization", "status/ok", "evaluation/miou", "best_fitness"} <= set(
        events.Tags()["scalars"]
    )
    # one scale with the report's: charted from the evaluation that fixes it (the 5th success) on, never rescaled
    charted = events.Scalars("front/hypervolume")
    assert [s.step for s in charted] == list(range(11 - len(charted), 11)) and len(charted) >= 1
    assert [s.value for s in charted] == sorted(s.value for s in charted)
    assert [s.value for s in charted] == pytest.approx(hypervolume_over_time(search.objectives, search.evaluations)[1])
    # nothing on the front is dominated by anything in the history
    assert {e.id for e in front} == {e.id for e in pareto_front(search.objectives, search.evaluations)}

    exported = run_cli("pareto", str(out), "--export", str(tmp_path / "front"))
    assert exported.returncode == 0, exported.stderr
    assert f"{len(front)} of 10 evaluations on the front of miou, params" in exported.stdout
    space = SearchSpace.from_config(load_config(str(out / "config.yaml")))
    for e in front:  # each is ready for hpcnas train: it fits the run's space
        space.check(Genotype.load(str(tmp_path / "front" / f"eval-{e.id:05d}" / "genotype.json")), "exported")
    listed = json.loads((tmp_path / "front" / "front.json").read_text())
    assert [r["id"] for r in listed["front"]] == [e.id for e in front]

    again = run_cli("pareto", str(out), "--export", str(tmp_path / "front"))
    assert again.returncode == 2 and "not an empty folder" in again.stderr  # never overwrites an export

    reported = run_cli("report", str(out))
    assert reported.returncode == 0, reported.stderr
    assert {"accuracy_costs_pareto.png", "hypervolume_pareto.png"} <= {p.name for p in (out / "report").glob("*.png")}
    assert "## Pareto front of pareto: miou, params" in (out / "report" / "summary.md").read_text()


@needs_mpi
@pytest.mark.slow
def test_a_killed_two_objective_search_resumes_with_its_front_and_respects_the_bound(tmp_path):
    out = tmp_path / "killed"
    bound = ["evolve.objectives=[miou, 'params <= 100']", "evolve.max_evaluations=20", "evolve.strategy.population=4"]
    cmd = pareto_cmd(4, out, *SLEEPY, *bound)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=dict(os.environ, **MPI_ENV), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    assert _wait_for_lines(out / "history.jsonl", 7, proc, time.time() + 180), "no progress before the kill"
    ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    for pid in ranks + [str(proc.pid)]:
        os.kill(int(pid), signal.SIGKILL)
    proc.wait()
    time.sleep(1.5)

    # what --resume rebuilds: replaying the logs gives the strategy the front the history holds
    cfg = load_config(str(out / "config.yaml"))
    strategy = make_strategy(cfg, 4)
    search_log = SearchLog(out)
    replay(strategy, search_log)
    search_log.close()
    before = read_search(out)
    assert [e.id for e in strategy.front()] == [e.id for e in before.front]
    assert len(before.evaluations) < 20

    done = run(pareto_cmd(4, out, resume=True))
    assert done.returncode == 0, done.stderr[-3000:]
    after = read_search(out)
    assert sorted(e.id for e in after.evaluations) == list(range(20))
    assert after.front and all(e.objectives["params"] <= 100 for e in after.front)
    best = Genotype.load(str(out / "genotype.json"))
    feasible = [e for e in after.evaluations if e.ok and e.objectives["params"] <= 100]
    assert best == max(feasible, key=lambda e: (e.fitness, -e.id)).genotype  # the best inside the bound
    assert {r["id"] for r in read_jsonl(out / "history.jsonl")} == set(range(20))
