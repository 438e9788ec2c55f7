"""Cloud masks of one scene ({scene} in [imagery].cloud_mask_<date>): the mosaic fills a scene's
clouds from the next scene, where a mask of the whole date loses them. And what a mask value
means: classes (cloud_mask_values) or QA bits (cloud_mask_bits)."""
import json
import logging

import numpy as np
import pytest
from affine import Affine
from rasterio.windows import Window

from tests.test_tiles import write_raster
from tests.test_tiles_inputs import KW, S2_BANDS, s2_scene
from pipeline.config import load_config
from tiles.errors import ConfigError, InputFileError
from tiles.grid import Grid
from tiles.imagery import DateImagery, open_config_date, open_date
from tiles.reader import read_clear, read_pair
from tiles.sample import sample_pair

T = Affine(2, 0, 600000, 0, -2, 2400000)
GRID = Grid("EPSG:4545", 600000.0, 2400000.0, 2.0, 20, 20)
ALL = Window(0, 0, 20, 20)


def two_scenes(root):
    """Scenes a1 (value 100) and a2 (200) over the same 20 x 20 px; a1 clouded in rows 2..7,
    columns 4..9, a2 in rows 4..7, columns 8..13 (the two clouds meet in rows 4..7, columns
    8..9) and in rows 14..17. Edges on even pixels: every-2nd-pixel reads see the same clouds."""
    write_raster(root / "img" / "a1_MS.tif", np.full((2, 20, 20), 100, "uint16"), "EPSG:4545", T)
    write_raster(root / "img" / "a2_MS.tif", np.full((2, 20, 20), 200, "uint16"), "EPSG:4545", T)
    c1 = np.zeros((20, 20), "uint8")
    c1[2:8, 4:10] = 1
    c2 = np.zeros((20, 20), "uint8")
    c2[4:8, 8:14] = 1
    c2[14:18] = 1
    write_raster(root / "img" / "a1_cloud.tif", c1, "EPSG:4545", T, nodata=255)
    write_raster(root / "img" / "a2_cloud.tif", c2, "EPSG:4545", T, nodata=255)
    return c1.astype(bool), c2.astype(bool)


def open_after(root, pattern, masks, **kw):
    return open_date("after", str(root / pattern), ["red", "nir"], cloud_pattern=str(root / masks),
                     date_override="2026-08-01", **KW, **kw)


def test_a_scene_cloud_is_filled_by_the_next_scene(tmp_path):
    c1, c2 = two_scenes(tmp_path)
    date = open_after(tmp_path, "img/{scene}_MS.tif", "img/{scene}_cloud.tif")
    assert date.cloud_masks == []
    assert {s.rsplit("/", 1)[1]: [m.rsplit("/", 1)[1] for m in ms]
            for s, ms in date.scene_masks.items()} == {"a1_MS.tif": ["a1_cloud.tif"],
                                                       "a2_MS.tif": ["a2_cloud.tif"]}
    assert sorted(p.rsplit("/", 1)[1] for p in date.all_files()) == \
        ["a1_MS.tif", "a1_cloud.tif", "a2_MS.tif", "a2_cloud.tif"]
    data, valid = read_clear(date, GRID, ALL)
    # by hand: a1 where it is clear, a2 under a1's cloud where a2 is clear, nothing where both are
    np.testing.assert_array_equal(valid, ~(c1 & c2))
    expected = np.where(~c1, 100, np.where(~c2, 200, 0))
    np.testing.assert_array_equal(data[0], expected)
    np.testing.assert_array_equal(data[1], expected)
    assert valid.sum() == 400 - 4 * 2


def test_date_masks_keep_the_old_meaning(tmp_path):
    """Without {scene} the masks cover the whole date after the mosaic: a1's cloud is lost."""
    c1, c2 = two_scenes(tmp_path)
    date = open_after(tmp_path, "img/*_MS.tif", "img/*_cloud.tif")
    assert date.scene_masks == {} and len(date.cloud_masks) == 2
    data, valid = read_clear(date, GRID, ALL)
    np.testing.assert_array_equal(valid, ~(c1 | c2))
    assert (data[0][valid] == 100).all()


def test_scene_names_default_to_the_file_name(tmp_path):
    c1, c2 = two_scenes(tmp_path)
    for k, c in ((1, c1), (2, c2)):
        write_raster(tmp_path / "masks" / f"a{k}_MS.cloud.tif", c.astype("uint8"), "EPSG:4545", T,
                     nodata=255)
    date = open_after(tmp_path, "img/*_MS.tif", "masks/{scene}.cloud.tif")
    assert [len(date.scene_masks[s]) for s in date.files] == [1, 1]
    _, valid = read_clear(date, GRID, ALL)
    np.testing.assert_array_equal(valid, ~(c1 & c2))


def test_the_pair_and_the_plan_read_scene_masks(tmp_path):
    """read_pair, the scene-wide sample and a date restored from the plan's JSON agree."""
    c1, c2 = two_scenes(tmp_path)
    write_raster(tmp_path / "b.tif", np.full((2, 20, 20), 150, "uint16"), "EPSG:4545", T)
    before = open_date("before", str(tmp_path / "b.tif"), ["red", "nir"],
                       date_override="2026-05-01", **KW)
    after = open_after(tmp_path, "img/{scene}_MS.tif", "img/{scene}_cloud.tif")
    after = DateImagery.from_dict(json.loads(json.dumps(after.to_dict())))
    _, a, valid = read_pair(before, after, GRID, ALL)
    np.testing.assert_array_equal(valid, ~(c1 & c2))
    assert (a[0][c1 & ~c2] == 200).all()
    sample = sample_pair(before, after, GRID, 2)
    np.testing.assert_array_equal(sample.valid, ~(c1 & c2)[::2, ::2])
    # a footprint outlines where the scene has data, clouds included
    assert all(fp != "POLYGON EMPTY" for fp in sample.footprints["after"].values())


def test_band_files_name_scenes_by_their_folder(tmp_path):
    root = tmp_path / "s2" / "2026Q3"
    s2_scene(root, "T49QEF", 500000.0, 0.0)
    s2_scene(root, "T49QFF", 501500.0, 500.0)
    mask = np.zeros((200, 200), "uint8")
    mask[:10] = 1
    for tile in ("T49QEF", "T49QFF"):
        write_raster(tmp_path / "masks" / f"{tile}_cloud.tif", mask, "EPSG:32649",
                     Affine(10, 0, 500000.0 if tile == "T49QEF" else 501500.0, 0, -10, 2400000.0))
    band_files = {r: f"R{res}m/*_{name}_{res}m" for r, (name, res) in S2_BANDS.items()}
    kw = dict(band_files=band_files, date_override="2026-08-01",
              cloud_pattern=str(tmp_path / "masks" / "{scene}_cloud.tif"), **KW)
    pattern = str(tmp_path / "s2" / "{quarter}" / "{scene}.SAFE" / "IMG_DATA" / "{band}.tif")
    date = open_date("after", pattern, list(S2_BANDS), **kw)
    assert [m.rsplit("/", 1)[1] for s in date.files for m in date.scene_masks[s]] == \
        ["T49QEF_cloud.tif", "T49QFF_cloud.tif"]
    with pytest.raises(ConfigError, match=r"cloud_mask_after uses \{scene\}, but \[imagery\].after "
                                          r"does not say where a scene's name is"):
        open_date("after", pattern.replace("{scene}", "*"), list(S2_BANDS), **kw)


def test_stac_items_are_named_by_their_id(tmp_path):
    stac = tmp_path / "stac"
    write_raster(stac / "one.tif", np.full((2, 20, 20), 100, "uint16"), "EPSG:4545", T)
    write_raster(stac / "masks" / "item-A.tif", np.ones((20, 20), "uint8"), "EPSG:4545", T)
    assets = {"data": {"href": "one.tif", "roles": ["data"],
                       "bands": [{"name": r, "eo:common_name": r} for r in ("red", "nir")]}}
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "stac_version": "1.1.0", "id": "item-A", "bbox": [0, 0, 1, 1],
         "geometry": {"type": "Point", "coordinates": [0, 0]}, "links": [],
         "properties": {"datetime": "2026-08-01T00:00:00Z"}, "assets": assets}]}
    (stac / "items.json").write_text(json.dumps(doc), encoding="utf-8")
    date = open_after(stac, "items.json", "masks/{scene}.tif")
    assert list(date.scene_masks.values()) == [[str(stac / "masks" / "item-A.tif")]]
    _, valid = read_clear(date, GRID, ALL)
    assert not valid.any()


def test_masks_that_name_no_scene_or_twice_the_same_are_refused(tmp_path, caplog):
    two_scenes(tmp_path)
    write_raster(tmp_path / "img" / "a3_cloud.tif", np.zeros((20, 20), "uint8"), "EPSG:4545", T)
    with pytest.raises(InputFileError, match=r"a3_cloud.tif: \[imagery\].cloud_mask_after names "
                                             r"scene 'a3', but the after date has no scene of that "
                                             r"name \(its scenes: a1, a2\)"):
        open_after(tmp_path, "img/{scene}_MS.tif", "img/{scene}_cloud.tif")
    # the same file name in two folders: two scenes named alike
    write_raster(tmp_path / "x" / "s.tif", np.ones((2, 20, 20), "uint16"), "EPSG:4545", T)
    write_raster(tmp_path / "y" / "s.tif", np.ones((2, 20, 20), "uint16"), "EPSG:4545", T)
    write_raster(tmp_path / "m" / "s_cloud.tif", np.zeros((20, 20), "uint8"), "EPSG:4545", T)
    with pytest.raises(InputFileError, match=r"two scenes of the after date are named 's'"):
        open_after(tmp_path, "*/s.tif", "m/{scene}_cloud.tif")
    with pytest.raises(ConfigError, match=r"\{scene\} may appear once"):
        open_after(tmp_path, "img/{scene}_MS.tif", "img/{scene}/{scene}_cloud.tif")
    # a scene without a mask is used unmasked, and the log says so
    (tmp_path / "img" / "a3_cloud.tif").unlink()
    (tmp_path / "img" / "a2_cloud.tif").unlink()
    with caplog.at_level(logging.WARNING, logger="tianyan"):
        date = open_after(tmp_path, "img/{scene}_MS.tif", "img/{scene}_cloud.tif")
    assert list(date.scene_masks) == [date.files[0]]
    assert "no cloud mask of the after date names scene 'a2'" in caplog.text


# ---------------------------------------------------------------- what a mask value means
def test_class_rasters_and_qa_bits(tmp_path):
    """Sentinel-2 SCL classes by value, Landsat QA_PIXEL by bit; 0 / 1 are the masks' nodata."""
    write_raster(tmp_path / "a.tif", np.full((2, 20, 20), 100, "uint16"), "EPSG:4545", T)
    scl = np.full((20, 20), 4, "uint8")            # 4 vegetation
    scl[0, :4] = [3, 8, 9, 10]                     # shadow, cloud medium / high, cirrus
    scl[1, :3] = [0, 5, 6]                         # nodata, bare soil, water
    write_raster(tmp_path / "scl" / "a_SCL.tif", scl, "EPSG:4545", T, nodata=0)
    qa = np.full((20, 20), 21824, "uint16")        # 0x5540: clear land (bits 6, 8, 10, 12, 14)
    qa[0, :5] = [2, 4, 8, 16, 1]                   # bit 1 dilated, 2 cirrus, 3 cloud, 4 shadow, fill
    write_raster(tmp_path / "qa" / "a_QA.tif", qa, "EPSG:4545", T, nodata=1)
    imagery = {"after": str(tmp_path / "a.tif"), "bands": ["red", "nir"], "after_date": "2026-08-01"}

    def clouds(masks, **rule):
        date = open_config_date("after", dict(imagery, cloud_mask_after=str(masks), **rule), **KW)
        return ~read_clear(date, GRID, ALL)[1]

    want = np.zeros((20, 20), bool)
    want[0, :4] = [True, True, True, False]
    assert (clouds(tmp_path / "scl" / "*.tif", cloud_mask_values=[3, 8, 9]) == want).all()
    want[0, 3] = True
    assert (clouds(tmp_path / "scl" / "*.tif", cloud_mask_values=[3, 8, 9, 10]) == want).all()
    # without a rule every class above 0 is 'cloud': the whole scene but the nodata pixel
    assert clouds(tmp_path / "scl" / "*.tif").sum() == 400 - 1
    want = np.zeros((20, 20), bool)
    want[0, :4] = [True, False, True, True]
    assert (clouds(tmp_path / "qa" / "*.tif", cloud_mask_bits=[1, 3, 4]) == want).all()
    want[0, 1] = True
    assert (clouds(tmp_path / "qa" / "{scene}_QA.tif", cloud_mask_bits=[1, 2, 3, 4]) == want).all()


@pytest.mark.parametrize("rule, message", [
    ('cloud_mask_values = ["8"]', r"cloud_mask_values has '8': give mask values \(integers >= 0\)"),
    ("cloud_mask_bits = [40]", r"cloud_mask_bits has 40: give bit numbers 0..31"),
    ("cloud_mask_values = [8]\ncloud_mask_bits = [3]", "are both set: give one"),
])
def test_bad_cloud_rules_are_named(tmp_path, rule, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[imagery]\nbefore = "b.tif"\nafter = "a.tif"\n{rule}\n\n'
                   f'[layers.counties]\npath = "c.gpkg"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config(cfg)
