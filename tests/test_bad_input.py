"""A corpus of bad input: each case must end with exit 2, exactly one ``hpcnas: error:`` line naming
the problem, no traceback, and the work directory exactly as it was (a rejected command leaves nothing)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

SMOKE = str(ROOT / "configs" / "smoke.yaml")


def fixtures(work: Path) -> None:
    """The files the cases point at, made fresh in the work directory."""
    shutil.copy(SMOKE, work / "good.yaml")
    (work / "dup.yaml").write_text("seed: 1\nsearch:\n  epochs: 2\nseed: 2\n")
    (work / "latin1.yaml").write_bytes("seed: 1 # caf\xe9\n".encode("latin-1"))
    (work / "a_folder").mkdir()
    (work / "empty_run").mkdir()
    (work / "a_file").write_text("not a folder\n")
    (work / "truncated.h5").write_bytes(TRUNCATED)


def _truncated_h5() -> bytes:
    import tempfile

    from hpcnas.data.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.h5"
        synthesize(path, n=8, size=32)
        data = path.read_bytes()
    return data[: len(data) // 2]


TRUNCATED = _truncated_h5()


# (name, command line, expected fragment of the one error line)
CASES = [
    (
        "unknown key",
        ["search", "--config", "good.yaml", "--set", "search.epocs=1", "--out", "r"],
        "did you mean 'epochs'",
    ),
    (
        "NaN number",
        ["search", "--config", "good.yaml", "--set", "search.lr=.nan", "--out", "r"],
        "must be a finite number",
    ),
    (
        "negative seed",
        ["train", "--config", "good.yaml", "--set", "seed=-1", "--baseline", "resnet_unet", "--out", "r"],
        "key 'seed': must be >= 0",
    ),
    (
        "fractions above 1",
        [
            "search",
            "--config",
            "good.yaml",
            "--set",
            "data.synth.val_fraction=0.6",
            "--set",
            "data.synth.test_fraction=0.5",
            "--out",
            "r",
        ],
        "val_fraction + test_fraction",
    ),
    ("duplicate YAML key", ["search", "--config", "dup.yaml", "--out", "r"], "duplicate key 'seed'"),
    ("non-UTF-8 config", ["search", "--config", "latin1.yaml", "--out", "r"], "not UTF-8"),
    ("folder as --config", ["search", "--config", "a_folder", "--out", "r"], "is a directory, not a YAML file"),
    (
        "folder as --genotype",
        ["train", "--config", "good.yaml", "--genotype", "a_folder", "--out", "r"],
        "is a directory, not a genotype file",
    ),
    ("missing config", ["search", "--config", "nope.yaml", "--out", "r"], "nope.yaml: no such file"),
    (
        "unknown baseline",
        ["train", "--config", "good.yaml", "--baseline", "vgg", "--out", "r"],
        "unknown baseline 'vgg'",
    ),
    (
        "unknown architecture optimizer",
        ["search", "--config", "good.yaml", "--set", "search.arch_optimizer=sgd", "--out", "r"],
        "unknown architecture optimizer 'sgd' (known: gaea, adam)",
    ),
    (
        "unknown zero-cost score",
        ["evolve", "--config", "good.yaml", "--set", "evolve.prescreen.score=nasw0t", "--out", "r"],
        "key 'evolve.prescreen.score': unknown zero-cost score 'nasw0t' (did you mean 'naswot'?) "
        "(known: grad_norm, synflow, naswot, params)",
    ),
    ("synth: negative count", ["data", "synth", "--out", "d.h5", "--n", "-5"], "--n: needs at least 1 patch"),
    ("synth: zero size", ["data", "synth", "--out", "d.h5", "--size", "0"], "--size: patches must be at least 16 px"),
    ("synth: folder as output", ["data", "synth", "--out", "a_folder"], "is a directory"),
    ("report: no run there", ["report", "empty_run"], "holds no run"),
    ("report: no such folder", ["report", "nowhere"], "no such run directory"),
    (
        "evolve: population above the budget",
        [
            "evolve",
            "--config",
            "good.yaml",
            "--set",
            "evolve.strategy.population=9",
            "--set",
            "evolve.max_evaluations=4",
            "--out",
            "r",
        ],
        "evolve.strategy.population",
    ),
    (
        "evolve: sample above population",
        [
            "evolve",
            "--config",
            "good.yaml",
            "--set",
            "evolve.strategy.sample_size=9",
            "--set",
            "evolve.strategy.population=3",
            "--out",
            "r",
        ],
        "evolve.strategy.sample_size",
    ),
    (
        "submit: an injected #SBATCH line",
        ["submit", "--config", "good.yaml", "--partition", "gpu\n#SBATCH --uid=0", "--dry-run"],
        "control character",
    ),
    # found once the run directory exists: the directory the command created is removed again
    (
        "partial channels not dividing",
        ["search", "--config", "good.yaml", "--set", "search.partial_channels=3", "--out", "r"],
        "partial_channels",
    ),
    (
        "network deeper than the tile",
        ["search", "--config", "good.yaml", "--set", "space.depth=6", "--out", "r/deep"],
        "not divisible by the network stride",
    ),
    (
        "train on a truncated HDF5",
        [
            "train",
            "--config",
            "good.yaml",
            "--set",
            "data.path=truncated.h5",
            "--baseline",
            "resnet_unet",
            "--out",
            "r",
        ],
        "truncated.h5",
    ),
    ("smoke with a misspelt key", ["smoke", "--set", "search.epocs=1", "--out", "r"], "did you mean 'epochs'"),
    ("--out under a regular file", ["search", "--config", "good.yaml", "--out", "a_file/run"], "a file is in the way"),
    ("argparse: unknown option", ["search", "--config", "good.yaml", "--bogus"], "unrecognized arguments: --bogus"),
    ("argparse: bad choice", ["evaluate", "--checkpoint", "x.pt", "--split", "tset"], "invalid choice: 'tset'"),
]


def tree(work: Path) -> dict:
    return {str(p.relative_to(work)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(work.rglob("*"))}


@pytest.mark.slow
@pytest.mark.parametrize("argv, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(tmp_path, argv, fragment):
    work = tmp_path / "work"
    work.mkdir()
    fixtures(work)
    before = tree(work)
    proc = run_cli(*argv, cwd=work, env={"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    lines = [line for line in proc.stderr.splitlines() if line.startswith("hpcnas")]  # log lines aside
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("hpcnas: error: "), proc.stderr[-2000:]
    assert fragment in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert tree(work) == before, "a rejected command changed the work directory"


@pytest.mark.slow
def test_resume_refuses_other_data_and_a_lost_checkpoint(tmp_path):
    """Two inputs only a started run can have: its data edited away, its latest checkpoint deleted.
    Both are refused in one line, and the run's history is left as it was."""
    out = tmp_path / "run"
    tiny = ["--set", "search.epochs=1", "--set", "search.arch_start_epoch=1", "--set", "device=cpu"]
    assert run_cli("search", "--config", SMOKE, "--out", str(out), *tiny).returncode == 0
    other = tmp_path / "other.h5"
    assert run_cli("data", "synth", "--out", str(other), "--n", "20", "--size", "32").returncode == 0
    history, config = (out / "metrics.jsonl").read_text(), (out / "config.yaml").read_text()
    edited = run_cli("search", "--resume", str(out), "--set", f"data.path={other}")
    assert edited.returncode == 2 and "the data differs from the data this run started on" in edited.stderr
    (out / "checkpoints" / "latest.pt").unlink()
    lost = run_cli("search", "--resume", str(out))
    assert lost.returncode == 2 and "checkpoints/latest.pt is missing but 1 epoch(s) are logged" in lost.stderr
    assert (out / "metrics.jsonl").read_text() == history and (out / "config.yaml").read_text() == config


def test_data_info_reads_every_mask(tmp_path):
    import h5py

    data = tmp_path / "d.h5"
    assert run_cli("data", "synth", "--out", str(data), "--n", "8", "--size", "32").returncode == 0
    with h5py.File(data, "r+") as f:
        f["train"]["masks"][1, 3, 3] = 7
    proc = run_cli("data", "info", str(data))
    assert proc.returncode == 2 and "patch train[1] has class id 7, beyond the 2 classes" in proc.stderr
    with h5py.File(data, "r+") as f:
        f["train"]["masks"][1, 3, 3] = 0
        f["train"]["offsets"][0] = (-40, 0)
        f.attrs["class_weights"] = [1.0, float("nan")]
    proc = run_cli("data", "info", str(data))
    assert proc.returncode == 2 and "lies outside its source" in proc.stderr
