"""The DeepHyper anchor of ``orchestrator.py --anchor deephyper``: the same sleeping tasks through DeepHyper's
``MPICommEvaluator``, kept ``workers`` busy asynchronously (a finished job is replaced at once).

Run under mpirun with one rank more than workers (DeepHyper's master does not evaluate; hpcnas's rank 0
does), from ``orchestrator.py``:

    mpirun -np WORKERS+1 python benchmarks/_deephyper_anchor.py TASKS MEDIAN SIGMA OUT.json

Task ``i`` sleeps ``sleep_seconds(random.Random(i), MEDIAN, SIGMA)``, the sleep evaluator's time for
evaluation ``i``. OUT.json holds one record per job: id, rank, submit (master), start and end (worker),
all ``time.time()``.
"""

from __future__ import annotations

import json
import random
import sys
import time


def run(job) -> dict:
    """A worker's job: sleep the task's time; report when it ran and where."""
    from mpi4py import MPI

    from hpcnas.execution.worker import sleep_seconds

    ident, median, sigma = job.parameters["id"], job.parameters["median"], job.parameters["sigma"]
    start = time.time()
    time.sleep(sleep_seconds(random.Random(ident), median, sigma))
    return {"objective": 0.0, "metadata": {"start": start, "end": time.time(), "rank": MPI.COMM_WORLD.Get_rank()}}


def main() -> int:
    tasks, median, sigma, out = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    from deephyper.evaluator import MPICommEvaluator

    with MPICommEvaluator(run) as evaluator:
        if not evaluator.is_master:
            return 0  # a worker: served until the master closed
        submitted: dict = {}

        def submit(count: int) -> None:
            ids = list(range(len(submitted), len(submitted) + count))
            for ident in ids:
                submitted[ident] = time.time()
            evaluator.submit([{"id": i, "median": median, "sigma": sigma} for i in ids])

        records = []
        submit(min(evaluator.num_workers, tasks))
        while len(records) < tasks:
            done = evaluator.gather("BATCH", size=1)
            submit(min(len(done), tasks - len(submitted)))
            for job in done:
                ident = job.args["id"]
                records.append({"id": ident, "submit": submitted[ident], **job.metadata})
    with open(out, "w") as fh:
        json.dump(records, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
