"""Tiling large images: coverage, padding, palettes, splits, bad input, the real Dubai set."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image

from hpcnas.data.hdf5 import IGNORE_INDEX, read_info
from hpcnas.data.raster import Scene
from hpcnas.data.tile import tile_folder, tile_positions, tile_scene
from hpcnas.errors import UserError
from tests.conftest import DUBAI, ROOT, run_cli


def test_positions_cover_with_one_stride():
    assert tile_positions(512, 512, 180) == [0]
    assert tile_positions(300, 512, 180) == [0]
    assert tile_positions(797, 512, 180) == [0, 332]
    assert tile_positions(2149, 512, 180) == [0, 332, 664, 996, 1328, 1660]  # last tile reaches 2172 >= 2149
    for length in range(1, 3000, 37):
        pos = tile_positions(length, 512, 180)
        assert pos[-1] + 512 >= length and (len(pos) == 1 or pos[-2] + 512 < length + 180)


def test_tiles_reassemble_the_image_exactly():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (70, 95, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (70, 95), dtype=np.uint8)
    out_img = np.zeros_like(image)
    out_mask = np.full_like(mask, 99)
    for patch, mpatch, (y, x), (vh, vw), _ in tile_scene(
        Scene.from_array(image), Scene.from_array(mask, role="mask"), 32, 10
    ):
        assert (mpatch[vh:, :] == IGNORE_INDEX).all() and (mpatch[:, vw:] == IGNORE_INDEX).all()
        assert (patch[vh:, :] == 0).all()
        out_img[y : y + vh, x : x + vw] = patch[:vh, :vw]
        out_mask[y : y + vh, x : x + vw] = mpatch[:vh, :vw]
    np.testing.assert_array_equal(out_img, image)
    np.testing.assert_array_equal(out_mask, mask)


def make_folder(tmp_path, sizes, mask_mode="L", values=(0, 1)):
    images, masks = tmp_path / "my images", tmp_path / "my masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f"img {i}.png")
        m = rng.choice(values, size=(h, w)).astype(np.uint8)
        if mask_mode == "RGB":
            Image.fromarray(np.stack([m * 100, m * 50, m], -1).astype(np.uint8)).save(masks / f"img {i}.png")
        else:
            Image.fromarray(m).save(masks / f"img {i}.png")
    return images, masks


def test_tile_id_masks_and_split_by_source(tmp_path):
    images, masks = make_folder(tmp_path, [(40, 50), (33, 33), (64, 20), (30, 70), (48, 48)])
    out = tmp_path / "t.h5"
    counts = tile_folder(images, masks, out, size=32, overlap=8, val_fraction=0.4, seed=0)
    info = read_info(out)
    assert counts == info.split_sizes | {"test": 0}
    with h5py.File(out) as f:
        for split in ("train", "val"):
            for src, (y, x), (vh, vw) in zip(f[f"{split}/source"], f[f"{split}/offsets"], f[f"{split}/valid"]):
                assert info.source_split[src] == split
                h, w = info.source_shapes[src]
                assert vh == min(32, h - y) and vw == min(32, w - x)
    assert info.source_split.count("val") == 2


def test_palette_maps_colours_and_ignore(tmp_path):
    pal_file = tmp_path / "p.yaml"
    pal_file.write_text('classes: [bg, fg]\ncolors:\n  "0,0,0": bg\n  "100,50,1": fg\n  "200,100,2": ignore\n')
    images, masks = make_folder(tmp_path, [(40, 40)], mask_mode="RGB", values=(0, 1, 2))
    out = tmp_path / "p.h5"
    tile_folder(images, masks, out, size=40, overlap=0, palette=pal_file, val_fraction=0)
    src = np.asarray(Image.open(masks / "img 0.png").convert("RGB"))
    expected = np.where(src[..., 2] == 2, IGNORE_INDEX, src[..., 2])
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["train/masks"][0], expected)


@pytest.mark.parametrize(
    "palette_text, message",
    [
        ('classes: [bg, fg]\ncolors:\n  "0,0,0": bg\n', "mask colour (100, 50, 1) at"),
        ('classes: [bg, fg]\ncolors:\n  "0,0": bg\n', "key 'colors.0,0': colour must be written 'r,g,b'"),
        ('classes: [bg, fg]\ncolors:\n  "0,0,0": sky\n', "class 'sky' is not in classes"),
        ("classes: [bg]\ncolours: {}\n", "unknown key"),
    ],
)
def test_bad_palette_or_colour(tmp_path, palette_text, message):
    pal_file = tmp_path / "p.yaml"
    pal_file.write_text(palette_text)
    images, masks = make_folder(tmp_path, [(20, 20)], mask_mode="RGB")
    out = tmp_path / "o.h5"
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tile_folder(images, masks, out, size=16, overlap=0, palette=pal_file)
    assert not out.exists()


def test_palette_default_class(tmp_path):
    pal_file = tmp_path / "p.yaml"
    pal_file.write_text('classes: [bg, fg]\ncolors:\n  "100,50,1": fg\ndefault: bg\n')
    images, masks = make_folder(tmp_path, [(20, 20)], mask_mode="RGB")
    tile_folder(images, masks, tmp_path / "o.h5", size=20, overlap=0, palette=pal_file, val_fraction=0)


def test_class_id_beyond_count(tmp_path):
    images, masks = make_folder(tmp_path, [(20, 20)], values=(0, 1, 4))
    with pytest.raises(UserError, match="class id 4 is beyond the 2 classes"):
        tile_folder(images, masks, tmp_path / "o.h5", size=16, overlap=0)


def test_size_mismatch(tmp_path):
    images, masks = make_folder(tmp_path, [(20, 20)])
    Image.fromarray(np.zeros((21, 20), np.uint8)).save(masks / "img 0.png")
    with pytest.raises(UserError, match="is 20x20 but its mask .* is 20x21"):
        tile_folder(images, masks, tmp_path / "o.h5", size=16, overlap=0)


def test_empty_folder_and_missing_mask(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files"):
        tile_folder(tmp_path / "empty", tmp_path / "empty", tmp_path / "o.h5")
    images, masks = make_folder(tmp_path, [(20, 20), (20, 20)])
    (masks / "img 1.png").unlink()
    with pytest.raises(UserError, match="no mask for this image"):
        tile_folder(images, masks, tmp_path / "o.h5", size=16, overlap=0)


def test_images_and_masks_folders_under_one_root(tmp_path):
    """The Dubai layout: <root>/Tile N/images/X.jpg and <root>/Tile N/masks/X.png, one root for both."""
    rng = np.random.default_rng(0)
    for tile in ("Tile 1", "Tile 2"):
        (tmp_path / "set" / tile / "images").mkdir(parents=True)
        (tmp_path / "set" / tile / "masks").mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(
            tmp_path / "set" / tile / "images" / "part_1.jpg"
        )
        Image.fromarray(rng.integers(0, 2, (20, 20), dtype=np.uint8)).save(
            tmp_path / "set" / tile / "masks" / "part_1.png"
        )
    out = tmp_path / "o.h5"
    counts = tile_folder(tmp_path / "set", tmp_path / "set", out, size=20, overlap=0, val_fraction=0)
    assert counts["train"] == 2
    assert sorted(read_info(out).sources) == ["Tile 1/images/part_1.jpg", "Tile 2/images/part_1.jpg"]


def test_cli_tile_bad_input_keeps_old_output(tmp_path):
    images, masks = make_folder(tmp_path, [(20, 20)], values=(0, 5))
    out = tmp_path / "o.h5"
    out.write_bytes(b"previous good file")
    proc = run_cli(
        "data",
        "tile",
        "--images",
        str(images),
        "--masks",
        str(masks),
        "--out",
        str(out),
        "--size",
        "16",
        "--overlap",
        "4",
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.startswith("hpcnas: error: ")
        and "class id 5" in proc.stderr
        and len(proc.stderr.strip().splitlines()) == 1
    )
    assert out.read_bytes() == b"previous good file"


@pytest.mark.skipif(not DUBAI.exists(), reason="../shared/data/dubai_aerial not beside the repository")
def test_real_dubai_building_target(tmp_path):
    """Tile three real images (folder names with spaces) with the binary building palette."""
    out = tmp_path / "dubai.h5"
    proc = run_cli(
        "data",
        "tile",
        "--images",
        str(DUBAI / "Tile 2" / "images"),
        "--masks",
        str(DUBAI / "Tile 2" / "masks"),
        "--out",
        str(out),
        "--palette",
        str(ROOT / "configs/palettes/dubai_building.yaml"),
        "--limit",
        "3",
        "--val-fraction",
        "0.34",
        "--size",
        "256",
        "--overlap",
        "90",
    )
    assert proc.returncode == 0, proc.stderr
    info = read_info(out)
    assert info.class_names == ["background", "building"]
    assert info.source_split.count("val") == 1 and len(info.sources) == 3
    # the stored building pixels equal a direct count on the source masks (train images; no double counting of
    # overlaps is not
    # the goal: patches overlap, so count through the patches' valid areas instead)
    with h5py.File(out) as f:
        masks, valid = f["train/masks"][...], f["train/valid"][...]
    stored = sum(int((m[:vh, :vw] == 1).sum()) for m, (vh, vw) in zip(masks, valid))
    assert stored == info.class_pixels[1] > 0
    # every building pixel of a train source image is inside some patch
    src_index = [i for i, s in enumerate(info.source_split) if s == "train"][0]
    rgb = np.asarray(
        Image.open(DUBAI / "Tile 2" / "masks" / (info.sources[src_index].rsplit(".", 1)[0] + ".png")).convert("RGB")
    )
    assert (rgb == (60, 16, 152)).all(-1).sum() > 0


def test_stratified_splits_spread_sources_with_and_without_objects():
    from hpcnas.data.tile import assign_splits_stratified

    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0]
    for seed in range(5):
        splits = assign_splits_stratified(scores, 0.2, 0.2, seed)
        assert (splits.count("train"), splits.count("val"), splits.count("test")) == (6, 2, 2)
        for name in ("val", "test"):  # one source with objects and one without in each
            picked = [s for s, split in zip(scores, splits) if split == name]
            assert sum(s > 0 for s in picked) == 1, (seed, splits)


def test_tile_scale_and_stratify(tmp_path):
    images, masks = make_folder(tmp_path, [(64, 64)] * 6)
    for i in range(3):  # three sources without foreground
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(masks / f"img {i}.png")
    out = tmp_path / "t.h5"
    counts = tile_folder(
        images, masks, out, size=16, overlap=0, val_fraction=0.34, test_fraction=0.34, scale=0.5, stratify=True
    )
    assert counts == {"train": 8, "val": 8, "test": 8}  # 64 px at half scale: 2 x 2 tiles of 16 px per source
    with h5py.File(out) as f:
        for split in ("val", "test"):
            fg = [bool((f[split]["masks"][f[split]["source"][:] == s] == 1).any()) for s in set(f[split]["source"][:])]
            assert sorted(fg) == [False, True]
    res = run_cli(
        "data", "tile", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "x.h5"), "--scale", "0"
    )
    assert res.returncode == 2 and "--scale" in res.stderr and not (tmp_path / "x.h5").exists()
    res = run_cli(
        "data", "tile", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "x.h5"), "--limit", "0"
    )
    assert res.returncode == 2 and "--limit: must be at least 1" in res.stderr and not (tmp_path / "x.h5").exists()


def test_nan_pixels_of_a_float_raster_are_nodata_and_an_all_nan_train_split_is_refused(tmp_path):
    from tests.geodata import write_tif

    rng = np.random.default_rng(5)
    (tmp_path / "im").mkdir()
    (tmp_path / "ma").mkdir()
    image = rng.normal(100.0, 10.0, (3, 40, 40)).astype(np.float32)
    image[:, :10, :] = np.nan  # a gap across the top rows, in every band
    image[1, 20, 20] = np.nan  # one band missing at one pixel
    write_tif(tmp_path / "im" / "a.tif", image)
    write_tif(tmp_path / "ma" / "a.tif", (rng.random((1, 40, 40)) > 0.8).astype(np.uint8))
    args = ["data", "tile", "--images", str(tmp_path / "im"), "--masks", str(tmp_path / "ma"), "--size", "32",
            "--overlap", "8", "--val-fraction", "0"]  # fmt: skip
    proc = run_cli(*args, "--out", str(tmp_path / "o.h5"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = read_info(tmp_path / "o.h5")
    offset = info.data_spec()["normalization"]["offset"]
    assert np.all(np.isfinite(offset)) and np.allclose(offset, 100.0, atol=2.0)  # from the valid pixels only
    with h5py.File(tmp_path / "o.h5") as f:
        images, masks = f["train"]["images"][:], f["train"]["masks"][:]
    assert not np.isnan(images).any()
    assert (masks[images.sum(axis=-1) == 0] == IGNORE_INDEX).all()  # NaN pixels are stored as 0, ignored
    write_tif(tmp_path / "im" / "a.tif", np.full((3, 40, 40), np.nan, np.float32))
    proc = run_cli(*args, "--out", str(tmp_path / "nan.h5"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no valid pixel" in proc.stderr, proc.stderr
    assert not (tmp_path / "nan.h5").exists()
