"""Cut large images and their masks into overlapping patches (paper: 512 px, 180 px overlap).

Images are PNG/JPEG or any raster GDAL reads (GeoTIFF above all), read
window by window.  Masks hold class ids (single band) or RGB colours mapped
to ids by a palette file; a georeferenced mask must share its image's CRS
and transform.  Edge tiles are padded (image 0, mask ignore) and their real
extent is recorded; nodata pixels are ignored.  The train/val/test split
is drawn per source image, so overlapping tiles of one image never straddle
the split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from hpcnas.config import read_yaml_mapping
from hpcnas.data.hdf5 import IGNORE_INDEX, create_dataset
from hpcnas.data.raster import SCENE_SUFFIXES, BandStatistics, Scene
from hpcnas.errors import UserError
from hpcnas.progress import progress
from hpcnas.rundir import PathLike

IGNORE_NAME = "ignore"


def tile_positions(length: int, size: int, overlap: int) -> List[int]:
    """Start offsets of tiles covering ``length`` pixels with stride ``size - overlap``.

    The last tile may run past the end (it is padded), so every pixel is covered
    and all tiles share one stride, as in the paper's tiling.
    """
    stride = size - overlap
    count = max(1, math.ceil((length - overlap) / stride))
    return [i * stride for i in range(count)]


@dataclass
class Palette:
    """Mask colour -> class id; colours mapped to ``ignore`` become 255."""

    class_names: List[str]
    colors: Dict[Tuple[int, int, int], int]
    default: Optional[int] = None  # id for colours not listed; None: an unlisted colour is an error
    source: str = "<palette>"

    @classmethod
    def load(cls, path: PathLike) -> "Palette":
        """Read a palette YAML: ``classes: [...]``, ``colors: {"r,g,b": name}``, optional ``default``."""
        src = str(path)
        raw = read_yaml_mapping(src)
        for key in raw:
            if key not in ("classes", "colors", "default"):
                raise UserError("unknown key (known: classes, colors, default)", source=src, key=str(key))
        names = raw.get("classes")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise UserError("expected a non-empty list of class names", source=src, key="classes")
        ids = {name: i for i, name in enumerate(names)}
        ids[IGNORE_NAME] = IGNORE_INDEX
        colors: Dict[Tuple[int, int, int], int] = {}
        table = raw.get("colors")
        if not isinstance(table, dict) or not table:
            raise UserError('expected a mapping "r,g,b": class name', source=src, key="colors")
        for text, name in table.items():
            try:
                rgb = tuple(int(v) for v in str(text).split(","))
                assert len(rgb) == 3 and all(0 <= v <= 255 for v in rgb)
            except (ValueError, AssertionError):
                raise UserError(
                    "colour must be written 'r,g,b' with values 0-255", source=src, key=f"colors.{text}"
                ) from None
            if name not in ids:
                raise UserError(
                    f"class '{name}' is not in classes {names} (nor '{IGNORE_NAME}')", source=src, key=f"colors.{text}"
                )
            colors[rgb] = ids[name]
        default = raw.get("default")
        if default is not None and default not in ids:
            raise UserError(f"class '{default}' is not in classes {names}", source=src, key="default")
        return cls(list(names), colors, ids[default] if default is not None else None, src)

    def apply(self, rgb: np.ndarray, where: str) -> np.ndarray:
        """Map an (H, W, 3) colour mask to class ids."""
        code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
        lut_keys = np.array([(r << 16) | (g << 8) | b for r, g, b in self.colors], dtype=np.int32)
        lut_vals = np.array(list(self.colors.values()), dtype=np.uint8)
        order = np.argsort(lut_keys)
        lut_keys, lut_vals = lut_keys[order], lut_vals[order]
        pos = np.clip(np.searchsorted(lut_keys, code), 0, len(lut_keys) - 1)
        known = lut_keys[pos] == code
        out = lut_vals[pos]
        if not known.all():
            if self.default is None:
                y, x = np.argwhere(~known)[0]
                c = tuple(int(v) for v in rgb[y, x])
                raise UserError(f"mask colour {c} at (y={y}, x={x}) is not in the palette {self.source}", source=where)
            out = np.where(known, out, self.default).astype(np.uint8)
        return out


def list_images(folder: PathLike) -> List[Path]:
    """Image files in ``folder`` (sorted, recursive), or a :class:`UserError` if none."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError("no such folder", source=str(folder))
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in SCENE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"no image files ({', '.join(SCENE_SUFFIXES)}) in this folder", source=str(folder))
    return files


def pair_images_and_masks(images: PathLike, masks: PathLike) -> List[Tuple[Path, Path]]:
    """Match every image to the mask with the same relative path and stem.

    A data set laid out as ``<anything>/images/X.jpg`` + ``<anything>/masks/X.png``
    (the Dubai aerial set, among others) also pairs with ``--images`` and
    ``--masks`` both given its root: files under an ``images`` folder are the
    images, files under a ``masks`` folder their masks.
    """
    images, masks = Path(images), Path(masks)
    image_files = [p for p in list_images(images) if "masks" not in p.relative_to(images).parts[:-1]]
    mask_files = {
        p.relative_to(masks).with_suffix(""): p
        for p in list_images(masks)
        if "images" not in p.relative_to(masks).parts[:-1]
    }
    if not image_files:
        raise UserError("no image files outside 'masks' folders", source=str(images))
    pairs = []
    for img in image_files:
        rel = img.relative_to(images).with_suffix("")
        swapped = Path(*["masks" if part == "images" else part for part in rel.parts])
        mask = mask_files.get(rel) or mask_files.get(swapped)
        if mask is None:
            raise UserError(f"no mask for this image in {masks} (expected {rel}.png or {swapped}.png)", source=str(img))
        pairs.append((img, mask))
    return pairs


def mask_ids(pixels: np.ndarray, palette: Optional[Palette], where: str) -> np.ndarray:
    """A mask window (H, W, bands) as (H, W) uint8 class ids: through the palette, or the single band itself."""
    if palette is not None:
        if pixels.shape[-1] < 3:
            raise UserError("a --palette maps colours, but this mask has one band of class ids", source=where)
        return palette.apply(pixels[..., :3].astype(np.uint8), where)
    if pixels.shape[-1] != 1:
        raise UserError(f"mask has {pixels.shape[-1]} bands; give --palette to map colours to classes", source=where)
    ids = pixels[..., 0]
    if ids.size and (int(ids.max()) > IGNORE_INDEX or int(ids.min()) < 0):
        bad = int(ids.max()) if int(ids.max()) > IGNORE_INDEX else int(ids.min())
        raise UserError(f"class id {bad} is not in 0-255", source=where)
    return ids.astype(np.uint8)


def tile_scene(
    image: Scene, mask: Scene, size: int, overlap: int, palette: Optional[Palette] = None
) -> Iterator[Tuple[np.ndarray, np.ndarray, Tuple[int, int], Tuple[int, int], np.ndarray]]:
    """Yield ``(patch, mask_patch, (y, x), (valid_h, valid_w), valid_pixels)`` window by window.

    Padding and nodata pixels are ``IGNORE_INDEX`` in the mask (no loss, no
    metric); padding is 0 in the image.
    """
    for y in tile_positions(image.height, size, overlap):
        for x in tile_positions(image.width, size, overlap):
            pixels, valid = image.read(y, x, size, size)
            labels, labelled = mask.read(y, x, size, size)
            ids = mask_ids(labels, palette, str(mask.path))
            ids[~(valid & labelled)] = IGNORE_INDEX
            yield pixels, ids, (y, x), (min(size, image.height - y), min(size, image.width - x)), valid


def foreground_tile_share(mask: Scene, palette: Optional[Palette], size: int, overlap: int) -> float:
    """The share of a mask's tiles that hold at least one foreground pixel (class id > 0, not ignored)."""
    hits = []
    for y in tile_positions(mask.height, size, overlap):
        for x in tile_positions(mask.width, size, overlap):
            labels, labelled = mask.read(y, x, size, size)
            ids = mask_ids(labels, palette, str(mask.path))
            hits.append(bool(((ids > 0) & (ids != IGNORE_INDEX) & labelled).any()))
    return sum(hits) / len(hits)


def assign_splits(count: int, val_fraction: float, test_fraction: float, seed: int) -> List[str]:
    """A split name per source, drawn by a seeded shuffle; at least one train source."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(count)
    n_val = int(round(val_fraction * count))
    n_test = int(round(test_fraction * count))
    n_val = min(n_val, max(0, count - 1))
    n_test = min(n_test, max(0, count - 1 - n_val))
    splits = ["train"] * count
    for i in order[:n_val]:
        splits[i] = "val"
    for i in order[n_val : n_val + n_test]:
        splits[i] = "test"
    return splits


def assign_splits_stratified(
    scores: Sequence[float], val_fraction: float, test_fraction: float, seed: int
) -> List[str]:
    """A split name per source, spreading sources evenly by ``score`` (their share of tiles with foreground).

    Sources are ranked by score (a seeded shuffle breaks ties) and dealt in that
    order to the split furthest below its share so far, so every split gets
    sources with many objects and sources with none.  The totals are those of
    :func:`assign_splits`.
    """
    count = len(scores)
    totals = assign_splits(count, val_fraction, test_fraction, seed)
    quota = {name: totals.count(name) for name in ("train", "val", "test")}
    rng = np.random.default_rng(seed)
    tie_break = rng.permutation(count)
    order = sorted(range(count), key=lambda i: (-scores[i], tie_break[i]))
    given = {name: 0 for name in quota}
    splits = ["train"] * count
    for rank, i in enumerate(order, start=1):
        open_ = [name for name in quota if given[name] < quota[name]]
        name = max(open_, key=lambda n: (quota[n] * rank / count - given[n], n == "train"))
        splits[i] = name
        given[name] += 1
    return splits


def tile_folder(
    images: PathLike,
    masks: PathLike,
    out: PathLike,
    size: int = 512,
    overlap: int = 180,
    palette: Optional[PathLike] = None,
    class_names: Optional[Sequence[str]] = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    limit: Optional[int] = None,
    scale: float = 1.0,
    stratify: bool = False,
    bands: Optional[Sequence[int]] = None,
) -> Dict[str, int]:
    """Tile every image/mask pair into the HDF5 data set ``out``; returns patches per split.

    Scenes are read window by window (GeoTIFFs through rasterio), so memory
    does not grow with their size.  ``bands`` picks and orders the image
    bands (1-based); every image must then have the same type and band
    count.  ``scale`` resizes PNG/JPEG images and masks first (0.25: a
    quarter of the resolution); ``stratify`` spreads sources with and without
    foreground evenly over the splits (:func:`assign_splits_stratified`).
    The per-band normalization is computed on the train split's valid
    pixels and stored in the file.
    """
    if not 0 <= overlap < size:
        raise UserError(f"overlap must be in [0, size), got overlap={overlap} size={size}", source="--overlap")
    if not 0 < scale <= 16:
        raise UserError(f"must be in (0, 16], got {scale}", source="--scale")
    if limit is not None and limit < 1:
        raise UserError(f"must be at least 1, got {limit}", source="--limit")
    pal = Palette.load(palette) if palette else None
    names = pal.class_names if pal else list(class_names or ["background", "object"])
    pairs = pair_images_and_masks(images, masks)[:limit]
    mask_role = "colour mask" if pal else "mask"
    if stratify:
        shares = []
        for _, mask_path in progress(pairs, len(pairs), "tile: reading the masks to stratify the splits", unit="masks"):
            with Scene(mask_path, role=mask_role, scale=scale) as mask:
                shares.append(foreground_tile_share(mask, pal, size, overlap))
        splits = assign_splits_stratified(shares, val_fraction, test_fraction, seed)
    else:
        splits = assign_splits(len(pairs), val_fraction, test_fraction, seed)
    root = Path(images)
    with Scene(pairs[0][0], bands, scale=scale) as first:
        kind = (first.dtype, first.channels)
    stats = BandStatistics(kind[1])
    with create_dataset(out, names, size, overlap, channels=kind[1], dtype=kind[0], bands=bands or ()) as writer:
        for number, ((img_path, mask_path), split) in enumerate(zip(pairs, splits), start=1):
            with Scene(img_path, bands, scale=scale) as image, Scene(mask_path, role=mask_role, scale=scale) as mask:
                if (image.dtype, image.channels) != kind:
                    raise UserError(
                        f"image is {image.dtype} with {image.channels} band(s), the first image "
                        f"({pairs[0][0].name}) {kind[0]} with {kind[1]}: one data set holds one kind of scene",
                        source=str(img_path),
                    )
                image.check_aligned(mask)
                src = writer.add_source(
                    str(img_path.relative_to(root)), (image.height, image.width), split, image.crs, image.transform
                )
                windows = len(tile_positions(image.height, size, overlap)) * len(
                    tile_positions(image.width, size, overlap)
                )
                scene_tiles = progress(
                    tile_scene(image, mask, size, overlap, pal),
                    windows,
                    f"tile {img_path.name} (scene {number}/{len(pairs)}, {split})",
                    unit="tiles",
                )
                for patch, mpatch, offset, extent, valid in scene_tiles:
                    writer.add_patch(patch, mpatch, src, offset, extent)
                    if split == "train":
                        stats.add(patch[: extent[0], : extent[1]], valid[: extent[0], : extent[1]])
        writer.normalization = stats.normalization(kind[0])
        counts = writer.patch_counts()
    return counts
