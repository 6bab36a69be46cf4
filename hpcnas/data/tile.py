"""Cut large images and their masks into overlapping patches (paper: 512 px, 180 px overlap).

Masks hold class ids (single channel) or RGB colours mapped to ids by a
palette file.  Edge tiles are padded (image 0, mask ignore) and their real
extent is recorded.  The train/val/test split is drawn per source image, so
overlapping tiles of one image never straddle the split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from hpcnas.config import read_yaml_mapping
from hpcnas.data.hdf5 import IGNORE_INDEX, create_dataset
from hpcnas.errors import UserError
from hpcnas.rundir import PathLike

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
IGNORE_NAME = "ignore"


def tile_positions(length: int, size: int, overlap: int) -> List[int]:
    """Start offsets of tiles covering ``length`` pixels with stride ``size - overlap``.

    The last tile may run past the end (it is padded), so every pixel is covered
    and all tiles share one stride, as in the paper's tiling.
    """
    stride = size - overlap
    count = max(1, math.ceil((length - overlap) / stride))
    return [i * stride for i in range(count)]


def tile_array(
    image: np.ndarray, mask: np.ndarray, size: int, overlap: int
) -> Iterator[Tuple[np.ndarray, np.ndarray, Tuple[int, int], Tuple[int, int]]]:
    """Yield ``(patch, mask_patch, (y, x), (valid_h, valid_w))`` covering the image."""
    h, w = mask.shape
    for y in tile_positions(h, size, overlap):
        for x in tile_positions(w, size, overlap):
            vh, vw = min(size, h - y), min(size, w - x)
            patch = np.zeros((size, size, image.shape[2]), dtype=np.uint8)
            mpatch = np.full((size, size), IGNORE_INDEX, dtype=np.uint8)
            patch[:vh, :vw] = image[y : y + vh, x : x + vw]
            mpatch[:vh, :vw] = mask[y : y + vh, x : x + vw]
            yield patch, mpatch, (y, x), (vh, vw)


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
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder", source=str(folder))
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


def _rescaled(im, scale: float, resample):
    """``im`` resized by ``scale`` (at least 1 x 1 pixel); unchanged at scale 1."""
    if scale == 1.0:
        return im
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    return im.resize(size, resample)


def read_image(path: Path, scale: float = 1.0) -> np.ndarray:
    """An image as (H, W, 3) uint8, resized by ``scale`` (bilinear)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(_rescaled(im.convert("RGB"), scale, Image.Resampling.BILINEAR))
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"cannot read image: {exc}", source=str(path)) from None


def read_mask(path: Path, palette: Optional[Palette], num_classes: int, scale: float = 1.0) -> np.ndarray:
    """A mask as (H, W) uint8 class ids, through the palette if one is given, resized by ``scale``
    (nearest neighbour, so no new colour or class id appears)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if palette is not None:
                return palette.apply(
                    np.asarray(_rescaled(im.convert("RGB"), scale, Image.Resampling.NEAREST)), str(path)
                )
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise UserError(
                    f"mask has colour mode {im.mode}; give --palette to map colours to classes", source=str(path)
                )
            ids = np.asarray(_rescaled(im, scale, Image.Resampling.NEAREST))
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"cannot read mask: {exc}", source=str(path)) from None
    labelled = ids[ids != IGNORE_INDEX]
    if labelled.size and int(labelled.max()) >= num_classes:
        raise UserError(f"class id {int(labelled.max())} is beyond the {num_classes} classes", source=str(path))
    return ids.astype(np.uint8)


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


def foreground_tile_share(mask: np.ndarray, size: int, overlap: int) -> float:
    """The share of a mask's tiles that hold at least one foreground pixel (class id > 0, not ignored)."""
    hits = []
    for y in tile_positions(mask.shape[0], size, overlap):
        for x in tile_positions(mask.shape[1], size, overlap):
            window = mask[y : y + size, x : x + size]
            hits.append(bool(((window > 0) & (window != IGNORE_INDEX)).any()))
    return sum(hits) / len(hits)


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
) -> Dict[str, int]:
    """Tile every image/mask pair into the HDF5 data set ``out``; returns patches per split.

    ``scale`` resizes every image and mask first (0.25: a quarter of the
    resolution); ``stratify`` spreads sources with and without foreground
    evenly over the splits (:func:`assign_splits_stratified`).
    """
    if not 0 <= overlap < size:
        raise UserError(f"overlap must be in [0, size), got overlap={overlap} size={size}", source="--overlap")
    if not 0 < scale <= 16:
        raise UserError(f"must be in (0, 16], got {scale}", source="--scale")
    pal = Palette.load(palette) if palette else None
    names = pal.class_names if pal else list(class_names or ["background", "object"])
    pairs = pair_images_and_masks(images, masks)[:limit]
    if stratify:
        shares = [foreground_tile_share(read_mask(m, pal, len(names), scale), size, overlap) for _, m in pairs]
        splits = assign_splits_stratified(shares, val_fraction, test_fraction, seed)
    else:
        splits = assign_splits(len(pairs), val_fraction, test_fraction, seed)
    root = Path(images)
    with create_dataset(out, names, size, overlap, channels=3) as writer:
        for (img_path, mask_path), split in zip(pairs, splits):
            image = read_image(img_path, scale)
            mask = read_mask(mask_path, pal, len(names), scale)
            if image.shape[:2] != mask.shape:
                raise UserError(
                    f"image is {image.shape[1]}x{image.shape[0]} but its mask {mask_path} is "
                    f"{mask.shape[1]}x{mask.shape[0]}",
                    source=str(img_path),
                )
            src = writer.add_source(str(img_path.relative_to(root)), mask.shape, split)
            for patch, mpatch, offset, valid in tile_array(image, mask, size, overlap):
                writer.add_patch(patch, mpatch, src, offset, valid)
        counts = writer.patch_counts()
    return counts
