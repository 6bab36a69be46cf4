"""Genotypes: JSON round trip, validation lines, seeded sampling and mutation."""

from __future__ import annotations

import random

import pytest

from hpcnas.errors import UserError
from hpcnas.space.genotype import TOPOLOGIES, Genotype, unetpp_paths
from hpcnas.space.searchspace import SearchSpace


@pytest.mark.parametrize("topology", list(TOPOLOGIES))
def test_round_trip_and_hash(topology, tmp_path):
    g = SearchSpace.of(topology).sample(random.Random(3))
    path = tmp_path / "g.json"
    g.save(path)
    again = Genotype.load(str(path))
    assert again == g and hash(again) == hash(g)
    assert len({g, again}) == 1


def test_sampling_and_mutation_are_seeded():
    for topology in TOPOLOGIES:
        a = SearchSpace.of(topology).sample(random.Random(7))
        assert a == SearchSpace.of(topology).sample(random.Random(7))
        assert a != SearchSpace.of(topology).sample(random.Random(8))
        m = SearchSpace.of(a.topology, nodes=len(a.decoder_cells()[0])).mutate(random.Random(1), a)
        assert m == SearchSpace.of(a.topology, nodes=len(a.decoder_cells()[0])).mutate(random.Random(1), a) and m != a
        # exactly one change
        diffs = sum(
            x != y for (_, ca), (_, cb) in zip(a.cells, m.cells) for na, nb in zip(ca, cb) for x, y in zip(na, nb)
        )
        assert diffs + (a.paths != m.paths) == 1
        Genotype.from_dict(m.to_dict())  # mutants stay valid


def test_sampling_never_draws_zero_ops():
    g = SearchSpace.of("darts_unet", nodes=8).sample(random.Random(0))
    assert not any(op in ("none", "cut") for _, cell in g.cells for node in cell for op, _ in node)


def base():
    return SearchSpace.of("darts_unet").sample(random.Random(0)).to_dict()


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: d["cells"]["normal"][0].__setitem__(0, ["sep_conv_9x9", 0]),
            "key 'cells.normal[0][0]': unknown op 'sep_conv_9x9' for O_base (did you mean",
        ),
        (
            lambda d: d["cells"]["normal"][1].__setitem__(0, ["skip_connect", 3]),
            "key 'cells.normal[1][0]': input 3 out of range: node 1 may read inputs 0..2",
        ),
        (
            lambda d: d.__setitem__("topology", "darts_unet3"),
            "key 'topology': unknown topology 'darts_unet3' (did you mean 'darts_unet'?)",
        ),
        (lambda d: d["cells"].pop("reduce"), "key 'cells.reduce': missing cell"),
        (lambda d: d.__setitem__("paths", [[[0, 0], [0, 1]]]), "key 'paths': only UNet++ genotypes have paths"),
        (lambda d: d.__setitem__("colour", 1), "key 'colour': unknown key"),
    ],
)
def test_invalid_genotype_lines(edit, message):
    raw = base()
    edit(raw)
    with pytest.raises(UserError) as info:
        Genotype.from_dict(raw, source="g.json")
    assert str(info.value).startswith("g.json: ") and message in str(info.value)


def test_bad_unetpp_path():
    raw = SearchSpace.of("darts_unetpp", depth=2).sample(random.Random(0)).to_dict()
    raw["paths"] = [[[0, 0], [1, 1], [0, 2]]]
    with pytest.raises(UserError, match=r"\[0, 0\] -> \[1, 1\] is not a UNet\+\+ edge"):
        Genotype.from_dict(raw)


def test_wrong_node_count_against_space():
    g = SearchSpace.of("darts_unet", nodes=3).sample(random.Random(0))
    SearchSpace.of("darts_unet", nodes=3, depth=3).check(g, "g.json")
    with pytest.raises(UserError, match="has 3 nodes, the config's space.nodes gives 4"):
        SearchSpace.of("darts_unet", nodes=4, depth=3).check(g, "g.json")


def test_malformed_json_file(tmp_path):
    path = tmp_path / "g.json"
    path.write_text('{"topology": "darts_unet", ')
    with pytest.raises(UserError, match="malformed JSON"):
        Genotype.load(str(path))


def test_path_enumeration_counts():
    # X(0,0) -> X(0,d): every monotone walk on the UNet++ grid
    assert [len(unetpp_paths(d)) for d in (1, 2, 3, 4)] == [2, 5, 13, 34]
    for path in unetpp_paths(3):
        assert path[0] == (0, 0) and path[-1] == (0, 3)


def test_the_space_counts_what_it_samples():
    tiny = SearchSpace.of("darts_unet", nodes=1, edges_per_node=1)  # one node, one edge from 2 inputs, 7 ops
    assert tiny.count() == (7 * 2) ** 2
    seen = {tiny.sample(random.Random(i)) for i in range(3000)}
    assert len(seen) == tiny.count()  # every genotype reachable, no other
    resnext = SearchSpace.of("resnext_unet", towers=2, tower_depth=1)  # fixed inputs: 10 ops per node
    assert resnext.count() == (10 * 10) ** 2
    assert SearchSpace.of("darts_unetpp", nodes=1, edges_per_node=1, depth=1).count() == (7 * 2) ** 2 * 3
