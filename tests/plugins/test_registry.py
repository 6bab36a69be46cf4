"""The registries: built-ins imported by name only when used, each under the name its config key takes."""

import subprocess
import sys

import pytest

from hpcnas import plugins
from hpcnas.errors import UserError

REGISTRIES = [
    plugins.TOPOLOGIES,
    plugins.OP_SETS,
    plugins.OPS,
    plugins.STRATEGIES,
    plugins.EVALUATORS,
    plugins.OBJECTIVES,
    plugins.ARCH_OPTIMIZERS,
    plugins.COSTS,
    plugins.LOSSES,
    plugins.ZERO_COST_SCORES,
]


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.what)
def test_every_built_in_resolves_and_answers_to_its_own_name(registry):
    assert len(registry) >= 2
    for name in registry:
        entry = registry[name]
        assert getattr(entry, "name", name) == name  # a class or record that names itself names itself alike


def test_every_op_of_every_op_set_is_registered_and_builds():
    import torch

    from hpcnas.space.ops import build_op

    assert {op for ops in plugins.OP_SETS.values() for op in ops} == set(plugins.OPS)
    for name in plugins.OPS:
        for stride in (1, 2):
            if stride not in plugins.OPS[name].strides:
                with pytest.raises(ValueError):
                    build_op(name, 4, stride, affine=True)
                continue
            out = build_op(name, 4, stride, affine=True)(torch.randn(1, 4, 8, 8))
            assert out.shape == (1, 4, 8 // stride, 8 // stride), name


def test_an_op_set_naming_an_unregistered_op_is_refused_with_the_op_named():
    from hpcnas.space.searchspace import SearchSpace

    plugins.OP_SETS.add("O_typo", ("sep_conv_3x3", "sep_conv_3x4", "none"))
    try:
        with pytest.raises(UserError, match=r"op set 'O_typo' names an unknown op 'sep_conv_3x4' \(did you mean"):
            SearchSpace.of("darts_unet", "O_typo")
    finally:
        plugins.OP_SETS._entries.pop("O_typo")


def test_checking_a_config_imports_no_torch():
    code = (
        "import sys; from hpcnas.config import load_config; "
        "load_config('configs/smoke.yaml', ['search.arch_optimizer=adam', 'train.loss=focal', "
        "'search.cost.kind=latency', 'evolve.strategy.name=nsga2', 'evolve.evaluator.name=sleep']); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=plugins.__file__.rsplit("/hpcnas/", 1)[0])


def test_an_unknown_name_lists_the_known_ones_and_an_added_one_is_known():
    registry = plugins.Registry("widget", "section.widget", {"round": "math:pi"})
    with pytest.raises(UserError, match=r"key 'section.widget': unknown widget 'rond' \(did you mean 'round'\?\)"):
        registry["rond"]
    assert registry["round"] == pytest.approx(3.14159, abs=1e-5)

    @registry.register
    class Square:
        name = "square"

    assert list(registry) == ["round", "square"] and registry["square"] is Square
    registry.add("round", 3)  # a plugin may replace a built-in
    assert registry["round"] == 3
    with pytest.raises(TypeError):
        registry.add("", 1)


@pytest.mark.parametrize(
    "override, message",
    [
        ("evolve.measure.latency.runs=3", "key 'evolve.measure.latency': objective 'latency' has no settings"),
        ("evolve.measure.latncy.runs=3", "unknown objective 'latncy' (did you mean 'latency'?)"),
        ("evolve.objectives=[miou, latncy]", "key 'evolve.objectives[1]': unknown objective 'latncy'"),
    ],
)
def test_objective_settings_and_names_are_checked(override, message):
    from hpcnas.config import load_config
    from hpcnas.strategies.objectives import parse_objectives

    with pytest.raises(UserError) as caught:
        parse_objectives(load_config(None, [override]).evolve.objectives)
    assert message in str(caught.value)
