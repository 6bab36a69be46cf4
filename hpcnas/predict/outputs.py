"""What ``predict`` writes per scene, strip by strip: class ids, probabilities, polygons of objects.

A georeferenced scene gives GeoTIFFs with its CRS and transform (tiled,
DEFLATE-compressed, nodata kept, bands named after the classes; with ``cog``
Cloud-Optimized GeoTIFFs with overviews) and polygons in its CRS, specks
under a minimum area dropped and outlines simplified; a PNG/JPEG gives a PNG
mask and polygons in pixel coordinates.  Every file is written under a
temporary name and renamed when the scene is complete, so a killed job
leaves no half-written output behind.
"""

from __future__ import annotations

import json
import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from hpcnas.errors import UserError
from hpcnas.rundir import publish, temporary_sibling

log = logging.getLogger("hpcnas")

NODATA_CLASS = 255
VECTOR_CHUNK_ROWS = 1024  # rows vectorized at once; objects cut by a chunk border are merged at the end


@dataclass(frozen=True)
class MapQuantity:
    """A length or an area given on the command line: in pixels (``4px``) or in the CRS's map units (``2.5``)."""

    value: float
    pixels: bool

    @classmethod
    def parse(cls, text: str, option: str) -> "MapQuantity":
        """``"4px"`` (pixels) or ``"2.5"`` (map units); a negative or malformed value is a one-line error."""
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(px)?\s*", str(text))
        if not match:
            raise UserError(f"expected a number of map units or of pixels (e.g. 4px), got '{text}'", source=option)
        return cls(float(match.group(1)), bool(match.group(2)))

    def in_map_units(self, pixel_size: float, power: int = 1) -> float:
        """The value in map units (``power`` 2 for an area), given a pixel's side in map units."""
        return self.value * pixel_size**power if self.pixels else self.value

    def __str__(self) -> str:
        return f"{self.value:g}{'px' if self.pixels else ''}"


class RasterWriter:
    """A GeoTIFF filled strip by strip (``count`` bands of ``dtype``), in the scene's CRS and transform.

    ``names`` describe the bands (GDAL band descriptions); ``tags`` are written on band 1.  With ``cog`` the
    finished file is copied into a Cloud-Optimized GeoTIFF (GDAL's COG driver, overviews resampled by
    ``resampling``) before it is moved into place."""

    def __init__(
        self,
        path: Path,
        height: int,
        width: int,
        count: int,
        dtype: str,
        scene: Any,
        names: Optional[List[str]] = None,
        tags: Optional[Dict[str, str]] = None,
        cog: bool = False,
        resampling: str = "NEAREST",
        **options,
    ):
        import rasterio

        self.path, self.tmp = path, temporary_sibling(path)
        self.cog, self.resampling, self.options = cog, resampling, options
        profile = dict(
            driver="GTiff",
            height=height,
            width=width,
            count=count,
            dtype=dtype,
            crs=scene.crs,
            transform=scene.transform if scene.transform is not None else rasterio.Affine.identity(),
            tiled=True,
            blockxsize=256,
            blockysize=256,
            compress="deflate",
            BIGTIFF="IF_SAFER",
            **options,
        )
        with warnings.catch_warnings():  # a scene without CRS: predict has said so once already
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            self._dst = rasterio.open(self.tmp, "w", **profile)
        for band, name in enumerate(names or [], start=1):
            self._dst.set_band_description(band, name)
        if tags:
            self._dst.update_tags(1, **tags)

    def write(self, y: int, array: np.ndarray) -> None:
        """Write (count, h, width) or (h, width) rows starting at row ``y``."""
        from rasterio.windows import Window

        data = array if array.ndim == 3 else array[None]
        self._dst.write(data, window=Window(0, y, data.shape[2], data.shape[1]))

    def commit(self) -> None:
        """Close (copy into a COG) and move into place."""
        self._dst.close()
        if self.cog:
            import rasterio.shutil

            cog = temporary_sibling(self.path)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                    rasterio.shutil.copy(
                        self.tmp, cog, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256, RESAMPLING=self.resampling,
                        BIGTIFF="IF_SAFER", **self.options,
                    )  # fmt: skip
            except BaseException:
                cog.unlink(missing_ok=True)
                raise
            finally:
                self.tmp.unlink(missing_ok=True)
            self.tmp = cog
        publish(self.tmp, self.path)

    def abort(self) -> None:
        """Close and remove the partial file."""
        self._dst.close()
        self.tmp.unlink(missing_ok=True)


class PngWriter:
    """A class-id PNG (inputs without georeferencing are small: held whole)."""

    def __init__(self, path: Path, height: int, width: int):
        self.path, self.tmp = path, temporary_sibling(path)
        self.array = np.zeros((height, width), np.uint8)

    def write(self, y: int, array: np.ndarray) -> None:
        """Rows starting at ``y``."""
        self.array[y : y + array.shape[0]] = array

    def commit(self) -> None:
        """Write the PNG and move it into place."""
        from PIL import Image

        Image.fromarray(self.array).save(self.tmp, format="PNG")
        publish(self.tmp, self.path)

    def abort(self) -> None:
        """Forget the scene."""
        self.tmp.unlink(missing_ok=True)


class Polygons:
    """Connected components of each foreground class (ids 1..), as polygons with class, area and mean probability.

    Components are labelled per chunk of rows; a component that touches a
    chunk border is kept aside and merged with its other pieces at the end
    (shapely's union), so an object cut by a chunk border is one polygon.
    Objects smaller than ``min_area`` are dropped (after that merge: a cut
    object counts whole), and outlines are simplified within ``simplify``
    (Douglas-Peucker, topology kept); ``area`` and ``pixels`` stay those of
    the pixels themselves.
    """

    def __init__(
        self,
        path: Path,
        class_names: List[str],
        scene: Any,
        min_area: MapQuantity = MapQuantity(0, True),
        simplify: MapQuantity = MapQuantity(0, True),
    ):
        from rasterio import Affine

        self.path, self.tmp = path, temporary_sibling(path)
        self.class_names = class_names
        self.transform = scene.transform if scene.transform is not None else Affine.identity()
        pixel_size = math.sqrt(abs(self.transform.determinant))
        self.min_area, self.simplify = min_area.in_map_units(pixel_size, 2), simplify.in_map_units(pixel_size)
        self.dropped = 0
        self.crs = scene.crs if scene.transform is not None else None
        self.height = scene.height
        self.features: List[Dict[str, Any]] = []
        self.pieces: Dict[int, List[Any]] = {}  # class -> [(polygon, pixels, probability sum)] cut by a chunk border
        self._rows: List[np.ndarray] = []
        self._probs: List[np.ndarray] = []
        self._y = 0

    def write(self, y: int, classes: np.ndarray, probability: np.ndarray) -> None:
        """Rows of class ids and of the winning class's probability, starting at row ``y``."""
        self._rows.append(classes)
        self._probs.append(probability)
        if sum(r.shape[0] for r in self._rows) >= VECTOR_CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        from rasterio.features import shapes
        from scipy import ndimage
        from shapely.geometry import shape

        classes, probs = np.concatenate(self._rows), np.concatenate(self._probs)
        self._rows, self._probs = [], []
        top, bottom = self._y, self._y + classes.shape[0]
        transform = self.transform @ self.transform.translation(0, top)
        for cls in range(1, len(self.class_names)):
            labels, count = ndimage.label(classes == cls)
            if not count:
                continue
            index = np.arange(1, count + 1)
            pixels = ndimage.sum_labels(np.ones_like(probs), labels, index)
            prob_sum = ndimage.sum_labels(probs, labels, index)
            cut = set()
            if top > 0:
                cut |= set(np.unique(labels[0]).tolist())
            if bottom < self.height:
                cut |= set(np.unique(labels[-1]).tolist())
            for geom, value in shapes(labels.astype(np.int32), mask=labels > 0, transform=transform):
                k = int(value) - 1
                polygon = shape(geom)
                if k + 1 in cut:
                    self.pieces.setdefault(cls, []).append((polygon, pixels[k], prob_sum[k]))
                else:
                    self._add(cls, polygon, pixels[k], prob_sum[k])
        self._y = bottom

    def _add(self, cls: int, polygon: Any, pixels: float, prob_sum: float) -> None:
        from shapely.geometry import mapping

        if polygon.area < self.min_area:
            self.dropped += 1
            return
        outline = polygon.simplify(self.simplify, preserve_topology=True) if self.simplify > 0 else polygon
        self.features.append(
            {
                "type": "Feature",
                "properties": {
                    "class": self.class_names[cls],
                    "class_id": cls,
                    "area": float(polygon.area),
                    "pixels": int(pixels),
                    "mean_probability": round(float(prob_sum / max(pixels, 1)), 4),
                },
                "geometry": mapping(outline),
            }
        )

    def _merge_pieces(self) -> None:
        from shapely.ops import unary_union

        for cls, pieces in sorted(self.pieces.items()):
            merged = unary_union([p for p, _, _ in pieces])
            parts = list(getattr(merged, "geoms", [merged]))
            for part in parts:
                inside = [(n, s) for p, n, s in pieces if part.contains(p.representative_point())]
                self._add(cls, part, sum(n for n, _ in inside), sum(s for _, s in inside))
        self.pieces = {}

    def commit(self) -> None:
        """Vectorize what is left, merge cut objects, write the GeoJSON and move it into place."""
        self._flush()
        self._merge_pieces()
        collection: Dict[str, Any] = {"type": "FeatureCollection", "features": self.features}
        if self.crs is not None:  # the pre-RFC 7946 "crs" member: QGIS and GDAL read it
            epsg = self.crs.to_epsg()
            name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else self.crs.to_wkt()
            collection["crs"] = {"type": "name", "properties": {"name": name}}
        self.tmp.write_text(json.dumps(collection))
        publish(self.tmp, self.path)
        log.info(
            "%s: %d polygons (%d smaller than the minimum area dropped)",
            self.path.name,
            len(self.features),
            self.dropped,
        )

    def abort(self) -> None:
        """Forget the scene."""
        self.tmp.unlink(missing_ok=True)


def scene_outputs(out: Path, scene_path: Path, georeferenced: bool) -> Dict[str, Path]:
    """The files ``predict`` writes for one scene (the class map last: it marks the scene done)."""
    stem = scene_path.stem
    return {
        "probabilities": out / f"{stem}_probabilities.tif",
        "vector": out / f"{stem}.geojson",
        "classes": out / (f"{stem}_classes.tif" if georeferenced else f"{stem}_classes.png"),
    }


@dataclass(frozen=True)
class OutputOptions:
    """What a scene's outputs hold besides the class map, and in which form."""

    probabilities: bool = False
    vector: bool = False
    cog: bool = False
    min_area: MapQuantity = MapQuantity(4, True)  # drops specks of 1-3 pixels
    simplify: MapQuantity = MapQuantity(1, True)  # the pixel staircase, within a pixel


def open_outputs(
    paths: Dict[str, Path], scene: Any, class_names: List[str], options: OutputOptions, as_png: bool
) -> Dict[str, Any]:
    """Writers for one scene, keyed like :func:`scene_outputs`."""
    h, w = scene.height, scene.width
    writers: Dict[str, Any] = {}
    if options.probabilities:  # half floats: GDAL writes a Float32 band with NBITS=16 as IEEE binary16
        writers["probabilities"] = RasterWriter(
            paths["probabilities"], h, w, len(class_names), "float32", scene, names=list(class_names),
            cog=options.cog, resampling="AVERAGE", NBITS=16, nodata=None,
        )  # fmt: skip
    if options.vector:
        writers["vector"] = Polygons(paths["vector"], class_names, scene, options.min_area, options.simplify)
    ids = {f"class_{k}": name for k, name in enumerate(class_names)}
    writers["classes"] = (
        PngWriter(paths["classes"], h, w)
        if as_png
        else RasterWriter(
            paths["classes"],
            h,
            w,
            1,
            "uint8",
            scene,
            names=["class id"],
            tags={**ids, "nodata_class": "255"},
            cog=options.cog,
            resampling="MODE",
            nodata=NODATA_CLASS,
        )  # fmt: skip
    )
    return writers


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of (classes, ...) logits."""
    shifted = np.exp(logits - logits.max(axis=0, keepdims=True))
    return shifted / shifted.sum(axis=0, keepdims=True)


def class_map(logits: np.ndarray, valid: Optional[np.ndarray]) -> np.ndarray:
    """Arg-max class ids; ``NODATA_CLASS`` where the scene has no data."""
    ids = logits.argmax(axis=0).astype(np.uint8)
    if valid is not None:
        ids[~valid] = NODATA_CLASS
    return ids
