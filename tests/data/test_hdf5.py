"""The HDF5 format: layout, lazy sharded reading, class weights, broken files."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from hpcnas.data.hdf5 import IGNORE_INDEX, PatchReader, balanced_class_weights, create_dataset, read_info
from hpcnas.data.sharding import shard_indices
from hpcnas.errors import UserError
from tests.conftest import run_cli


def test_layout_and_attributes(synth_h5):
    info = read_info(synth_h5)
    assert info.class_names == ["background", "rotorcraft"]
    assert info.tile_size == 32 and info.channels == 3
    assert sum(info.split_sizes.values()) == 24
    with h5py.File(synth_h5) as f:
        images = f["train/images"]
        assert images.dtype == np.uint8 and images.chunks == (1, 32, 32, 3)
        assert images.compression == "gzip"
        assert f["train/masks"].shape == images.shape[:3]
        # class weights are the balanced weights of the stored train pixel counts
        masks = f["train/masks"][...]
    counts = np.bincount(masks[masks != IGNORE_INDEX].ravel(), minlength=2)
    np.testing.assert_array_equal(info.class_pixels, counts)
    np.testing.assert_allclose(info.class_weights, counts.sum() / (2 * counts), rtol=1e-6)
    assert info.class_weights[1] > 10 * info.class_weights[0]  # strong imbalance


def test_balanced_weights_absent_class():
    np.testing.assert_allclose(balanced_class_weights(np.array([30, 10, 0])), [40 / 90, 40 / 30, 1.0], rtol=1e-6)


def test_reader_reads_one_patch(synth_h5):
    reader = PatchReader(synth_h5, "train", 2)
    image, mask = reader.read(3)
    with h5py.File(synth_h5) as f:
        np.testing.assert_array_equal(image, f["train/images"][3])
        np.testing.assert_array_equal(mask, f["train/masks"][3])
    reader.close()


def test_shards_partition_every_epoch():
    for world in (1, 2, 3):
        for epoch in (0, 1):
            shards = [shard_indices(12, r, world, epoch, seed=5) for r in range(world)]
            assert sorted(sum(shards, [])) == list(range(12))
    # the epoch changes the order, the seed makes it reproducible
    assert shard_indices(12, 0, 1, 0, 5) != shard_indices(12, 0, 1, 1, 5)
    assert shard_indices(12, 0, 1, 1, 5) == shard_indices(12, 0, 1, 1, 5)
    # 2 ranks interleave exactly the global order of 1 rank
    full = shard_indices(12, 0, 1, 3, 5)
    assert shard_indices(12, 0, 2, 3, 5) == full[0::2] and shard_indices(12, 1, 2, 3, 5) == full[1::2]
    # uneven: padded so every rank gets the same count
    assert [len(shard_indices(7, r, 3)) for r in range(3)] == [3, 3, 3]


def test_torch_dataset_shapes_and_augmentation(synth_h5):
    import torch

    from hpcnas.data.torch_dataset import SegmentationDataset, make_loader

    ds = SegmentationDataset(str(synth_h5), "train", augment=True)
    image, mask = ds[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert mask.shape == (32, 32) and mask.dtype == torch.int64
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    plain = SegmentationDataset(str(synth_h5), "train", augment=False)
    # augmentation permutes pixels: the label histogram is preserved
    torch.manual_seed(0)
    for k in range(len(ds)):
        assert torch.equal(
            torch.bincount(ds[k][1].flatten(), minlength=256), torch.bincount(plain[k][1].flatten(), minlength=256)
        )
    loader = make_loader(plain, batch_size=4, rank=1, world=2, seed=0)
    seen = [m for _, m in loader]
    assert sum(len(m) for m in seen) == (len(plain) + 1) // 2


def test_augmented_batches_are_the_same_with_any_workers_ranks_or_resume(synth_h5):
    """Each sample's flips and turns come from its own seed: DataLoader workers, a second rank or a resumed
    epoch see exactly what one process sees."""
    import torch

    from hpcnas.data.torch_dataset import SegmentationDataset, make_loader

    ds = SegmentationDataset(str(synth_h5), "train", augment=True)

    def batches(batch, rank=0, world=1, workers=0, skip=0, epoch=1):
        loader = make_loader(ds, batch, rank=rank, world=world, seed=3, num_workers=workers)
        loader.sampler.set_epoch(epoch, skip)
        return [(x, y) for x, y in loader]

    one = batches(4)
    for (x, y), (xw, yw) in zip(one, batches(4, workers=2)):
        assert torch.equal(x, xw) and torch.equal(y, yw)
    torch.manual_seed(123)  # the global RNG plays no part
    for (x, y), (xr, yr) in zip(one[1:], batches(4, skip=4)):
        assert torch.equal(x, xr) and torch.equal(y, yr)
    two = [batches(2, rank=r, world=2) for r in range(2)]  # 2 ranks x batch 2 == 1 rank x batch 4
    for step, (x, _) in enumerate(one):
        if len(x) == 4:
            halves = torch.stack([two[0][step][0], two[1][step][0]], 1).flatten(0, 1)
            assert torch.equal(x, halves)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(one, batches(4, epoch=2)))  # a new epoch, new draws
    plain = SegmentationDataset(str(synth_h5), "train", augment=False)
    assert any(not torch.equal(ds[(k, 7)][0], plain[k][0]) for k in range(len(ds)))  # it does augment


def test_truncated_file_is_a_user_error(synth_h5, tmp_path):
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(synth_h5.read_bytes()[:4096])
    with pytest.raises(UserError, match="not a readable HDF5 file"):
        read_info(bad)


def test_corrupt_chunk_is_a_user_error(synth_h5, tmp_path):
    bad = tmp_path / "corrupt.h5"
    data = bytearray(synth_h5.read_bytes())
    # overwrite the second half (the compressed patch chunks) with noise; metadata survives
    rng = np.random.default_rng(0)
    start = len(data) // 2
    data[start:] = rng.integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    bad.write_bytes(bytes(data))
    with pytest.raises(UserError) as info:
        n = read_info(bad).split_sizes["train"]
        reader = PatchReader(bad, "train", 2)
        for i in range(n):
            reader.read(i)
    assert str(bad) in str(info.value)


def test_missing_dataset_is_named(synth_h5, tmp_path):
    bad = tmp_path / "missing.h5"
    shutil.copy(synth_h5, bad)
    with h5py.File(bad, "a") as f:
        del f["val/masks"]
    with pytest.raises(UserError, match="missing dataset 'val/masks'"):
        read_info(bad)


def test_not_hpcnas_file(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(UserError, match="not an hpcnas data set"):
        read_info(other)


def test_class_id_beyond_class_count_on_read(synth_h5, tmp_path):
    bad = tmp_path / "badclass.h5"
    shutil.copy(synth_h5, bad)
    with h5py.File(bad, "a") as f:
        m = f["train/masks"][0]
        m[0, 0] = 7
        f["train/masks"][0] = m
    with pytest.raises(UserError, match="class id 7, beyond the 2 classes"):
        PatchReader(bad, "train", 2).read(0)


def test_failed_write_keeps_previous_file(synth_h5, tmp_path):
    target = tmp_path / "keep.h5"
    shutil.copy(synth_h5, target)
    before = target.read_bytes()
    with pytest.raises(UserError, match="beyond the 2 classes"):
        with create_dataset(target, ["bg", "fg"], 8, 0) as writer:
            src = writer.add_source("a", (8, 8), "train")
            writer.add_patch(np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 2, np.uint8), src, (0, 0), (8, 8))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.h5"]


def test_cli_info_and_errors(synth_h5, tmp_path):
    ok = run_cli("data", "info", str(synth_h5))
    assert ok.returncode == 0 and "rotorcraft" in ok.stdout
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    bad = run_cli("data", "info", str(junk))
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert bad.stderr.startswith(f"hpcnas: error: {junk}: not a readable HDF5 file")
