"""The embedded synthetic data: deterministic, imbalanced, cut objects, empty patches."""

from __future__ import annotations

import h5py
import numpy as np

from hpcnas.data.hdf5 import read_info
from hpcnas.data.synth import synthesize
from tests.conftest import run_cli


def test_exact_count_and_determinism(tmp_path):
    a, b, c = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "c.h5"
    counts = synthesize(a, n=10, size=32, seed=4)
    synthesize(b, n=10, size=32, seed=4)
    synthesize(c, n=10, size=32, seed=5)
    assert sum(counts.values()) == 10
    with h5py.File(a) as fa, h5py.File(b) as fb, h5py.File(c) as fc:
        for split in ("train", "val", "test"):
            np.testing.assert_array_equal(fa[f"{split}/images"][...], fb[f"{split}/images"][...])
        assert not np.array_equal(fa["train/images"][...], fc["train/images"][...])


def test_traits_of_the_paper_data(tmp_path):
    path = tmp_path / "s.h5"
    synthesize(path, n=80, size=64, seed=0)
    info = read_info(path)
    fraction = info.class_pixels[1] / info.class_pixels.sum()
    assert 0.001 < fraction < 0.1  # strong imbalance, but objects exist
    with h5py.File(path) as f:
        masks = np.concatenate([f[f"{s}/masks"][...] for s in ("train", "val", "test")])
    per_patch = (masks == 1).sum(axis=(1, 2))
    assert (per_patch == 0).any(), "no empty patch"
    touching = (
        (masks[:, 0, :] == 1).any(1)
        | (masks[:, -1, :] == 1).any(1)
        | (masks[:, :, 0] == 1).any(1)
        | (masks[:, :, -1] == 1).any(1)
    )
    assert touching.any(), "no object cut by a patch border"


def test_splits_by_source_image(tmp_path):
    path = tmp_path / "s.h5"
    synthesize(path, n=40, size=32, seed=2)
    with h5py.File(path) as f:
        sources = {s: set(f[f"{s}/source"][...].tolist()) for s in ("train", "val", "test")}
    assert (
        not (sources["train"] & sources["val"])
        and not (sources["train"] & sources["test"])
        and not (sources["val"] & sources["test"])
    )


def test_cli_synth(tmp_path):
    out = tmp_path / "cli.h5"
    proc = run_cli("data", "synth", "--out", str(out), "--n", "8", "--size", "32", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert sum(read_info(out).split_sizes.values()) == 8
