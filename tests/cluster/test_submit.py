"""hpcnas submit without a cluster: time limits, sbatch parameters, the generated script, bad requests."""

from __future__ import annotations

import pytest

from hpcnas.cluster.submit import Request, jobs_for, sbatch_text, slurm_parameters, time_minutes
from hpcnas.errors import UserError
from tests.conftest import ROOT, run_cli, set_args

SMOKE = str(ROOT / "configs" / "smoke.yaml")


@pytest.mark.parametrize(
    "text,minutes", [("00:10:00", 10), ("20:00:00", 1200), ("00:00:30", 1), ("1-00:00:01", 1441), ("00:01:59", 2)]
)
def test_time_limits(text, minutes):
    assert time_minutes(text) == minutes


@pytest.mark.parametrize("text", ["10", "1:60:00", "00:00:00", "ab:cd:ef", "-1:00:00"])
def test_bad_time_limits(text):
    with pytest.raises(UserError, match="--time"):
        time_minutes(text)


def test_parameters_follow_the_gpus():
    search = slurm_parameters(
        Request(
            "search", SMOKE, nodes=2, gpus_per_node=4, cpus_per_task=10, time="20:00:00", partition="gpu", account="abc"
        )
    )
    assert (
        search["ntasks_per_node"] == 4 and search["gres"] == "gpu:4" and search["nodes"] == 2 and search["time"] == 1200
    )
    assert search["partition"] == "gpu" and search["account"] == "abc" and "qos" not in search
    assert search["signal_delay_s"] == 120 and search["additional_parameters"] == {"hint": "nomultithread"}
    train = slurm_parameters(Request("train", SMOKE, gpus_per_node=4, genotype="g.json"))
    assert train["ntasks_per_node"] == 1 and train["gres"] == "gpu:1"
    cpu_only = slurm_parameters(Request("evolve", SMOKE, gpus_per_node=0))
    assert cpu_only["ntasks_per_node"] == 1 and "gres" not in cpu_only


def test_dry_run_prints_the_sbatch_script(tmp_path):
    done = run_cli(
        "submit",
        "--config",
        SMOKE,
        "--command",
        "search",
        "--nodes",
        "2",
        "--gpus-per-node",
        "4",
        "--time",
        "02:00:00",
        "--qos",
        "q1",
        "--constraint",
        "v100-32g",
        "--logs",
        str(tmp_path / "logs"),
        "--dry-run",
    )
    assert done.returncode == 0, done.stderr
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gres=gpu:4",
        "#SBATCH --cpus-per-task=10",
        "#SBATCH --hint=nomultithread",
        "#SBATCH --time=120",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --qos=q1",
        "#SBATCH --constraint=v100-32g",
        "srun ",
    ):
        assert line in done.stdout, line
    assert not (tmp_path / "logs").exists()  # nothing submitted, nothing written


def test_array_gives_one_seeded_random_cell_and_run_directory_per_task(tmp_path):
    jobs = jobs_for(Request("train", SMOKE, array=3, out=str(tmp_path / "random")))
    assert [(j.genotype, j.seed) for j in jobs] == [("random", 0), ("random", 1), ("random", 2)]
    assert [j.out for j in jobs] == [str(tmp_path / "random" / str(i)) for i in range(3)]
    assert "#SBATCH --array=0-2" in sbatch_text(Request("train", SMOKE, array=3, gpus_per_node=1, logs=str(tmp_path)))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--command", "search", "--array", "3"], "--array: --array N trains N random cells"),
        (["--command", "train"], "--command train needs --genotype"),
        (["--command", "train", "--genotype", "g.json", "--nodes", "2"], "--nodes: train runs as one process"),
        (["--command", "search", "--time", "90"], "--time: '90' is not a time limit"),
        (
            ["--command", "search", "--time", "00:01:00", "--signal-delay", "120"],
            "--signal-delay: the warning must come before the time limit",
        ),
        (["--command", "search", "--set", "search.epoch=3"], "key 'search.epoch'"),
    ],
)
def test_bad_requests_are_one_line(args, message):
    done = run_cli("submit", "--config", SMOKE, *args, "--dry-run")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_predict_requests_are_checked_before_submitting(tmp_path):
    (tmp_path / "scenes").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "scenes" / name).write_bytes(b"")
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"")
    base = ["submit", "--command", "predict", "--dry-run"]
    scenes = ["--input", str(tmp_path / "scenes")]
    for args, message in [
        ([*scenes, "--out", "o"], "--command predict needs --checkpoint, --input and --out"),
        (["--checkpoint", str(tmp_path / "no.pt"), *scenes, "--out", "o"], "no.pt: no such file"),
        (["--checkpoint", str(ckpt), *scenes, "--out", "o", "--array", "3"], "--array must be between 1 and the 2"),
        (["--checkpoint", str(ckpt), *scenes, "--out", "o-%j"], "give --out without %j"),
        (["--checkpoint", str(ckpt), "--input", str(tmp_path), "--out", "o"], "no scenes"),
    ]:
        done = run_cli(*base, *args)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, (args, done.stderr)
    dry = run_cli(*base, "--checkpoint", str(ckpt), *scenes, "--out", "o", "--array", "2")
    assert dry.returncode == 0, dry.stderr
    assert "#SBATCH --array=0-1" in dry.stdout and "#SBATCH --gres=gpu:1" in dry.stdout
    jobs = jobs_for(Request("predict", checkpoint=str(ckpt), input=str(tmp_path / "scenes"), out="o", array=2))
    assert [job.part for job in jobs] == ["0/2", "1/2"] and len({job.out for job in jobs}) == 1


@pytest.mark.slow
def test_local_runs_the_job_here_and_waits(tmp_path):
    tiny = [
        "data.synth.n=16",
        "data.synth.size=32",
        "space.channels=8",
        "space.depth=2",
        "space.nodes=2",
        "search.epochs=1",
        "search.arch_start_epoch=1",
        "device=cpu",
    ]
    run = tmp_path / "run"
    done = run_cli(
        "submit",
        "--config",
        SMOKE,
        *set_args(tiny),
        "--command",
        "search",
        "--local",
        "--out",
        str(run),
        "--logs",
        str(tmp_path / "logs"),
    )
    assert done.returncode == 0, done.stderr
    assert "(local): hpcnas search -> " + str(run) in done.stdout and f"done: {run}" in done.stdout
    assert (run / "genotype.json").exists() and (run / "checkpoints" / "latest.pt").exists()


INJECTIONS = {
    "newline": "x\ntouch INJECTED #",
    "command substitution": "$(touch INJECTED)",
    "backtick": "`touch INJECTED`",
    "sbatch directive": "#SBATCH --uid=0",
}
SCRIPT_FIELDS = ("partition", "account", "qos", "constraint", "time", "logs", "out", "config", "genotype", "set")


def _request_with(field: str, value: str, tmp_path) -> Request:
    fields = {"config": SMOKE, "logs": str(tmp_path / "logs"), "out": str(tmp_path / "run")}
    if field == "set":
        return Request("train", genotype="g.json", overrides=[f"data.path={value}"], **fields)
    if field == "config":  # a real file under that name: refused for its name, not because it is missing
        (tmp_path / "c").mkdir(exist_ok=True)
        path = tmp_path / "c" / value.replace("\n", "_").replace("/", "_")
        path.write_text((ROOT / "configs" / "smoke.yaml").read_text())
        fields["config"] = str(path)
        return Request("search", **fields)
    if field in ("logs", "out"):
        fields[field] = str(tmp_path / value)
        return Request("search", **fields)
    if field == "genotype":
        return Request("train", genotype=str(tmp_path / value), **fields)
    return Request("search", **{**fields, field: value})


@pytest.mark.parametrize("payload", list(INJECTIONS))
@pytest.mark.parametrize("field", SCRIPT_FIELDS)
def test_no_value_can_add_a_line_or_a_command_to_the_job_script(field, payload, tmp_path):
    clean = sbatch_text(Request("search", SMOKE, logs=str(tmp_path / "logs"), out=str(tmp_path / "run")))
    value = INJECTIONS[payload]
    try:
        script = sbatch_text(_request_with(field, value, tmp_path))
    except UserError as exc:  # refused: the error names the option and the value
        assert f"--{field}" in str(exc) or field in ("config", "genotype", "out", "logs"), str(exc)
        return
    # accepted (a pickled value such as --set, which the script never holds): the script is the clean one's
    # apart from the job's own parameters, and the value is nowhere in it
    assert "INJECTED" not in script and "--uid" not in script
    directives = lambda text: [line.split("=")[0] for line in text.splitlines() if line.startswith("#SBATCH")]  # noqa: E731
    assert directives(script) == directives(clean)
    assert len(script.splitlines()) == len(clean.splitlines())


def test_the_issue_s_injection_through_logs_is_refused_with_one_line_and_runs_nothing(tmp_path):
    proc = run_cli(
        "submit", "--config", SMOKE, "--command", "search", "--logs", "x\ntouch INJECTED #", "--dry-run", cwd=tmp_path
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "hpcnas: error: --logs: control character in 'x\\ntouch INJECTED #'\n"
    assert list(tmp_path.iterdir()) == []  # no INJECTED, no logs folder


def test_the_job_script_starts_mpi_without_the_x_display_probe():
    script = sbatch_text(Request("evolve", SMOKE))
    assert "export HWLOC_COMPONENTS=${HWLOC_COMPONENTS:--gl}" in script
    assert "export HWLOC_COMPONENTS=${HWLOC_COMPONENTS:--gl}" in (ROOT / "slurm" / "lib" / "job.sh").read_text()


def test_a_path_with_spaces_is_one_quoted_word_in_the_job_script(tmp_path):
    script = sbatch_text(Request("search", SMOKE, logs=str(tmp_path / "my logs")))
    command = script.strip().splitlines()[-1]
    assert command.endswith(f"-u -m submitit.core._submit '{tmp_path}/my logs/%j'")
    assert f"#SBATCH --output='{tmp_path}/my logs/%j/%j_0_log.out'" in script
