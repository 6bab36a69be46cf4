"""Configuration loading: defaults, YAML, --set, and one clear line per mistake."""

from __future__ import annotations

import pytest
import yaml

from hpcnas.config import Config, load_config, to_dict
from hpcnas.errors import UserError
from tests.conftest import ROOT, run_cli


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_defaults_are_the_papers():
    cfg = Config()
    assert cfg.space.channels == 16
    assert cfg.search.arch_start_epoch == 15
    assert cfg.search.arch_lr is None and cfg.search.arch_optimizer == "gaea"  # None: GAEA's own step, a movement of 12
    assert (cfg.search.lr, cfg.search.momentum, cfg.search.weight_decay) == (0.01, 0.9, 1e-3)
    assert cfg.search.epochs == 50 and cfg.search.batch_size == 2
    assert cfg.train.epochs == 80 and cfg.train.select_from_epoch == 30


def test_file_then_overrides(tmp_path):
    path = write(tmp_path, "search:\n  epochs: 7\n  lr: 1\nspace:\n  topology: resnext_unet\n")
    cfg = load_config(path, ["search.epochs=3", "space.channels=8", "search.decode.paths=4"])
    assert cfg.search.epochs == 3
    assert cfg.search.lr == 1.0 and isinstance(cfg.search.lr, float)
    assert cfg.space.topology == "resnext_unet" and cfg.space.channels == 8
    assert cfg.search.decode.paths == 4
    assert cfg.search.momentum == 0.9  # untouched default


@pytest.mark.parametrize(
    "text, overrides, expected",
    [
        ("search:\n  epocs: 3\n", [], "key 'search.epocs': unknown key (did you mean 'epochs'?)"),
        ("serch:\n  epochs: 3\n", [], "key 'serch': unknown key (did you mean 'search'?)"),
        ("search:\n  epochs: three\n", [], "key 'search.epochs': expected an integer"),
        ("search:\n  epochs: 0\n", [], "key 'search.epochs': must be >= 1, got 0"),
        ("search:\n  momentum: 1.5\n", [], "key 'search.momentum': must be <= 1.0"),
        (
            "space:\n  topology: darts_unet+\n",
            [],
            "key 'space.topology': unknown topology 'darts_unet+' (did you mean 'darts_unet'?) "
            "(known: darts_unet, darts_unetpp, resnext_unet, resnet_unet)",
        ),
        ("search:\n  edge_normalization: 1\n", [], "key 'search.edge_normalization': expected true or false"),
        ("search: 3\n", [], "key 'search': expected a section"),
        ("", ["search.epochs"], "--set: 'search.epochs' is not of the form section.key=value"),
        ("", ["seed.x=1"], "--set: key 'seed.x': 'seed' is a value, not a section"),
        ("", ["search.lrr=0.1"], "key 'search.lrr': unknown key (did you mean 'lr'?)"),
        (
            "space:\n  channels: 16\nsearch:\n  partial_channels: 3\n",
            [],
            "key 'search.partial_channels': space.channels=16 cannot be split into 1/3 parts",
        ),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, text, overrides, expected):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_config(path, overrides)
    assert expected in str(info.value)
    if not str(info.value).startswith("--set"):
        assert str(info.value).startswith(path)


def test_malformed_yaml_reports_line(tmp_path):
    path = write(tmp_path, "search:\n  epochs: [1, 2\n")
    with pytest.raises(UserError) as info:
        load_config(path)
    assert str(info.value).startswith(path) and "malformed YAML" in str(info.value)


def test_missing_file():
    with pytest.raises(UserError, match="no such file"):
        load_config("/nonexistent/c.yaml")


@pytest.mark.slow
def test_every_shipped_config_loads():
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert configs, "configs/ holds no YAML file"
    for path in configs:
        cfg = load_config(str(path))
        # the resolved config round-trips through YAML
        assert (
            load_config(
                None, [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in _flat(to_dict(cfg))]
            )
            == cfg
        )


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def test_cli_bad_key_is_one_line_exit_2(tmp_path):
    path = write(tmp_path, "search:\n  epocs: 3\n")
    proc = run_cli("search", "--config", path, "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"hpcnas: error: {path}: key 'search.epocs': unknown key (did you mean 'epochs'?)"]


def test_old_flat_evolve_keys_still_work_with_one_deprecation_line_each(tmp_path, capsys):
    path = tmp_path / "old.yaml"
    path.write_text(
        "evolve:\n  strategy: nsga2\n  population: 3\n  proxy_epochs: 2\n  inject_faults: ['1:oom']\n"
        "  evaluator: sleep\n  task_timeout: 9\n"
    )
    cfg = load_config(str(path), ["evolve.sample_size=2", "evolve.retry_oom_half_batch=false"])
    ev = cfg.evolve
    assert (ev.strategy.name, ev.strategy.options.population, ev.strategy.options.sample_size) == ("nsga2", 3, 2)
    assert (ev.evaluator.name, ev.evaluator.proxy_epochs, ev.executor.task_timeout) == ("sleep", 2, 9.0)
    assert ev.faults.inject == ["1:oom"] and ev.faults.retry_oom_half_batch is False
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 8 and all(line.startswith("hpcnas: deprecated: evolve.") for line in lines)
    assert "evolve.population is now evolve.strategy.population" in "\n".join(lines)
    # the new sections need no migration, and say nothing
    assert load_config(None, ["evolve.strategy.name=nsga2"]).evolve.strategy.name == "nsga2"
    assert capsys.readouterr().err == ""


def test_each_evaluator_reads_its_own_typed_settings(tmp_path, capsys):
    from hpcnas.config import dump_config
    from hpcnas.execution.orchestrator import worker_setup
    from hpcnas.execution.worker import SleepEvaluator

    cfg = load_config(None, ["evolve.evaluator.name=sleep", "evolve.evaluator.sleep_median=0.3"])
    assert cfg.evolve.evaluator.options == SleepEvaluator.Options(sleep_median=0.3, sleep_sigma=0.5)
    setup = worker_setup(cfg, tmp_path, "data.h5", 0, 1)  # what reaches the worker child, as JSON
    assert setup.evaluator_options == {"sleep_median": 0.3, "sleep_sigma": 0.5}
    assert SleepEvaluator(type(setup).from_dict(setup.to_dict())).options.sleep_median == 0.3
    dump_config(cfg, tmp_path / "config.yaml")
    assert "    name: sleep\n" in (tmp_path / "config.yaml").read_text()
    assert load_config(str(tmp_path / "config.yaml")) == cfg
    with pytest.raises(UserError, match="must be >= 0.0") as bad:
        load_config(None, ["evolve.evaluator.name=sleep", "evolve.evaluator.sleep_sigma=-1"])
    assert bad.value.key == "evolve.evaluator.sleep_sigma"
    # the shared keys are named where a key is unknown; the sleep settings are ignored by 'train', with a warning
    with pytest.raises(UserError, match="of every evaluator: name, proxy_epochs"):
        load_config(None, ["evolve.evaluator.colour=1"])
    capsys.readouterr()
    assert load_config(None, ["evolve.evaluator.sleep_median=2"]).evolve.evaluator.name == "train"
    assert "evolve.evaluator.sleep_median is not a setting of evaluator 'train': ignored" in capsys.readouterr().err
