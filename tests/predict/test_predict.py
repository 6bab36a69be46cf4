"""Scenes in, georeferenced outputs out: GeoTIFF tiling, sliding windows, predict, export, bad input."""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import shape

from hpcnas.data.hdf5 import IGNORE_INDEX, read_info
from hpcnas.data.raster import Scene
from hpcnas.errors import UserError
from hpcnas.predict.engines import Engine, ModelCard
from hpcnas.predict.outputs import NODATA_CLASS, scene_outputs
from hpcnas.predict.run import PredictOptions, predict_scene
from hpcnas.predict.sliding import blend_weights, count_windows, sliding_strips, window_starts
from tests.conftest import ROOT, run_cli
from tests.geodata import PIXEL, draw, make_geo_run, write_tif


@pytest.fixture(scope="module")
def geo_run(tmp_path_factory):
    return make_geo_run(tmp_path_factory.mktemp("geo"))


# -- tiling GeoTIFFs -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tiling_keeps_16_bits_bands_and_stores_train_normalization(geo_run):
    info = read_info(geo_run / "d.h5")
    assert info.dtype == "uint16" and info.channels == 3 and info.bands == [2, 3, 1]
    with h5py.File(geo_run / "d.h5") as f:
        patch, mask = f["train/images"][0], f["train/masks"][0]
        name = info.sources[f["train/source"][0]]
        y, x = f["train/offsets"][0]
    with rasterio.open(geo_run / "images" / name) as src:
        raw = src.read([2, 3, 1], window=((y, y + 32), (x, x + 32)))
    np.testing.assert_array_equal(patch[: raw.shape[1], : raw.shape[2]], np.moveaxis(raw, 0, -1))
    # the band with objects has a larger mean and spread; nodata (0) stayed out of the statistics
    norm = info.normalization
    assert norm.offset[0] > norm.offset[1] > 900 and norm.scale[0] > norm.scale[1] > 30
    assert mask.shape == (32, 32)


def test_nodata_pixels_are_ignored_in_the_masks(geo_run):
    info = read_info(geo_run / "d.h5")
    with h5py.File(geo_run / "d.h5") as f:
        for split in ("train", "val"):
            corner = np.nonzero((f[f"{split}/offsets"][...] == 0).all(axis=1))[0]
            for i in corner:
                assert (f[f"{split}/masks"][i][:3, :3] == IGNORE_INDEX).all()
                assert (f[f"{split}/masks"][i][3:6, 3:6] != IGNORE_INDEX).all()
    assert sum(info.split_sizes.values()) > 0


def test_a_mask_shifted_by_one_pixel_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "im").mkdir()
    (tmp_path / "ma").mkdir()
    image, mask = draw(rng, 40, 40)
    write_tif(tmp_path / "im" / "a.tif", image, from_origin(500000, 2770000, PIXEL, PIXEL))
    write_tif(tmp_path / "ma" / "a.tif", mask[None], from_origin(500000 + PIXEL, 2770000, PIXEL, PIXEL))
    proc = run_cli("data", "tile", "--images", str(tmp_path / "im"), "--masks", str(tmp_path / "ma"),
                   "--out", str(tmp_path / "o.h5"), "--size", "32", "--overlap", "8")  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("hpcnas: error:") and "not aligned" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.h5").exists() and len(proc.stderr.strip().splitlines()) == 1


def test_a_corrupt_tiff_and_a_missing_band_are_one_line_errors(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "im").mkdir()
    (tmp_path / "ma").mkdir()
    image, mask = draw(rng, 40, 40)
    write_tif(tmp_path / "im" / "a.tif", image)
    write_tif(tmp_path / "ma" / "a.tif", mask[None])
    args = ["data", "tile", "--images", str(tmp_path / "im"), "--masks", str(tmp_path / "ma"), "--size", "32"]
    proc = run_cli(*args, "--overlap", "8", "--bands", "5,1", "--out", str(tmp_path / "o.h5"))
    assert proc.returncode == 2 and "band 5 asked for, but the image has 4 band(s)" in proc.stderr
    (tmp_path / "im" / "a.tif").write_bytes(b"II*\x00" + bytes(200))  # a TIFF header, then nothing usable
    proc = run_cli(*args, "--overlap", "8", "--out", str(tmp_path / "o.h5"))
    assert proc.returncode == 2 and proc.stderr.startswith("hpcnas: error:") and "cannot read image" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "o.h5").exists()


# -- sliding windows ---------------------------------------------------------------------------------------------


def test_windows_cover_every_pixel_and_the_last_is_flush_with_the_border():
    assert window_starts(32, 32, 8) == [0]  # exactly one tile
    assert window_starts(20, 32, 8) == [0]  # smaller than a tile: one padded window
    assert window_starts(70, 32, 8) == [0, 24, 38]  # 70 is no multiple of the stride: the last ends at 70
    for length in range(33, 400, 7):
        starts = window_starts(length, 32, 8)
        assert starts[-1] + 32 == length and all(b - a <= 24 for a, b in zip(starts, starts[1:]))


def covering(height, width, tile, overlap, blend="mean"):
    """Run the strips with a 'network' that outputs 1 for every pixel it sees: the blend's weight sums."""
    seen = np.zeros((height, width), int)
    rows, reads = [], []

    def read(y, x, h, w):
        reads.append((y, x))
        valid = np.zeros((h, w), bool)
        valid[: max(0, min(h, height - y)), : max(0, min(w, width - x))] = True
        seen[y : y + h, x : x + w] += 1
        return np.zeros((h, w, 1), np.float32), valid

    strips = sliding_strips(height, width, read, lambda b: np.ones((len(b), 2, tile, tile)), 2, tile, overlap, blend)
    for y, logits, valid in strips:
        rows.append((y, logits.shape[1]))
        assert valid.all() and (logits == 1).all()
    assert len(reads) == len(set(reads)) == count_windows(height, width, tile, overlap)
    return seen, rows


@pytest.mark.parametrize("shape", [(32, 32), (70, 45), (20, 90), (101, 33)])
def test_strips_cover_the_scene_once_in_order(shape):
    seen, rows = covering(*shape, 32, 8)
    assert (seen >= 1).all()
    assert rows[0][0] == 0 and sum(h for _, h in rows) == shape[0]
    assert all(y + h == y2 for (y, h), (y2, _) in zip(rows, rows[1:]))


@pytest.mark.parametrize("blend", ["mean", "smooth"])
def test_a_constant_logit_model_is_reproduced_exactly(blend):
    constant = np.array([0.25, -3.0, 7.5], np.float32)
    out = np.concatenate(
        [
            logits
            for _, logits, _ in sliding_strips(
                77, 61, lambda y, x, h, w: (np.zeros((h, w, 1)), np.ones((h, w), bool)),
                lambda b: np.broadcast_to(constant[None, :, None, None], (len(b), 3, 24, 24)).copy(),
                3, 24, 10, blend,
            )
        ],
        axis=1,
    )  # fmt: skip
    expected = np.broadcast_to(constant[:, None, None], out.shape)
    if blend == "mean":
        np.testing.assert_array_equal(out, expected)
    else:
        np.testing.assert_allclose(out, expected, rtol=2e-7, atol=0)


def test_mean_blend_averages_the_windows_that_cover_a_pixel():
    """Each window outputs its own column offset: a pixel gets the mean of the offsets of the windows over it."""
    width, tile, overlap = 70, 32, 8
    strips = sliding_strips(
        10, width, lambda y, x, h, w: (np.full((h, w, 1), x, np.float32), np.ones((h, w), bool)),
        lambda b: b[..., 0][:, None].astype(np.float32), 1, tile, overlap,
    )  # fmt: skip
    got = np.concatenate([logits[0] for _, logits, _ in strips])
    starts = window_starts(width, tile, overlap)
    for col in range(width):
        over = [x for x in starts if x <= col < x + tile]
        assert got[0, col] == pytest.approx(np.mean(over))
    assert blend_weights(32, 8, "smooth").min() > 0


# -- predict --------------------------------------------------------------------------------------------------


class ThresholdNet(Engine):
    """Class 1 where the first (normalized) band is above 0.5: polygons with known places."""

    name = "threshold"

    def __init__(self):
        self.card = ModelCard(in_channels=1, class_names=["background", "object"], dtype="uint8", tile_size=16,
                              overlap=4, normalization={"offset": [0.0], "scale": [255.0]})  # fmt: skip

    def __call__(self, batch):
        fg = (batch[:, :1] > 0.5).astype(np.float32) * 8 - 4
        return np.concatenate([-fg, fg], axis=1)


def test_polygons_land_at_the_right_map_coordinates_and_objects_cut_by_chunks_are_merged(tmp_path, monkeypatch):
    import hpcnas.predict.outputs as outputs

    monkeypatch.setattr(outputs, "VECTOR_CHUNK_ROWS", 8)  # objects cross chunk borders: they must come out whole
    image = np.zeros((1, 50, 40), np.uint8)
    image[0, 5:25, 10:14] = 255  # a tall bar: rows 5-24, columns 10-13
    image[0, 30:33, 30:38] = 255
    origin = (600000.0, 2800000.0)
    write_tif(tmp_path / "s.tif", image, from_origin(*origin, 2.0, 2.0))
    paths = scene_outputs(tmp_path / "out", tmp_path / "s.tif", True)
    (tmp_path / "out").mkdir()
    with Scene(tmp_path / "s.tif") as scene:
        predict_scene(scene, ThresholdNet(), paths, PredictOptions(vector=True, probabilities=True), 16, 4)
    features = json.loads(paths["vector"].read_text())
    assert features["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32640"
    boxes = sorted(
        (f["properties"]["area"], f["properties"]["pixels"], tuple(np.round(_bounds(f["geometry"]), 3)))
        for f in features["features"]
    )
    x0, y0 = origin
    assert boxes == [
        (3 * 8 * 4.0, 24, (x0 + 30 * 2, y0 - 33 * 2, x0 + 38 * 2, y0 - 30 * 2)),
        (20 * 4 * 4.0, 80, (x0 + 10 * 2, y0 - 25 * 2, x0 + 14 * 2, y0 - 5 * 2)),
    ]
    with rasterio.open(paths["classes"]) as a, rasterio.open(tmp_path / "s.tif") as b:
        assert a.crs == b.crs and a.transform == b.transform and a.nodata == NODATA_CLASS
        np.testing.assert_array_equal(a.read(1), (image[0] > 127).astype(np.uint8))
    with rasterio.open(paths["probabilities"]) as p:
        probs = p.read()
        assert p.count == 2 and np.allclose(probs.sum(0), 1, atol=1e-3)


def test_specks_are_dropped_by_default_and_staircase_outlines_simplified_within_a_pixel(tmp_path):
    image = np.zeros((1, 40, 40), np.uint8)
    image[0, 2, 2] = image[0, 2, 30] = image[0, 3, 30] = 255  # a 1-pixel and a 2-pixel speck
    for row in range(10, 22):  # a right triangle: its hypotenuse is a staircase of 1-pixel steps
        image[0, row, 10 : row - 10 + 11] = 255
    image[0, 30:32, 30:33] = 255  # 6 pixels: an object, not a speck
    write_tif(tmp_path / "s.tif", image, from_origin(600000.0, 2800000.0, 2.0, 2.0))

    def polygons(name, **options):
        paths = scene_outputs(tmp_path / name, tmp_path / "s.tif", True)
        (tmp_path / name).mkdir()
        with Scene(tmp_path / "s.tif") as scene:
            predict_scene(scene, ThresholdNet(), paths, PredictOptions(vector=True, **options), 16, 4)
        return json.loads(paths["vector"].read_text())["features"]

    default = polygons("default")
    assert sorted(f["properties"]["pixels"] for f in default) == [6, 78]
    everything = polygons("all", min_area="0", simplify="0")
    assert sorted(f["properties"]["pixels"] for f in everything) == [1, 2, 6, 78]
    by_map_units = polygons("m2", min_area="24")  # 24 m^2 at 2 m pixels: the 6-pixel object and more
    assert sorted(f["properties"]["pixels"] for f in by_map_units) == [6, 78]
    triangle = lambda fs: next(f for f in fs if f["properties"]["pixels"] == 78)  # noqa: E731
    exact, simple = (shape(triangle(fs)["geometry"]) for fs in (everything, default))
    assert len(exact.exterior.coords) > 20 and len(simple.exterior.coords) <= 6  # 12 steps become one slope
    assert exact.hausdorff_distance(simple) <= 2.0  # within a pixel of 2 m
    assert triangle(default)["properties"]["area"] == 78 * 4.0  # the pixels' own area, whatever the outline
    with pytest.raises(UserError, match="--min-area"):
        PredictOptions(min_area="four").outputs()


def _bounds(geometry):
    points = np.array([pt for ring in geometry["coordinates"] for pt in ring])
    return points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()


def predict_args(geo_run, out):
    """``hpcnas predict`` of the geo run's network on its new scenes into ``out``."""
    ckpt = str(geo_run / "run" / "checkpoints" / "best.pt")
    return ["predict", "--checkpoint", ckpt, "--input", str(geo_run / "scenes"), "--out", str(out), "--device", "cpu"]


@pytest.mark.slow
def test_predict_writes_georeferenced_outputs_and_resume_skips_finished_scenes(geo_run, tmp_path):
    out = tmp_path / "pred"
    args = predict_args(geo_run, out)
    proc = run_cli(*args, "--vector", "--probabilities")
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(out / "new_classes.tif") as pred, rasterio.open(geo_run / "scenes" / "new.tif") as src:
        assert pred.crs == src.crs and pred.transform == src.transform and pred.shape == src.shape
        assert pred.profile["tiled"] and pred.profile["compress"] == "deflate" and pred.dtypes == ("uint8",)
        classes = pred.read(1)
    assert (classes[:3, :3] == NODATA_CLASS).all() and set(np.unique(classes[3:, 3:])) <= {0, 1}
    assert json.loads((out / "new.geojson").read_text())["type"] == "FeatureCollection"
    again = run_cli(*args)
    assert again.returncode == 2 and "already exists: add --resume" in again.stderr
    mtime = (out / "new_classes.tif").stat().st_mtime_ns
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0 and "1 already there" in resumed.stdout
    assert (out / "new_classes.tif").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_cog_outputs_with_named_bands_and_data_info_says_where_the_scenes_lie(geo_run, tmp_path):
    out = tmp_path / "cog"
    proc = run_cli(*predict_args(geo_run, out), "--cog", "--probabilities")
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(out / "new_classes.tif") as classes, rasterio.open(out / "new_probabilities.tif") as probs:
        assert classes.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" == probs.tags(ns="IMAGE_STRUCTURE")["LAYOUT"]
        assert classes.descriptions == ("class id",) and probs.descriptions == ("background", "object")
        assert classes.tags(1)["class_0"] == "background" and classes.tags(1)["class_1"] == "object"
        assert classes.nodata == NODATA_CLASS and classes.crs.to_epsg() == 32640
    info = run_cli("data", "info", str(geo_run / "d.h5"))
    assert info.returncode == 0, info.stderr
    assert "CRS EPSG:32640 for 4 scene(s), pixel size 0.5 x 0.5 metre" in info.stdout
    assert "scenes of train (" in info.stdout and "s0.tif" in info.stdout


@pytest.mark.slow
def test_predict_refuses_a_scene_with_other_bands_and_warns_without_crs(geo_run, tmp_path):
    ckpt = str(geo_run / "run" / "checkpoints" / "best.pt")
    rng = np.random.default_rng(3)
    write_tif(tmp_path / "two.tif", rng.integers(0, 900, (2, 40, 40)).astype(np.uint16))
    proc = run_cli("predict", "--checkpoint", ckpt, "--input", str(tmp_path / "two.tif"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "band 3 asked for, but the image has 2 band(s)" in proc.stderr
    write_tif(tmp_path / "bytes.tif", rng.integers(0, 255, (4, 40, 40)).astype(np.uint8))
    proc = run_cli(
        "predict", "--checkpoint", ckpt, "--input", str(tmp_path / "bytes.tif"), "--out", str(tmp_path / "o")
    )
    assert proc.returncode == 2 and "trained on 3 of uint16" in proc.stderr and not (tmp_path / "o").exists()
    image, _ = draw(rng, 40, 50)
    write_tif(tmp_path / "plain.tif", image, transform=False)
    plain = ["--input", str(tmp_path / "plain.tif"), "--out", str(tmp_path / "p"), "--vector"]
    proc = run_cli("predict", "--checkpoint", ckpt, *plain)
    assert proc.returncode == 0, proc.stderr
    assert "hpcnas: warning:" in proc.stderr and "pixel coordinates" in proc.stderr
    with rasterio.open(tmp_path / "p" / "plain_classes.tif") as pred:
        assert pred.crs is None and pred.transform.is_identity
    assert "crs" not in json.loads((tmp_path / "p" / "plain.geojson").read_text())


@pytest.mark.slow
def test_a_window_the_network_cannot_take_and_twin_scene_names_are_refused(geo_run, tmp_path):
    from hpcnas.predict.run import check_window

    class Strided(ThresholdNet):
        def __call__(self, batch):
            if batch.shape[-1] % 8:
                raise RuntimeError("Sizes of tensors must match except in dimension 1")
            return super().__call__(batch)

    check_window(Strided(), 32)
    with pytest.raises(UserError, match="cannot take 30 px windows .Sizes of tensors must match"):
        check_window(Strided(), 30)
    ckpt = str(geo_run / "run" / "checkpoints" / "best.pt")
    twins = tmp_path / "twins"
    twins.mkdir()
    image, _ = draw(np.random.default_rng(4), 40, 40)
    write_tif(twins / "a.tif", image)
    write_tif(twins / "a.tiff", image)
    proc = run_cli("predict", "--checkpoint", ckpt, "--input", str(twins), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "several scenes are called 'a'" in proc.stderr


def test_png_input_gives_a_png_mask(tmp_path):
    from PIL import Image

    image = np.zeros((30, 40), np.uint8)
    image[4:9, 6:20] = 255
    Image.fromarray(image).convert("RGB").save(tmp_path / "a.png")

    class RgbThreshold(ThresholdNet):
        def __init__(self):
            super().__init__()
            self.card.in_channels = 3

    paths = scene_outputs(tmp_path, tmp_path / "a.png", False)
    with Scene(tmp_path / "a.png") as scene:
        predict_scene(scene, RgbThreshold(), paths, PredictOptions(vector=True), 16, 4)
    assert paths["classes"].suffix == ".png"
    np.testing.assert_array_equal(np.asarray(Image.open(paths["classes"])), (image > 0).astype(np.uint8))
    (feature,) = json.loads(paths["vector"].read_text())["features"]
    assert _bounds(feature["geometry"]) == (6, 4, 20, 9)  # pixel coordinates: x, y from the top-left corner


# -- export -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_export_onnx_and_torchscript_match_pytorch_and_predict_the_same(geo_run, tmp_path):
    ckpt = str(geo_run / "run" / "checkpoints" / "best.pt")
    base = tmp_path / "torch"
    assert (
        run_cli("predict", "--checkpoint", ckpt, "--input", str(geo_run / "scenes"), "--out", str(base)).returncode == 0
    )
    reference = rasterio.open(base / "new_classes.tif").read()
    for fmt, name in (("onnx", "m.onnx"), ("torchscript", "m.ts")):
        proc = run_cli("export", "--checkpoint", ckpt, "--format", fmt, "--out", str(tmp_path / name))
        assert proc.returncode == 0 and "parity ok" in proc.stdout, proc.stderr
        assert f"export: {fmt} of a 32 px tile" in proc.stderr and "checking it against PyTorch" in proc.stderr
        difference = float(proc.stdout.split("difference| ")[1].split()[0])
        assert difference <= 1e-4
        again = run_cli("export", "--checkpoint", ckpt, "--format", fmt, "--out", str(tmp_path / name))
        assert again.returncode == 2 and "already exists" in again.stderr
    # onnxruntime alone: torch cannot even be imported in this process
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from hpcnas.cli import main\n"
        f"sys.exit(main(['predict', '--checkpoint', {str(tmp_path / 'm.onnx')!r}, '--input', "
        f"{str(geo_run / 'scenes')!r}, '--out', {str(tmp_path / 'onnx')!r}]))\n"
    )
    import subprocess

    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ts = run_cli("predict", "--checkpoint", str(tmp_path / "m.ts"), "--input", str(geo_run / "scenes"),
                 "--out", str(tmp_path / "ts"))  # fmt: skip
    assert ts.returncode == 0, ts.stderr
    for folder in ("onnx", "ts"):
        np.testing.assert_array_equal(rasterio.open(tmp_path / folder / "new_classes.tif").read(), reference)


def test_exported_model_card_carries_the_bands_and_normalization(geo_run, tmp_path):
    from hpcnas.predict.engines import engine_for
    from hpcnas.predict.export import export_model

    ckpt = str(geo_run / "run" / "checkpoints" / "best.pt")
    result = export_model(ckpt, "onnx", str(tmp_path / "m.onnx"))
    card = engine_for(str(tmp_path / "m.onnx")).card
    info = read_info(geo_run / "d.h5")
    assert result["ok"] and card.bands == [2, 3, 1] and card.dtype == "uint16" and card.tile_size == 32
    np.testing.assert_allclose(card.norm.offset, info.normalization.offset)
    with pytest.raises(UserError, match="not an ONNX model"):
        (tmp_path / "bad.onnx").write_bytes(b"not a model")
        engine_for(str(tmp_path / "bad.onnx"))


@pytest.mark.slow
def test_evaluate_and_report_read_16_bit_data(geo_run, tmp_path):
    from hpcnas.report.plots import display_rgb

    ckpt = str(geo_run / "run" / "checkpoints" / "best.pt")
    evaluated = run_cli("evaluate", "--checkpoint", ckpt, "--split", "val", "--out", str(tmp_path / "ev"))
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert result["images"] == 1 and 0 <= result["miou"] <= 1
    with np.load(tmp_path / "ev" / "predictions.npz") as shown:
        assert shown["image_0"].dtype == np.uint16 and shown["image_0"].shape[-1] == 3
        picture = display_rgb(shown["image_0"])
    assert picture.shape[-1] == 3 and 0 <= picture.min() and picture.max() <= 1 and picture.std() > 0


@pytest.mark.slow
def test_bad_window_sizes_an_export_under_a_file_and_a_corrupt_scene_leave_nothing(geo_run, tmp_path):
    ckpt = str(geo_run / "run" / "checkpoints" / "best.pt")
    rng = np.random.default_rng(4)
    image, _ = draw(rng, 64, 64)
    write_tif(tmp_path / "scene.tif", image)
    (tmp_path / "afile").write_text("a file, not a folder\n")
    cases = [
        (["predict", "--input", str(tmp_path / "scene.tif"), "--out", str(tmp_path / "o"), "--tile", "0"], "--tile"),
        (["predict", "--input", str(tmp_path / "scene.tif"), "--out", str(tmp_path / "o"), "--tile", "-5"], "--tile"),
        (["export", "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--tile", "0"], "--tile"),
        (["export", "--format", "onnx", "--out", str(tmp_path / "afile" / "m.onnx")], "is a file, not a folder"),
    ]
    for argv, fragment in cases:
        proc = run_cli(argv[0], "--checkpoint", ckpt, *argv[1:])
        assert proc.returncode == 2, (argv, proc.stderr[-2000:])
        lines = [line for line in proc.stderr.splitlines() if line.startswith("hpcnas")]
        assert len(lines) == 1 and lines[0].startswith("hpcnas: error:") and fragment in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    data = (tmp_path / "scene.tif").read_bytes()  # the header reads, the pixels are gone
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 3])
    proc = run_cli("predict", "--checkpoint", ckpt, "--input", str(tmp_path / "cut.tif"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and proc.stderr.count("hpcnas: error:") == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "cut.tif", "scene.tif"]  # no output folder
