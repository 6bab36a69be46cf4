"""Scenes: large rasters read window by window, and the per-band normalization that travels with a network.

GeoTIFFs (and every other raster GDAL opens) are read through rasterio, one
window at a time, so memory does not grow with the scene.  PNG and JPEG go
through Pillow, whole, as they are small and carry no georeferencing.  A
scene keeps its CRS and affine transform, so outputs can be written back
onto the map, and its nodata/alpha mask, so nodata pixels are ignored.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from hpcnas.errors import UserError
from hpcnas.rundir import PathLike

PILLOW_SUFFIXES = (".jpg", ".jpeg", ".png")
RASTER_SUFFIXES = (".tif", ".tiff", ".img", ".vrt", ".jp2")
SCENE_SUFFIXES = PILLOW_SUFFIXES + RASTER_SUFFIXES
DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32")
# GDAL's own error lines would come before ours: a failure is reported once, as a UserError naming the file
logging.getLogger("rasterio").setLevel(logging.CRITICAL)


def parse_bands(text: Optional[str]) -> Optional[List[int]]:
    """``"3,2,1"`` -> ``[3, 2, 1]`` (1-based, as GDAL counts bands); ``None`` keeps every band."""
    if text is None or str(text).strip() == "":
        return None
    try:
        bands = [int(v) for v in str(text).split(",")]
    except ValueError:
        raise UserError(f"expected comma-separated band numbers like 3,2,1, got '{text}'", source="--bands") from None
    if any(b < 1 for b in bands):
        raise UserError(f"band numbers count from 1, got '{text}'", source="--bands")
    return bands


@dataclass
class Normalization:
    """``(raw - offset) / scale`` per band: what the network sees.

    8-bit data keeps the fixed ``/255`` (offset 0, scale 255) every earlier
    data set used; other types get the mean and standard deviation of each
    band over the training split, computed once and reused unchanged at
    predict time.
    """

    offset: np.ndarray
    scale: np.ndarray

    @classmethod
    def fixed_8bit(cls, bands: int) -> "Normalization":
        """The ``/255`` normalization of 8-bit data."""
        return cls(np.zeros(bands, np.float32), np.full(bands, 255.0, np.float32))

    @classmethod
    def from_dict(cls, raw: Optional[Dict[str, Any]], bands: int) -> "Normalization":
        """From :meth:`to_dict`'s form; ``None`` (an older data set or checkpoint) is the 8-bit default."""
        if not raw:
            return cls.fixed_8bit(bands)
        return cls(np.asarray(raw["offset"], np.float32), np.asarray(raw["scale"], np.float32))

    def to_dict(self) -> Dict[str, List[float]]:
        """A JSON-able form (stored in checkpoints and exported models)."""
        return {"offset": [float(v) for v in self.offset], "scale": [float(v) for v in self.scale]}

    def apply(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, C) raw values -> (N, C, H, W) float32 network input."""
        x = np.moveaxis(np.asarray(batch, dtype=np.float32), -1, 1)
        # C order: numpy would keep the channels-last strides, and torch 2.13's CPU backward of these cells
        # aborts on a channels-last input
        return np.ascontiguousarray((x - self.offset[:, None, None]) / self.scale[:, None, None])


class BandStatistics:
    """Running per-band sums over valid pixels, turned into a :class:`Normalization` at the end."""

    def __init__(self, bands: int):
        self.count = 0
        self.total = np.zeros(bands, np.float64)
        self.squares = np.zeros(bands, np.float64)

    def add(self, pixels: np.ndarray, valid: np.ndarray) -> None:
        """Add the (H, W, C) ``pixels`` where ``valid`` (H, W) is true."""
        chosen = pixels[valid].astype(np.float64)
        self.count += chosen.shape[0]
        self.total += chosen.sum(axis=0)
        self.squares += (chosen**2).sum(axis=0)

    def normalization(self, dtype: str) -> Normalization:
        """8-bit: the fixed ``/255``; otherwise mean / standard deviation (1 where a band is constant)."""
        if dtype == "uint8":
            return Normalization.fixed_8bit(len(self.total))
        if self.count == 0:
            raise UserError(
                "the train split has no valid pixel (every pixel is nodata or NaN): nothing to normalize by"
            )
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.squares / self.count - mean**2, 0.0))
        return Normalization(mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32))


def _rescaled(im, scale: float, resample):
    """``im`` resized by ``scale`` (at least 1 x 1 pixel); unchanged at scale 1."""
    if scale == 1.0:
        return im
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    return im.resize(size, resample)


class Scene:
    """One input raster: size, bands, type, georeferencing, and windowed reads.

    ``bands`` picks and orders the bands (1-based); ``None`` keeps them all
    (PNG/JPEG: the RGB channels).  ``role`` is ``image``, ``mask`` (class ids:
    a palette PNG gives its indices) or ``colour mask`` (RGB, for a palette
    file).  Reads past the scene's border are padded with zeros and marked
    invalid.
    """

    def __init__(self, path: PathLike, bands: Optional[Sequence[int]] = None, role: str = "image", scale: float = 1.0):
        self.path = Path(path)
        self.role = role
        self.scale = scale
        self._dataset: Any = None
        self._array: Optional[np.ndarray] = None
        self._valid: Optional[np.ndarray] = None
        if self.path.suffix.lower() in PILLOW_SUFFIXES:
            self._open_with_pillow()
        elif scale != 1.0:
            raise UserError(
                "--scale resizes PNG/JPEG only; resample a GeoTIFF with gdalwarp -tr (it keeps the georeferencing)",
                source=str(self.path),
            )
        else:
            self._open_with_rasterio()
        total = self.file_bands
        self.bands = list(bands) if bands else list(range(1, total + 1))
        if max(self.bands) > total:
            raise UserError(
                f"band {max(self.bands)} asked for, but the {role} has {total} band(s)", source=str(self.path)
            )

    @classmethod
    def from_array(cls, array: np.ndarray, name: str = "<array>", role: str = "image") -> "Scene":
        """A scene held in memory ((H, W) or (H, W, bands)): drawn data, tests."""
        scene = cls.__new__(cls)
        scene.path, scene.role, scene.scale, scene._dataset, scene._valid = Path(name), role, 1.0, None, None
        scene._array = array if array.ndim == 3 else array[..., None]
        scene.height, scene.width, scene.file_bands = scene._array.shape
        scene.dtype, scene.crs, scene.transform = str(array.dtype), None, None
        scene.bands = list(range(1, scene.file_bands + 1))
        return scene

    # -- opening ---------------------------------------------------------------------------------------------

    def _open_with_pillow(self) -> None:
        from PIL import Image, UnidentifiedImageError

        mask = self.role.endswith("mask")
        resample = Image.Resampling.NEAREST if mask else Image.Resampling.BILINEAR
        try:
            with Image.open(self.path) as im:
                if self.role == "mask" and im.mode in ("L", "P", "I", "I;16", "1"):  # ids, not colours
                    array = np.asarray(_rescaled(im, self.scale, resample))[..., None]
                elif im.mode in ("RGBA", "LA") and not mask:
                    rgba = np.asarray(_rescaled(im.convert("RGBA"), self.scale, resample))
                    array, self._valid = rgba[..., :3], rgba[..., 3] > 0
                else:
                    array = np.asarray(_rescaled(im.convert("RGB"), self.scale, resample))
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"cannot read {self.role}: {exc}", source=str(self.path)) from None
        self._array = array
        self.height, self.width, self.file_bands = array.shape
        self.dtype = str(array.dtype)
        self.crs: Any = None
        self.transform: Any = None

    def _open_with_rasterio(self) -> None:
        import rasterio
        from rasterio.errors import RasterioIOError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self._dataset = rasterio.open(self.path)
        except RasterioIOError as exc:
            raise UserError(f"cannot read {self.role}: {str(exc).splitlines()[0]}", source=str(self.path)) from None
        ds = self._dataset
        self.height, self.width, self.file_bands = ds.height, ds.width, ds.count
        dtypes = set(ds.dtypes)
        if len(dtypes) != 1 or ds.dtypes[0] not in DTYPES:
            self.close()
            raise UserError(
                f"band type {', '.join(sorted(dtypes))} is not supported (supported: {', '.join(DTYPES)})",
                source=str(self.path),
            )
        self.dtype = ds.dtypes[0]
        self.crs = ds.crs
        self.transform = None if ds.transform.is_identity else ds.transform

    @property
    def georeferenced(self) -> bool:
        """True when the scene has a CRS and a non-identity transform."""
        return self.crs is not None and self.transform is not None

    @property
    def channels(self) -> int:
        """Bands the network sees."""
        return len(self.bands)

    # -- reading ---------------------------------------------------------------------------------------------

    def read(self, y: int, x: int, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(pixels (height, width, C), valid (height, width) bool)`` of a window; padding is invalid."""
        vh, vw = max(0, min(height, self.height - y)), max(0, min(width, self.width - x))
        pixels = np.zeros((height, width, self.channels), dtype=self.dtype)
        valid = np.zeros((height, width), dtype=bool)
        if vh and vw:
            if self._array is not None:
                pixels[:vh, :vw] = self._array[y : y + vh, x : x + vw][..., [b - 1 for b in self.bands]]
                valid[:vh, :vw] = True if self._valid is None else self._valid[y : y + vh, x : x + vw]
            else:
                from rasterio.windows import Window

                window = Window(x, y, vw, vh)
                try:
                    data = self._dataset.read(self.bands, window=window)
                    masks = self._dataset.read_masks(self.bands, window=window)
                except Exception as exc:  # noqa: BLE001 - GDAL reports a damaged block with several types
                    raise UserError(
                        f"cannot read the window at (y={y}, x={x}): {str(exc).splitlines()[0]} (corrupt file?)",
                        source=str(self.path),
                    ) from None
                pixels[:vh, :vw] = np.moveaxis(data, 0, -1)
                valid[:vh, :vw] = (masks > 0).all(axis=0)
        if pixels.dtype.kind == "f":  # NaN is nodata (float rasters mark gaps so): ignored, and stored as 0
            missing = np.isnan(pixels)
            if missing.any():
                valid &= ~missing.any(axis=-1)
                pixels[missing] = 0
        return pixels, valid

    def check_aligned(self, other: "Scene") -> None:
        """A :class:`UserError` unless ``other`` (a mask) covers the same pixels as this scene.

        Georeferenced pairs are compared by CRS and transform, not just size:
        a mask of the right size shifted by a pixel is wrong, not usable.
        """
        if (other.height, other.width) != (self.height, self.width):
            raise UserError(
                f"image is {self.width}x{self.height} but its mask {other.path} is {other.width}x{other.height}",
                source=str(self.path),
            )
        if self.georeferenced and other.georeferenced:
            if other.crs != self.crs:
                raise UserError(
                    f"mask {other.path} is in {other.crs}, its image in {self.crs}: reproject one onto the other",
                    source=str(self.path),
                )
            if not other.transform.almost_equals(self.transform):
                raise UserError(
                    f"mask {other.path} is not aligned with its image (transform {tuple(other.transform)[:6]} "
                    f"vs {tuple(self.transform)[:6]})",
                    source=str(self.path),
                )

    def close(self) -> None:
        """Release the file."""
        if self._dataset is not None:
            self._dataset.close()
            self._dataset = None

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
