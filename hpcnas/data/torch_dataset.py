"""Torch view of the HDF5 data set: Dataset, epoch-seeded sharded sampler, loaders."""

from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hpcnas.data.hdf5 import PatchReader, read_info
from hpcnas.data.sharding import shard_keys


class SegmentationDataset(Dataset):
    """Patches of one split as ``(image float32 (C,H,W), mask int64 (H,W))``, the image normalized per band
    as the data set says (8-bit: into [0, 1]).

    The file is opened lazily in each process that reads (DataLoader workers
    included) and only the requested patch is read.  With ``augment`` every
    sample gets a random flip and rot90.  A key ``(k, seed)``, as
    :class:`ShardedSampler` gives, draws them from that seed, so they do not
    depend on which process reads the sample, or when; a plain position ``k``
    draws them from torch's global RNG.
    """

    def __init__(self, path: str, split: str, augment: bool = False, indices: Optional[Sequence[int]] = None):
        self.info = read_info(path)
        if split not in self.info.split_sizes:
            raise ValueError(f"{path} has no split {split!r}")
        self.split = split
        self.augment = augment
        self.reader = PatchReader(path, split, self.info.num_classes)
        self.indices = list(range(self.info.split_sizes[split])) if indices is None else list(indices)
        norm = self.info.normalization
        assert norm is not None
        self._offset = torch.from_numpy(norm.offset)[:, None, None]
        self._scale = torch.from_numpy(norm.scale)[:, None, None]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: Union[int, Tuple[int, int]]):
        k, seed = key if isinstance(key, tuple) else (key, None)
        image, mask = self.reader.read(self.indices[k])
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().sub_(self._offset)
        image = image.div_(self._scale)
        mask = torch.from_numpy(mask.astype(np.int64))
        if self.augment:
            rng = torch.Generator().manual_seed(seed) if seed is not None else None
            flips = torch.randint(0, 2, (2,), generator=rng).tolist()
            turns = int(torch.randint(0, 4, (1,), generator=rng))
            if flips[0]:
                image, mask = image.flip(-1), mask.flip(-1)
            if flips[1]:
                image, mask = image.flip(-2), mask.flip(-2)
            if turns:
                image, mask = image.rot90(turns, (-2, -1)), mask.rot90(turns, (-2, -1))
            image, mask = image.contiguous(), mask.contiguous()
        return image, mask


class ShardedSampler(Sampler[Tuple[int, int]]):
    """This rank's share of an epoch-seeded permutation (see :mod:`hpcnas.data.sharding`), as ``(position,
    augmentation seed)`` keys, optionally without its first ``skip`` ones (an epoch resumed in the middle)."""

    def __init__(self, count: int, rank: int = 0, world: int = 1, seed: int = 0, shuffle: bool = True):
        self.count, self.rank, self.world, self.seed, self.shuffle = count, rank, world, seed, shuffle
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the permutation of ``epoch`` and start after its first ``skip`` indices (call before iterating)."""
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        return iter(shard_keys(self.count, self.rank, self.world, self.epoch, self.seed, self.shuffle)[self.skip :])

    def __len__(self) -> int:
        return max(0, (-(-self.count // self.world) if self.count else 0) - self.skip)


def make_loader(
    dataset: SegmentationDataset,
    batch_size: int,
    rank: int = 0,
    world: int = 1,
    seed: int = 0,
    shuffle: bool = True,
    num_workers: Optional[int] = None,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader over this rank's shard; call ``loader.sampler.set_epoch(e)`` each epoch.

    ``num_workers=None`` chooses: 2 worker processes when a GPU is there, none on CPU.  On a GPU the
    batches go to pinned memory, so ``.to(device, non_blocking=True)`` overlaps the copy with compute.
    The batches are the same with any number of workers (each sample's augmentation has its own seed).
    """
    sampler = ShardedSampler(len(dataset), rank, world, seed, shuffle)
    workers = worker_count(num_workers)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def worker_count(num_workers: Optional[int]) -> int:
    """``data.num_workers``, or for ``None`` 2 with a GPU and 0 without (on CPU the workers take the cores
    the training computes on)."""
    if num_workers is not None:
        return num_workers
    return 2 if torch.cuda.is_available() else 0


def validation_subset(count: int, max_tiles: Optional[int]) -> List[int]:
    """The tiles a capped validation reads: ``max_tiles`` of ``count``, drawn once by a fixed seed and sorted,
    so every epoch, every seed and every arm of a comparison validate on the same tiles."""
    if not max_tiles or max_tiles >= count:
        return list(range(count))
    return sorted(int(k) for k in np.random.default_rng(0).choice(count, max_tiles, replace=False))


def validation_loader(
    path: str,
    batch_size: int,
    split: str = "val",
    rank: int = 0,
    world: int = 1,
    num_workers: Optional[int] = None,
    max_tiles: Optional[int] = None,
) -> Optional[DataLoader]:
    """An unshuffled, unaugmented loader over this rank's share of ``split`` (no padding: every
    patch counted once across ranks), or ``None`` when the split is empty.  ``max_tiles`` reads
    only :func:`validation_subset`."""
    count = SegmentationDataset(path, split, augment=False).info.split_sizes.get(split, 0)
    if not count:
        return None
    tiles = validation_subset(count, max_tiles)
    dataset = SegmentationDataset(path, split, augment=False, indices=tiles[rank::world])
    workers = worker_count(num_workers)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
    # the batches every rank has (the last ranks may have one fewer): where ranks can agree on a stop
    loader.common_batches = -(-(len(tiles) // world) // batch_size)  # type: ignore[attr-defined]
    return loader


def split_indices(count: int, part: int, parts: int = 2) -> List[int]:
    """Contiguous part ``part`` of ``parts`` of ``range(count)`` (DARTS 50/50 split)."""
    bounds = np.linspace(0, count, parts + 1).astype(int)
    return list(range(bounds[part], bounds[part + 1]))
