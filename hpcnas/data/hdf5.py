"""The HDF5 patch data set: layout, writer, validating reader.

Layout (one group per split, ``train``, ``val`` and optionally ``test``)::

    /<split>/images   (N, H, W, C) the scenes' own type (uint8 .. float32), one patch per chunk, gzip
    /<split>/masks    (N, H, W)    uint8   class ids; 255 = ignore (padding, unlabeled)
    /<split>/source   (N,)         int32   index into the root attribute ``sources``
    /<split>/offsets  (N, 2)       int32   (y, x) of the patch in its source image
    /<split>/valid    (N, 2)       int32   (h, w) of real pixels; smaller at padded edges

Root attributes: ``format``, ``version``, ``class_names``, ``tile_size``,
``overlap``, ``ignore_index``, ``sources`` (names), ``source_shapes`` (M, 2),
``source_split``, ``class_pixels`` and ``class_weights`` (from the train masks);
since version 2 also ``bands`` (the source bands picked, 1-based; empty: all),
``band_offset`` and ``band_scale`` (the per-band :class:`~hpcnas.data.raster.Normalization`
from the train split); since version 3 also ``source_crs`` (WKT per source, "" without one)
and ``source_transforms`` (M, 6), so ``data info`` can say where every scene lies.  A version 1
file is 8-bit RGB normalized by ``/255``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import h5py
import numpy as np

from hpcnas.data.raster import DTYPES, Normalization
from hpcnas.errors import UserError
from hpcnas.rundir import PathLike, atomic_path

FORMAT = "hpcnas-segmentation"
VERSION = 3
IGNORE_INDEX = 255
SPLITS = ("train", "val", "test")
FIELDS = ("images", "masks", "source", "offsets", "valid")


def balanced_class_weights(class_pixels: np.ndarray) -> np.ndarray:
    """Weights ``total / (C * count_c)`` for the weighted cross-entropy.

    A class with no pixel gets weight 1 (it contributes no loss anyway).
    """
    counts = np.asarray(class_pixels, dtype=np.float64)
    total = counts.sum()
    weights = np.ones_like(counts)
    present = counts > 0
    if total > 0:
        weights[present] = total / (len(counts) * counts[present])
    return weights.astype(np.float32)


@contextlib.contextmanager
def create_dataset(
    path: PathLike,
    class_names: Sequence[str],
    tile_size: int,
    overlap: int,
    channels: int = 3,
    dtype: str = "uint8",
    bands: Sequence[int] = (),
) -> Iterator["DatasetWriter"]:
    """Stream patches into a new data set; the file appears at ``path`` only on success.

    On an exception the temporary file is removed and whatever was at ``path``
    before is left untouched.
    """
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            writer = DatasetWriter(f, str(path), class_names, tile_size, overlap, channels, dtype, bands)
            yield writer
            writer.finish()


class DatasetWriter:
    """Appends patches to an open HDF5 file (made by :func:`create_dataset`)."""

    def __init__(
        self,
        file: h5py.File,
        name: str,
        class_names: Sequence[str],
        tile_size: int,
        overlap: int,
        channels: int,
        dtype: str = "uint8",
        bands: Sequence[int] = (),
    ):
        self._file = file
        self.name = name
        self.class_names = list(class_names)
        self.tile_size = int(tile_size)
        self.overlap = int(overlap)
        self.channels = int(channels)
        self.dtype = str(dtype)
        self.bands = [int(b) for b in bands]
        self.normalization = Normalization.fixed_8bit(self.channels)  # set from the train split before finish()
        self.sources: List[str] = []
        self.source_shapes: List[Tuple[int, int]] = []
        self.source_split: List[str] = []
        self.source_crs: List[str] = []  # WKT, or "" for a scene without a CRS
        self.source_transforms: List[Tuple[float, ...]] = []  # GDAL's 6 affine coefficients (a, b, c, d, e, f)
        self.class_pixels = np.zeros(len(self.class_names), dtype=np.int64)

    def add_source(self, name: str, shape: Tuple[int, int], split: str, crs: Any = None, transform: Any = None) -> int:
        """Register a source image (with its CRS and affine transform when it has them); returns its index for
        :meth:`add_patch`."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        self.sources.append(str(name))
        self.source_shapes.append((int(shape[0]), int(shape[1])))
        self.source_split.append(split)
        self.source_crs.append(crs.to_wkt() if crs is not None else "")
        self.source_transforms.append(tuple(transform)[:6] if transform is not None else (1.0, 0, 0, 0, 1.0, 0))
        return len(self.sources) - 1

    def add_patch(
        self, image: np.ndarray, mask: np.ndarray, source: int, offset: Tuple[int, int], valid: Tuple[int, int]
    ) -> None:
        """Append one patch to the split of its source image."""
        s = self.tile_size
        if image.shape != (s, s, self.channels) or mask.shape != (s, s):
            raise ValueError(f"patch shapes {image.shape}/{mask.shape} do not match tile size {s}")
        if str(image.dtype) != self.dtype:
            raise ValueError(f"patch type {image.dtype} is not the data set's {self.dtype}")
        labels = mask[mask != IGNORE_INDEX]
        if labels.size and int(labels.max()) >= len(self.class_names):
            raise UserError(
                f"class id {int(labels.max())} is beyond the {len(self.class_names)} classes {self.class_names}",
                source=self.sources[source],
            )
        split = self.source_split[source]
        group = self._group(split)
        n = group["images"].shape[0]
        for name in FIELDS:
            group[name].resize(n + 1, axis=0)
        group["images"][n] = image
        group["masks"][n] = mask
        group["source"][n] = source
        group["offsets"][n] = offset
        group["valid"][n] = valid
        if split == "train":
            self.class_pixels += np.bincount(labels.ravel(), minlength=len(self.class_names))[: len(self.class_names)]

    def patch_counts(self) -> Dict[str, int]:
        """Patches written so far, per split."""
        return {s: int(self._file[s]["images"].shape[0]) if s in self._file else 0 for s in SPLITS}

    def _group(self, split: str) -> h5py.Group:
        if split in self._file:
            return self._file[split]
        s, c = self.tile_size, self.channels
        g = self._file.create_group(split)
        gz = dict(compression="gzip", compression_opts=4)
        g.create_dataset("images", (0, s, s, c), maxshape=(None, s, s, c), dtype=self.dtype, chunks=(1, s, s, c), **gz)
        g.create_dataset("masks", (0, s, s), maxshape=(None, s, s), dtype="u1", chunks=(1, s, s), **gz)
        g.create_dataset("source", (0,), maxshape=(None,), dtype="i4", chunks=(1024,))
        g.create_dataset("offsets", (0, 2), maxshape=(None, 2), dtype="i4", chunks=(1024, 2))
        g.create_dataset("valid", (0, 2), maxshape=(None, 2), dtype="i4", chunks=(1024, 2))
        return g

    def finish(self) -> None:
        """Create empty missing splits and write the root attributes."""
        if "train" not in self._file or self._file["train/images"].shape[0] == 0:
            raise UserError("no training patch was produced (every source image went to val/test?)", source=self.name)
        for split in SPLITS:
            if split not in self._file:
                self._group(split)  # an empty split is still a valid, readable split
        a = self._file.attrs
        a["format"] = FORMAT
        a["version"] = VERSION
        a["class_names"] = self.class_names
        a["tile_size"] = self.tile_size
        a["overlap"] = self.overlap
        a["ignore_index"] = IGNORE_INDEX
        a["sources"] = self.sources
        a["source_shapes"] = np.asarray(self.source_shapes, dtype=np.int32).reshape(-1, 2)
        a["source_split"] = self.source_split
        a["source_crs"] = self.source_crs
        a["source_transforms"] = np.asarray(self.source_transforms, dtype=np.float64).reshape(-1, 6)
        a["class_pixels"] = self.class_pixels
        a["class_weights"] = balanced_class_weights(self.class_pixels)
        a["bands"] = np.asarray(self.bands, dtype=np.int32)
        a["band_offset"] = self.normalization.offset
        a["band_scale"] = self.normalization.scale


@dataclass
class DatasetInfo:
    """What a data set holds, read from its attributes without touching the patches."""

    path: Path
    class_names: List[str]
    tile_size: int
    overlap: int
    channels: int
    split_sizes: Dict[str, int]
    class_weights: np.ndarray
    class_pixels: np.ndarray
    sources: List[str]
    source_shapes: np.ndarray
    source_split: List[str]
    dtype: str = "uint8"
    bands: Optional[List[int]] = None
    normalization: Optional[Normalization] = None
    source_crs: List[str] = field(default_factory=list)  # per source: WKT or "" (empty: a file before version 3)
    source_transforms: Optional[np.ndarray] = None  # (M, 6) affine coefficients, None in older files

    def __post_init__(self):
        if self.normalization is None:
            self.normalization = Normalization.fixed_8bit(self.channels)

    def data_spec(self) -> Dict:
        """What a network trained on this data expects of its input: stored in checkpoints and exports."""
        assert self.normalization is not None
        return {
            "bands": self.bands,
            "dtype": self.dtype,
            "normalization": self.normalization.to_dict(),
            "tile_size": self.tile_size,
            "overlap": self.overlap,
            "class_names": self.class_names,
        }

    @property
    def num_classes(self) -> int:
        """Number of classes (the network's output channels)."""
        return len(self.class_names)


def describe_scenes(info: DatasetInfo, shown: int = 8) -> List[str]:
    """Where the data set's scenes lie (CRS, pixel size) and which split each went to, for ``data info``."""
    from rasterio.crs import CRS

    lines = []
    kinds = sorted(set(info.source_crs))
    if not kinds:
        lines.append("georeferencing: not recorded (a data set tiled before hpcnas recorded it)")
    for wkt in kinds:
        which = [k for k, c in enumerate(info.source_crs) if c == wkt]
        if not wkt:
            lines.append(f"georeferencing: none for {len(which)} scene(s) (pixel coordinates)")
            continue
        crs = CRS.from_wkt(wkt)
        assert info.source_transforms is not None
        sizes = sorted(
            {(abs(float(info.source_transforms[k][0])), abs(float(info.source_transforms[k][4]))) for k in which}
        )
        units = crs.linear_units or "units"
        pixel = ", ".join(f"{x:g} x {y:g} {units}" for x, y in sizes)
        lines.append(f"CRS {crs.to_string()} for {len(which)} scene(s), pixel size {pixel}")
    for split in SPLITS:
        names = [n for n, s in zip(info.sources, info.source_split) if s == split]
        if names:
            more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
            lines.append(f"scenes of {split} ({len(names)}): {', '.join(names[:shown])}{more}")
    return lines


def open_h5(path: PathLike) -> h5py.File:
    """Open an HDF5 file read-only, turning the usual failures into one clear line."""
    p = Path(path)
    if not p.exists():
        raise UserError("no such file", source=str(path))
    if p.is_dir():
        raise UserError("is a directory, expected an HDF5 file", source=str(path))
    try:
        return h5py.File(p, "r")
    except OSError as exc:
        raise UserError(f"not a readable HDF5 file (truncated or corrupt?): {_short(exc)}", source=str(path)) from None


def _short(exc: Exception) -> str:
    return str(exc).split("(")[0].strip().rstrip(",") or type(exc).__name__


def read_info(path: PathLike) -> DatasetInfo:
    """Validate a data set's structure and return its :class:`DatasetInfo`.

    Checks the format tag, that every split holds every field with consistent
    lengths and shapes, and that the metadata agree; reads no patch.
    """
    src = str(path)
    with open_h5(path) as f:
        try:
            a = f.attrs
            if a.get("format") != FORMAT:
                raise UserError(
                    f"not an hpcnas data set (attribute 'format' is {a.get('format')!r}, expected '{FORMAT}')",
                    source=src,
                )
            for key in (
                "class_names",
                "tile_size",
                "overlap",
                "class_weights",
                "class_pixels",
                "sources",
                "source_shapes",
                "source_split",
            ):
                if key not in a:
                    raise UserError(f"missing attribute '{key}'", source=src)
            class_names = [str(c) for c in a["class_names"]]
            tile = int(a["tile_size"])
            sizes: Dict[str, int] = {}
            channels: Optional[int] = None
            dtype: Optional[str] = None
            for split in SPLITS:
                if split not in f:
                    if split == "test":
                        continue
                    raise UserError(f"missing group '{split}'", source=src)
                g = f[split]
                for name in FIELDS:
                    if name not in g or not isinstance(g[name], h5py.Dataset):
                        raise UserError(f"missing dataset '{split}/{name}'", source=src)
                n = g["images"].shape[0]
                for name in FIELDS:
                    if g[name].shape[0] != n:
                        raise UserError(
                            f"'{split}/{name}' has {g[name].shape[0]} entries, '{split}/images' has {n}", source=src
                        )
                ishape, mshape = g["images"].shape, g["masks"].shape
                if len(ishape) != 4 or ishape[1:3] != (tile, tile):
                    raise UserError(f"'{split}/images' has shape {ishape}, expected (N, {tile}, {tile}, C)", source=src)
                if mshape[1:] != ishape[1:3]:
                    raise UserError(
                        f"'{split}/masks' shape {mshape} does not match '{split}/images' {ishape}", source=src
                    )
                if str(g["images"].dtype) not in DTYPES or g["masks"].dtype != np.uint8:
                    raise UserError(f"'{split}' images must be one of {', '.join(DTYPES)} and masks uint8", source=src)
                if dtype is not None and str(g["images"].dtype) != dtype:
                    raise UserError(f"'{split}/images' is {g['images'].dtype}, another split {dtype}", source=src)
                dtype = str(g["images"].dtype)
                channels = ishape[3]
                sizes[split] = n
                _check_placement(g, split, np.asarray(a["source_shapes"], dtype=np.int64).reshape(-1, 2), tile, src)
            assert channels is not None  # the train and val splits are required, so the loop has read one
            weights = np.asarray(a["class_weights"], dtype=np.float32)
            if weights.shape != (len(class_names),):
                raise UserError(
                    f"'class_weights' has {weights.shape[0]} entries for {len(class_names)} classes", source=src
                )
            if not np.isfinite(weights).all() or (weights < 0).any() or not (weights > 0).any():
                raise UserError(
                    f"'class_weights' must be finite, non-negative and not all 0, got {weights.tolist()}", source=src
                )
            return DatasetInfo(
                path=Path(path),
                class_names=class_names,
                tile_size=tile,
                overlap=int(a["overlap"]),
                channels=int(channels),
                split_sizes=sizes,
                class_weights=weights,
                class_pixels=np.asarray(a["class_pixels"], dtype=np.int64),
                sources=[str(s) for s in a["sources"]],
                source_shapes=np.asarray(a["source_shapes"], dtype=np.int64).reshape(-1, 2),
                source_split=[str(s) for s in a["source_split"]],
                dtype=dtype or "uint8",
                bands=[int(b) for b in a["bands"]] or None if "bands" in a else None,
                normalization=_normalization(a, int(channels), src),
                source_crs=[str(c) for c in a["source_crs"]] if "source_crs" in a else [],
                source_transforms=(
                    np.asarray(a["source_transforms"], np.float64).reshape(-1, 6) if "source_transforms" in a else None
                ),
            )
        except UserError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise UserError(f"unreadable or corrupt data set: {_short(exc)}", source=src) from None


def _normalization(attrs, channels: int, src: str) -> Normalization:
    """The stored per-band normalization (version 2), or the ``/255`` of a version 1 file."""
    if "band_offset" not in attrs:
        return Normalization.fixed_8bit(channels)
    offset, scale = (np.asarray(attrs[key], np.float32).reshape(-1) for key in ("band_offset", "band_scale"))
    norm = Normalization(offset, scale)
    if norm.offset.shape != (channels,) or norm.scale.shape != (channels,):
        raise UserError(f"'band_offset'/'band_scale' do not have one entry per band ({channels})", source=src)
    if not (np.isfinite(norm.offset).all() and np.isfinite(norm.scale).all() and (norm.scale > 0).all()):
        raise UserError("'band_scale' must be positive and the normalization finite", source=src)
    return norm


def check_class_ids(info: "DatasetInfo", block: int = 256) -> None:
    """Read every mask and raise a :class:`UserError` at the first class id beyond the class count
    (what training would only meet when it reaches that patch)."""
    with open_h5(info.path) as f:
        for split in info.split_sizes:
            masks = f[split]["masks"]
            for start in range(0, masks.shape[0], block):
                chunk = masks[start : start + block]
                labels = np.where(chunk == IGNORE_INDEX, 0, chunk)
                if labels.size and int(labels.max()) >= info.num_classes:
                    i = start + int(np.argmax(labels.reshape(len(chunk), -1).max(axis=1)))
                    raise UserError(
                        f"patch {split}[{i}] has class id {int(labels.max())}, beyond the "
                        f"{info.num_classes} classes {info.class_names}",
                        source=str(info.path),
                    )


def _check_placement(group, split: str, source_shapes: np.ndarray, tile: int, src: str) -> None:
    """Every patch names a real source and lies inside it: reassembling full images relies on it."""
    sources, offsets, valid = group["source"][...], group["offsets"][...], group["valid"][...]
    if not len(sources):
        return
    bad = (sources < 0) | (sources >= len(source_shapes))
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(
            f"patch {split}[{i}] names source {int(sources[i])}, but there are {len(source_shapes)}", source=src
        )
    shapes = source_shapes[sources]
    outside = ((offsets < 0) | (valid < 1) | (valid > tile) | (offsets + valid > shapes)).any(axis=1)
    if outside.any():
        i = int(np.argmax(outside))
        raise UserError(
            f"patch {split}[{i}] at offset {offsets[i].tolist()} (valid {valid[i].tolist()}) lies outside its "
            f"source of {shapes[i].tolist()} px",
            source=src,
        )


class PatchReader:
    """Random access to single patches; opens the file on first use.

    Safe to hand to DataLoader workers: each process opens its own handle
    (h5py handles must not cross a fork), and only the requested chunk is read.
    """

    def __init__(self, path: PathLike, split: str, num_classes: int):
        self.path = str(path)
        self.split = split
        self.num_classes = num_classes
        self._file: Optional[h5py.File] = None
        self._pid: Optional[int] = None

    def _group(self) -> h5py.Group:
        if self._file is None or self._pid != os.getpid():
            self._file = open_h5(self.path)
            self._pid = os.getpid()
        return self._file[self.split]

    def read(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """The (image, mask) pair at ``index``; a bad class id is a :class:`UserError`."""
        g = self._group()
        try:
            image = g["images"][index]
            mask = g["masks"][index]
        except (OSError, KeyError, ValueError) as exc:
            raise UserError(
                f"cannot read patch {self.split}[{index}] (corrupt file?): {_short(exc)}", source=self.path
            ) from None
        labels = mask[mask != IGNORE_INDEX]
        if labels.size and int(labels.max()) >= self.num_classes:
            raise UserError(
                f"patch {self.split}[{index}] has class id {int(labels.max())}, beyond the {self.num_classes} classes",
                source=self.path,
            )
        return image, mask

    def meta(self, name: str) -> np.ndarray:
        """A whole small per-patch array (``source``, ``offsets`` or ``valid``)."""
        return self._group()[name][...]

    def close(self) -> None:
        """Close the file handle if open."""
        if self._file is not None:
            self._file.close()
            self._file = None
