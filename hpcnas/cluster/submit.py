"""``hpcnas submit``: the jobs of ``slurm/*.sh``, generated and submitted by submitit.

Every SLURM specific sits here: how a request becomes sbatch parameters
(:func:`slurm_parameters`), the job every task runs (:class:`PipelineJob`) and
the submission itself (:func:`submit`).  The job is checkpointable: SLURM's
USR2 warning makes our loops save their state and raise ``Interrupted``; rank 0
then hands over to submitit's own handler, which requeues the job, and the
requeued job continues the same run directory.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hpcnas.distributed import MPI_LAUNCH_ENV
from hpcnas.errors import Interrupted, UserError
from hpcnas.signals import STOP, ignore_stop_signals

COMMANDS = ("search", "evolve", "train", "predict")
ONE_GPU = ("train", "predict")  # one process on one GPU per task
SIGNAL_DELAY_S = 120  # USR2 this long before the limit: time to finish a step and write a checkpoint
MAX_REQUEUES = 20
JOB_ID = "%j"  # in --out: replaced by the job id (array: <array id>_<index>) on the node

try:
    from submitit.helpers import Checkpointable
except ImportError:  # the package imports without it; submit() reports it
    Checkpointable = object  # type: ignore[misc,assignment]


@dataclass
class Request:
    """What the user asked ``hpcnas submit`` for."""

    command: str
    config: Optional[str] = None
    overrides: List[str] = field(default_factory=list)
    nodes: int = 1
    gpus_per_node: int = 4
    cpus_per_task: int = 10
    time: str = "01:00:00"
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    array: Optional[int] = None
    signal_delay_s: int = SIGNAL_DELAY_S
    genotype: Optional[str] = None
    baseline: Optional[str] = None
    out: Optional[str] = None
    logs: str = "runs/submitit"
    checkpoint: Optional[str] = None  # predict: the trained or exported network
    input: Optional[str] = None  # predict: a scene or a folder of scenes
    predict_options: Dict[str, Any] = field(default_factory=dict)  # predict: PredictOptions fields (vector, ...)


def time_minutes(text: str) -> int:
    """SLURM's ``[D-]HH:MM:SS`` as whole minutes (rounded up; SLURM counts minutes)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d\d):(\d\d)", text.strip())
    if not m or int(m.group(3)) >= 60 or int(m.group(4)) >= 60:
        raise UserError(f"'{text}' is not a time limit: use HH:MM:SS or D-HH:MM:SS", source="--time")
    days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
    total = math.ceil(((days * 24 + hours) * 60 + minutes) + seconds / 60)
    if total < 1:
        raise UserError("the time limit must be at least one minute", source="--time")
    return total


def tasks_per_node(req: Request) -> int:
    """One rank per GPU, except training and prediction: one process on one GPU."""
    return 1 if req.command in ONE_GPU else max(1, req.gpus_per_node)


def slurm_parameters(req: Request) -> Dict[str, Any]:
    """The sbatch parameters (submitit's names) for a request; the same defaults as slurm/*.sh."""
    params: Dict[str, Any] = {
        "job_name": f"hpcnas-{req.command}",
        "nodes": req.nodes,
        "ntasks_per_node": tasks_per_node(req),
        "cpus_per_task": req.cpus_per_task,
        "time": time_minutes(req.time),
        "signal_delay_s": req.signal_delay_s,
        "additional_parameters": {"hint": "nomultithread"},
        "setup": [
            "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}  # torch's threads: this task's CPUs",
            *(
                f"export {k}=${{{k}:-{v}}}  # no X display probe in MPI's start (a TensorBoard on :6006 hangs it)"
                for k, v in MPI_LAUNCH_ENV.items()
            ),
        ],
    }
    gpus = 1 if req.command in ONE_GPU and req.gpus_per_node else req.gpus_per_node
    if gpus:
        params["gres"] = f"gpu:{gpus}"
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(req, key):
            params[key] = getattr(req, key)
    return params


CANCELLING_SIGNALS = ("SIGTERM", "SIGINT")  # a stop by one of these is not requeued


class PipelineJob(Checkpointable):
    """One hpcnas command, run on every task of a job; requeued at the time limit and resumed."""

    def __init__(
        self,
        command: str,
        config: str,
        overrides: List[str],
        out: str,
        genotype: Optional[str] = None,
        baseline: Optional[str] = None,
        seed: int = 0,
    ):
        self.command, self.config, self.overrides, self.out = command, config, list(overrides), out
        self.genotype, self.baseline, self.seed = genotype, baseline, seed

    def __call__(self) -> Dict[str, Any]:
        import submitit

        from hpcnas import pipeline

        env = submitit.JobEnvironment()
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
        run_dir = self.out.replace(JOB_ID, str(env.job_id))
        submitit_handler = signal.getsignal(signal.SIGUSR2)  # checkpoint + requeue, installed by submitit
        STOP.arm()  # from here to the end, a warning is ours: it stops the loop, never kills the job outright
        out, resume = pipeline.start_or_resume(run_dir)
        try:
            self._run(pipeline, out, resume)
        except Interrupted as exc:
            logging.getLogger("hpcnas").info("%s", exc)
            # the time-limit warning requeues; scancel's SIGTERM (or SLURM's own preemption, which requeues by
            # itself) ends the job: a cancelled job that requeued itself would run to the end regardless
            if exc.signal in CANCELLING_SIGNALS:
                return {"run_dir": run_dir, "finished": False}
            if env.global_rank == 0 and callable(submitit_handler):
                submitit_handler(signal.SIGUSR2, None)  # dumps checkpoint(), scontrol requeue, exits
            return {"run_dir": run_dir, "finished": False}
        ignore_stop_signals()  # finished: a late warning must not make submitit requeue a done job
        return {"run_dir": run_dir, "finished": True}

    def _run(self, pipeline, out: Optional[str], resume: Optional[str]) -> None:
        if self.command == "search":
            pipeline.search(self.config, self.overrides, out=out, resume=resume)
        elif self.command == "evolve":
            pipeline.evolve(self.config, self.overrides, out=out, resume=resume)
        else:
            pipeline.train(
                self.config,
                self.overrides,
                genotype=self.genotype,
                baseline=self.baseline,
                seed=self.seed,
                out=out,
                resume=resume,
            )


class PredictJob:
    """One task of ``hpcnas predict`` over a folder: its share of the scenes (``part``), skipping finished ones.

    Not checkpointable: a scene is written whole or not at all, so a task
    killed at its time limit is continued by submitting it again (``resume``).
    """

    def __init__(self, checkpoint: str, source: str, out: str, part: Optional[str], options: Dict[str, Any]):
        self.checkpoint, self.source, self.out, self.part, self.options = checkpoint, source, out, part, options

    def __call__(self) -> Dict[str, Any]:
        from hpcnas import pipeline
        from hpcnas.predict.run import PredictOptions

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
        options = PredictOptions(part=self.part, resume=True, **self.options)
        counts = pipeline.predict(self.checkpoint, self.source, self.out, options)
        return {"run_dir": self.out, "finished": True, **counts}


# Values that reach the generated job script. SLURM names are words of SLURM's own alphabet; paths are quoted by
# submitit (shlex.quote), but sbatch reads #SBATCH lines with its own tokenizer, which a quote, a backslash or a
# newline inside a quoted word can end: those are refused, as are $ and ` (no value has a reason to hold them).
SLURM_NAMES = {
    "partition": re.compile(r"[A-Za-z0-9_.,+-]+"),  # a partition list is comma-separated
    "account": re.compile(r"[A-Za-z0-9_.,+-]+"),
    "qos": re.compile(r"[A-Za-z0-9_.,+-]+"),
    "constraint": re.compile(r"[A-Za-z0-9_.,&|!:*\[\]()+-]+"),  # features joined by & | , [ ] ( ) *
}
PATHS = ("out", "logs", "config", "genotype", "checkpoint", "input")
UNSAFE_IN_SCRIPTS = set("$`'\"\\")
# the logs folder stands in #SBATCH --output/--error lines: % starts an output pattern (%j, %t) there, and # is
# where a comment could begin in sbatch's reading of the line
LOG_PATTERN_CHARS = set("%#")


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _check_script_values(req: Request) -> None:
    """Every value that can reach the job script (or the job's own command line) is safe to put there."""
    values = [(name, getattr(req, name)) for name in (*SLURM_NAMES, *PATHS, "time", "baseline")]
    values += [("set", value) for value in req.overrides]
    for name, value in values:
        if not isinstance(value, str):
            continue
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            # a newline would end the #SBATCH line and start one of the caller's choosing
            raise UserError(f"control character in {value!r}", source=_flag(name))
        if name in SLURM_NAMES and not SLURM_NAMES[name].fullmatch(value):
            bad = sorted({c for c in value if not SLURM_NAMES[name].fullmatch(c)})
            raise UserError(f"{''.join(bad)!r} in {value!r}: not a SLURM {name} name", source=_flag(name))
        unsafe = UNSAFE_IN_SCRIPTS | (LOG_PATTERN_CHARS if name == "logs" else set())
        if name in PATHS and unsafe & set(value):
            chars = "".join(sorted(unsafe & set(value)))
            raise UserError(f"{chars!r} in {value!r}: not allowed in a path that reaches the job script", _flag(name))


def _check(req: Request) -> None:
    _check_script_values(req)
    if req.command not in COMMANDS:
        raise UserError(f"unknown command '{req.command}' (known: {', '.join(COMMANDS)})", source="--command")
    if req.command == "predict":
        _check_predict(req)
    else:
        if not req.config:
            raise UserError(f"--command {req.command} needs --config", source="--config")
        from hpcnas.config import load_config

        load_config(req.config, req.overrides)  # a missing or wrong config fails here, not on the cluster
    if req.nodes < 1 or req.gpus_per_node < 0 or req.cpus_per_task < 1:
        raise UserError("--nodes and --cpus-per-task must be at least 1, --gpus-per-node at least 0")
    if req.command in ONE_GPU and req.nodes != 1:
        raise UserError(f"{req.command} runs as one process per task: use --nodes 1", source="--nodes")
    # predict: --array N is N tasks sharing the scenes, checked with them in _check_predict
    if req.array is not None and req.command != "predict":
        if req.command != "train" or req.genotype or req.baseline:
            raise UserError(
                "--array N trains N random cells: use it with --command train and without --genotype/--baseline",
                source="--array",
            )
        if req.array < 1:
            raise UserError("--array needs at least 1 task", source="--array")
    elif req.command == "train" and not (req.genotype or req.baseline):
        raise UserError("--command train needs --genotype G.json, --baseline resnet_unet or --array N (random cells)")
    if not 0 < req.signal_delay_s < time_minutes(req.time) * 60:
        raise UserError(f"the warning must come before the time limit ({req.time})", source="--signal-delay")


def _check_predict(req: Request) -> None:
    """A prediction request names an existing network, existing scenes and an output folder."""
    if not (req.checkpoint and req.input and req.out):
        raise UserError("--command predict needs --checkpoint, --input and --out")
    if JOB_ID in req.out:
        raise UserError("predict tasks share one output folder: give --out without %j", source="--out")
    if not Path(req.checkpoint).is_file():
        raise UserError("no such file", source=req.checkpoint)
    from hpcnas.predict.run import PredictOptions, list_scenes

    PredictOptions(**req.predict_options).outputs()  # --min-area, --simplify
    scenes = list_scenes(req.input)
    if req.array is not None and not 1 <= req.array <= len(scenes):
        raise UserError(f"--array must be between 1 and the {len(scenes)} scene(s)", source="--array")
    if req.overrides or req.genotype or req.baseline:
        raise UserError("--command predict takes no --set, --genotype or --baseline")


def jobs_for(req: Request) -> "List[Any]":
    """The job objects of a request: one, or one per array task (random cell seeded by its index, or a
    share of the scenes to predict)."""
    if req.command == "predict":
        assert req.checkpoint and req.input and req.out
        tasks = req.array or 1
        checkpoint, source, out_dir = (str(Path(p).resolve()) for p in (req.checkpoint, req.input, req.out))
        return [
            PredictJob(checkpoint, source, out_dir, f"{i}/{tasks}" if tasks > 1 else None, req.predict_options)
            for i in range(tasks)
        ]
    assert req.config
    out = str(Path(req.out or f"runs/{req.command}-{JOB_ID}").resolve())
    config = str(Path(req.config).resolve())
    genotype = str(Path(req.genotype).resolve()) if req.genotype else None
    if req.array is None:
        return [PipelineJob(req.command, config, req.overrides, out, genotype, req.baseline)]
    per_task = (lambda i: out) if JOB_ID in out else (lambda i: f"{out}/{i}")  # one run directory per array task
    return [PipelineJob("train", config, req.overrides, per_task(i), "random", None, seed=i) for i in range(req.array)]


def sbatch_text(req: Request) -> str:
    """The sbatch script submitit would submit (``--dry-run``), without needing SLURM here."""
    # what SlurmExecutor itself calls (submitit pinned < 2; the dev-cluster test checks that the two scripts agree)
    from submitit.slurm.slurm import _make_sbatch_string

    _check(req)
    params = slurm_parameters(req)
    if req.array is not None:
        params["map_count"] = req.array
    folder = Path(req.logs).resolve() / JOB_ID
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, **params)  # the command as SlurmExecutor quotes it


def submit(req: Request, local: bool = False) -> List[Tuple[Any, str]]:
    """Submit the request's job(s) to SLURM (or run them locally); returns (submitit job, run directory) pairs."""
    _check(req)
    try:
        import submitit
    except ImportError:
        raise UserError("submitit is not installed (pip install submitit, or envs/setup.sh)") from None
    folder = Path(req.logs).resolve() / JOB_ID
    executor: submitit.Executor
    if local:
        executor = submitit.LocalExecutor(folder, max_num_timeout=MAX_REQUEUES)
        executor.update_parameters(timeout_min=time_minutes(req.time), tasks_per_node=1, nodes=1)
    else:
        try:
            executor = submitit.SlurmExecutor(folder, max_num_timeout=MAX_REQUEUES)
        except RuntimeError:
            raise UserError(
                "no SLURM here (no srun on PATH): use --local to run without SLURM, or --dry-run to see the job"
            ) from None
        executor.update_parameters(**slurm_parameters(req))
    jobs = jobs_for(req)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's stderr: we report it once, below
            if len(jobs) == 1:
                submitted = [executor.submit(jobs[0])]
            else:
                with executor.batch():
                    submitted = [executor.submit(job) for job in jobs]
    except submitit.core.utils.FailedJobError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise UserError(
            f"sbatch refused the job: {lines[0] if lines else exc}"
        ) from None  # sbatch's first line names the cause
    return [(s, job.out.replace(JOB_ID, str(s.job_id))) for s, job in zip(submitted, jobs)]


ENDINGS = {  # SLURM's final job states, as a user would say them
    "CANCELLED": "was cancelled",
    "TIMEOUT": "reached its time limit",
    "NODE_FAIL": "lost its node",
    "OUT_OF_MEMORY": "ran out of memory",
    "PREEMPTED": "was preempted",
    "BOOT_FAIL": "failed to boot its node",
    "DEADLINE": "passed its deadline",
    "FAILED": "failed",
}


def how_it_ended(state: Optional[str]) -> Optional[str]:
    """``"was cancelled"`` for a SLURM state such as ``CANCELLED by 0``; None for a state that is no ending."""
    word = (state or "").split()[0].rstrip("+") if state else ""
    return ENDINGS.get(word)


def final_job_state(job_id: str, patience_s: float = 120.0) -> Optional[str]:
    """The state a job ended in, waiting up to ``patience_s`` while SLURM still shows it running or completing
    (a cancelled job's processes get SLURM's KillWait, 30 s by default, before they are killed)."""
    deadline = time.monotonic() + patience_s
    while True:
        state = slurm_job_state(job_id)
        if state is None or how_it_ended(state) or state.startswith("COMPLETED") or time.monotonic() > deadline:
            return state
        time.sleep(1.0)


def _first_line(cmd: List[str]) -> Optional[str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    return lines[0] if proc.returncode == 0 and lines else None


def slurm_job_state(job_id: str) -> Optional[str]:
    """A job's state from ``squeue`` (pending or running) or else ``sacct`` (ended); ``None`` if neither answers.

    A job that ``squeue`` shows ``COMPLETING`` has already ended in ``sacct`` (``CANCELLED by 0``, say), and
    that ending is the answer."""
    queued = _first_line(["squeue", "-h", "-j", job_id, "-o", "%T"])
    if queued is not None and queued != "COMPLETING":
        return queued
    return _first_line(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"]) or queued
