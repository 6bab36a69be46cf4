"""The worker child's evaluator: what it reads once, and what each task changes."""

from pathlib import Path

from hpcnas.config import dump_config, load_config
from hpcnas.execution.worker import TrainEvaluator
from hpcnas.records import WorkerSetup

ROOT = Path(__file__).resolve().parents[2]


def test_the_config_and_data_info_are_read_at_the_first_task_only(tmp_path, synth_h5):
    config = tmp_path / "config.yaml"
    dump_config(load_config(ROOT / "configs" / "smoke-evolve.yaml"), config)
    evaluator = TrainEvaluator(WorkerSetup(str(config), str(synth_h5), str(tmp_path), proxy_epochs=3))
    cfg, info = evaluator.config_and_info(batch_size=4)
    assert (cfg.train.epochs, cfg.train.select_from_epoch, cfg.train.batch_size) == (3, 0, 4)
    assert info.num_classes > 1
    config.unlink()  # a later task must not need the file again
    shrunk, same_info = evaluator.config_and_info(batch_size=2)
    assert (shrunk.train.epochs, shrunk.train.batch_size) == (3, 2) and same_info is info
    assert cfg.train.batch_size == 4  # each task gets its own copy
