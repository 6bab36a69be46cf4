"""A search whose theta ended near uniform says so, with the fix: in the log (warning) and in the report."""

from __future__ import annotations

from hpcnas.search.diagnosis import UNMOVED_ENTROPY, unmoved_theta


def epoch(entropy: float, arch: bool, lr: float = 0.1) -> dict:
    return {"steps": 4, "arch_updates": arch, "arch_lr": lr, "entropy_normalized": {"normal": entropy, "mean": entropy}}


def test_an_unmoved_theta_is_named_with_its_steps_and_the_fix():
    message = unmoved_theta([epoch(1.0, False), epoch(0.995, True), epoch(0.99, True)])
    assert message is not None and "ended at 0.990 of uniform" in message
    assert "after 8 architecture steps with search.arch_lr 0.1" in message and "search.arch_lr=1" in message


def test_a_theta_that_moved_and_records_without_theta_say_nothing():
    assert unmoved_theta([epoch(1.0, False), epoch(UNMOVED_ENTROPY - 0.01, True)]) is None
    assert unmoved_theta([{"train_loss": 0.3, "val_miou": 0.5}]) is None
    assert unmoved_theta([]) is None


def test_a_scaled_step_is_told_to_move_further_not_to_raise_arch_lr():
    moved = dict(epoch(0.99, True, lr=0.0625), arch_movement=3.0)
    message = unmoved_theta([epoch(1.0, False), moved])
    assert message is not None and "with search.arch_movement 3" in message and "search.arch_movement=6" in message
    assert "arch_lr" not in message
