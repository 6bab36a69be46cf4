"""``hpcnas status``: where a run stands, from its run directory alone (a login node on the shared file system).

Rank 0 of a search, train or evolve rewrites ``heartbeat.json`` every few
seconds while it runs and writes its final state when it ends; the rest comes
from the files the run writes anyway (config.yaml, metrics.jsonl,
history.jsonl, dispatch.jsonl).

A run's ``state`` is one of :data:`STATES`.  A heartbeat that still says
"running" is checked: on the run's own host its pid must be alive (and be the
same process, not a later one given the same number), else the run is
``dead``; from another host only its age can tell, and one older than
:data:`STALE_S` is ``stale`` (a timer rewrites it every few seconds while the
process lives, whatever the process is doing).  The details go in separate
fields (``state_detail``, ``pid``, ``host``, ``heartbeat_age_s``).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from hpcnas.cluster.submit import slurm_job_state
from hpcnas.config import Config, EvolveConfig, load_config
from hpcnas.errors import UserError
from hpcnas.execution.history import utilization
from hpcnas.records import Evaluation
from hpcnas.rundir import RunDir, read_jsonl
from hpcnas.strategies.objectives import best_feasible, parse_objectives

STALE_S = 120.0  # a running heartbeat older than this: the process is gone
STATES = ("running", "stale", "stopped", "finished", "failed", "dead", "unknown")


def process_start_time(pid: int) -> Optional[float]:
    """When process ``pid`` started (seconds since the epoch), or None when there is no such process.

    Linux's /proc gives the start in clock ticks after boot; elsewhere only whether it exists is known
    (then the current time stands in, which never looks like a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # it exists, owned by someone else
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return time.time()


def running_state(beat: Dict[str, Any], age: float) -> "tuple[str, Optional[str]]":
    """``running``, ``dead`` or ``stale`` for a heartbeat that says running, with the detail."""
    pid, host = beat.get("pid"), beat.get("host")
    if host and host == socket.gethostname() and isinstance(pid, int):
        started = process_start_time(pid)
        # the start clock is read in ticks, and a heartbeat's "started" is taken after the process began
        if started is None or started > float(beat.get("started", 0)) + 2.0:
            return "dead", f"pid {pid} on {host} is gone (last heartbeat {_ago(age)})"
        return "running", None
    if age > STALE_S:
        return "stale", f"last heartbeat {_ago(age)}, from {host or 'another host'}"
    return "running", None


def _read_config(run: RunDir) -> Optional[Config]:
    """The run's configuration as the run itself read it (old flat keys moved to their sections); ``None`` where
    config.yaml is missing or no longer loads (a run of an older version, with a key since removed)."""
    if not run.config.exists():
        return None
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # an old run's deprecated keys are not this command's news
            return load_config(str(run.config))
    except UserError:
        return None


def _clock(seconds: Optional[float]) -> Optional[str]:
    if seconds is None:
        return None
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def run_status(run_dir: str, now: Optional[float] = None) -> Dict[str, Any]:
    """Everything ``hpcnas status`` shows about one run, as plain data (``--json`` prints it as is)."""
    now = time.time() if now is None else now
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError("no such run directory", source=str(run_dir))
    run = RunDir(path)
    beat = run.heartbeat_record()
    if not beat and not run.config.exists():
        raise UserError("not a run directory (no config.yaml, no heartbeat.json)", source=str(run_dir))
    config = _read_config(run)
    history = read_jsonl(run.history)
    command = beat.get("command") or ("evolve" if run.history.exists() else "search" if run.arch.exists() else "train")
    out: Dict[str, Any] = {"run": str(path), "command": command, "config": str(run.config)}

    state, age = "unknown", None
    detail: Optional[str] = "no heartbeat: a run from before heartbeats, or not started by search/train/evolve"
    if beat:
        age = now - float(beat.get("time", now))
        state = beat.get("state", "") if beat.get("state") in ("running", "finished", "stopped") else "failed"
        detail = "resumable with --resume" if state == "stopped" else None
        if state == "running":
            state, detail = running_state(beat, age)
        if beat.get("error") and state in ("failed", "stopped"):
            out["error"] = beat["error"]
        out.update(pid=beat.get("pid"), host=beat.get("host"))
    out.update(state=state, state_detail=detail, heartbeat_age_s=round(age, 1) if age is not None else None)
    live = state == "running"
    progress = beat.get("progress", {}) if beat else {}

    if command == "evolve":
        budget = config.evolve.max_evaluations if config else None
        dispatch = read_jsonl(run.dispatch)
        dispatched = {r["id"] for r in dispatch}
        finished = {r["id"] for r in history}
        counts: Dict[str, int] = {}
        for r in history:
            counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
        evaluations = [Evaluation.from_dict(r) for r in history]
        evolve = config.evolve if config else EvolveConfig()
        proxy_epochs = evolve.evaluator.proxy_epochs
        used = sum(e.budget_used(proxy_epochs) for e in evaluations)  # halving and too_big: less
        out.update(
            finished=len(history),
            budget=budget,
            budget_used=round(used, 3),
            by_status=counts,
            in_flight=len(dispatched - finished),
        )
        fraction = used / budget if budget else None
        objectives = parse_objectives(evolve.objectives)
        best = best_feasible(objectives, evaluations)
        if best is not None:  # the primary objective's best inside every bound, as the search itself picks it
            primary = objectives[0]
            out["best"] = {"evaluation": best.id, "objective": primary.name, "value": primary.value(best)}
        ranks = progress.get("ranks")
        starts = [r["submit"] for r in dispatch if r.get("submit") is not None]
        until = now if live else float(beat.get("time", now)) if beat else now
        share = utilization(evaluations, ranks or 0, min(starts), until) if starts else None
        if share is not None:
            out.update(utilization=round(share, 4), ranks=ranks)
    else:
        section = "search" if command == "search" else "train"
        epochs = getattr(config, section).epochs if config else None
        metrics = read_jsonl(run.metrics)
        done = len(metrics)
        out.update(epochs_done=done, epochs=epochs)
        fraction = done / epochs if epochs else None
        # inside an epoch: live, or stopped there (its steps are in the checkpoint); epochs count from 1
        if (live or state == "stopped") and progress.get("steps") and progress.get("epoch", 0) > done and epochs:
            out.update(epoch=progress["epoch"], step=progress.get("step"), steps=progress["steps"])
            fraction = (done + progress.get("step", 0) / progress["steps"]) / epochs
            if live and progress.get("phase") == "validating":
                out.update(
                    phase="validating", val_batch=progress.get("val_batch"), val_batches=progress.get("val_batches")
                )
        vals = [r["val_miou"] for r in metrics if r.get("val_miou") is not None]
        if vals:
            out["best"] = {"val_miou": max(vals), "epoch": metrics[vals.index(max(vals))].get("epoch")}
    out["fraction"] = round(fraction, 4) if fraction is not None else None
    if beat:
        elapsed = (now if live else float(beat.get("time", now))) - float(beat.get("started", now))
        out["elapsed_s"] = round(elapsed, 1)
        if live and fraction and 0 < fraction < 1:
            out["eta_s"] = round(elapsed * (1 - fraction) / fraction, 1)
    job = beat.get("slurm_job") if beat else None
    if job:
        out["slurm_job"] = job
        out["slurm_state"] = slurm_job_state(str(job))
    return out


def format_status(s: Dict[str, Any]) -> str:
    """One screen (a few lines) per run."""
    lines = [f"{s['run']}  {s['command']}  (config: {s['config']})"]
    state = s["state"]
    if s.get("heartbeat_age_s") is not None and state == "running":
        state += f" (heartbeat {_ago(s['heartbeat_age_s'])}, pid {s.get('pid')} on {s.get('host')})"
    elif s.get("state_detail"):
        state += f" ({s['state_detail']})"
    lines.append(f"  state       {state}")
    if s.get("error"):
        lines.append(f"  last error  {s['error']}")
    if s["command"] == "evolve":
        counts = ", ".join(f"{k} {v}" for k, v in sorted(s["by_status"].items())) or "none yet"
        of = f"/{s['budget']}" if s.get("budget") else ""
        flight = (
            f", {s['in_flight']} in flight"
            if s["state"] == "running"
            else (f", {s['in_flight']} to re-queue on --resume" if s["in_flight"] else "")
        )
        if s["budget_used"] == s["finished"]:
            lines.append(f"  progress    {s['finished']}{of} evaluations finished ({counts}){flight}")
        else:  # stopped at rungs or too big: the budget counts epochs, not evaluations
            used = f"{s['budget_used']:g}{of} of the budget used"
            lines.append(f"  progress    {s['finished']} evaluations finished ({counts}), {used}{flight}")
        if s.get("utilization") is not None:
            lines.append(f"  utilization {100 * s['utilization']:.1f} % of {s['ranks']} rank(s) so far")
        if s.get("best"):
            best = s["best"]
            lines.append(f"  best        {best['objective']} {best['value']:.4g} (evaluation {best['evaluation']})")
    else:
        of = f"/{s['epochs']}" if s.get("epochs") else ""
        inside = f", in epoch {s['epoch']} step {s['step']}/{s['steps']}" if s.get("steps") else ""
        if s.get("phase") == "validating":
            inside = f", validating epoch {s['epoch']} (batch {s['val_batch']}/{s['val_batches']})"
        lines.append(f"  progress    epoch {s['epochs_done']}{of} done{inside}")
        if s.get("best"):
            lines.append(f"  best        val mIoU {s['best']['val_miou']:.4f} (epoch {s['best']['epoch']})")
    if s.get("fraction") is not None:
        timing = f"{100 * s['fraction']:.0f} %"
        if s.get("elapsed_s") is not None:
            timing += f", elapsed {_clock(s['elapsed_s'])}"
        if s.get("eta_s") is not None:
            timing += f", ETA {_clock(s['eta_s'])}"
        lines.append(f"  done        {timing}")
    if s.get("slurm_job"):
        lines.append(
            f"  slurm       job {s['slurm_job']}: {s.get('slurm_state') or 'unknown (no squeue/sacct answer)'}"
        )
    return "\n".join(lines)


def status_screens(run_dirs: List[str]) -> "tuple[str, List[Dict[str, Any]]]":
    """The text of every run's screen, and the data behind it."""
    statuses = [run_status(d) for d in run_dirs]
    return "\n\n".join(format_status(s) for s in statuses), statuses
