"""The demo's third date: the same season a year earlier, as a reference against phenology.

One 600 x 600 px demo is generated per module. Expectations come from the written files
(rasterio, shapely), hand-made dates and the generator's named constants (probabilities), never
from the generator's bookkeeping of the images. Radiometry differs between the dates (gain,
haze offset drifting across the scene), so spectra are compared after a per-band linear fit
with a linear ramp across the scene, or as contrasts against a site's surroundings.
"""
from __future__ import annotations

import datetime as dt
import math
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.features import rasterize

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from pipeline.demo import make_demo
from pipeline.demo.scene import quarter_dates, reference_dates
from pipeline.demo.spectra import REFERENCE_SAME_STAGE, STATES

SIZE, TILE, SEED = 600, 256, 20260930
CLASS_OF = {"0101": "paddy", "0102": "irrigated", "0103": "dry", "0103K": "dry"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("reference"), width=SIZE, height=SIZE, tile_size=TILE,
                     seed=SEED)


@pytest.fixture(scope="module")
def data(demo):
    """Before, after, reference (float DN), the two cloud masks, transform, truth and seasonal."""
    read = {}
    for key in ("before", "after", "reference", "cloud_after", "cloud_reference"):
        with rasterio.open(demo[key]) as src:
            read[key] = src.read().astype(np.float64)
            transform = src.transform
    read["cloud_after"], read["cloud_reference"] = read["cloud_after"][0], read["cloud_reference"][0]
    read["transform"] = transform
    read["truth"] = gpd.read_file(demo["truth"], layer="truth")
    read["seasonal"] = gpd.read_file(demo["truth"], layer="seasonal")
    return read


def _burn(geoms, transform, shape=(SIZE, SIZE)):
    shapes = [(g, 1) for g in geoms if not g.is_empty]
    if not shapes:
        return np.zeros(shape, bool)
    return rasterize(shapes, out_shape=shape, transform=transform) > 0


# --- files and dates --------------------------------------------------------------------------

@pytest.mark.parametrize("quarter,ref_quarter,ref_date", [
    ("2026Q3", "2025Q3", dt.date(2025, 8, 17)),     # after 2026-08-23
    ("2027Q1", "2026Q1", dt.date(2026, 2, 17)),     # after 2027-02-23
    ("2025Q1", "2024Q1", dt.date(2024, 2, 17)),     # leap year a year earlier
    ("2026Q4", "2025Q4", dt.date(2025, 11, 17)),
])
def test_reference_date_is_the_same_season_a_year_earlier(quarter, ref_quarter, ref_date):
    q_ref, d_ref = reference_dates(quarter)
    assert (str(q_ref), d_ref) == (ref_quarter, ref_date)
    assert q_ref.first_day <= d_ref <= q_ref.last_day
    after = quarter_dates(quarter)[3]
    anniversary = after.replace(year=after.year - 1)
    assert 0 < (anniversary - d_ref).days <= 14          # a few days before, same season


def test_reference_files_share_the_grid_format_and_tags(demo):
    root = demo["config"].parent
    assert demo["reference"].relative_to(root).as_posix() == "imagery/2025Q3/GF2_20250817_MS.tif"
    assert demo["cloud_reference"].relative_to(root).as_posix() == "imagery/2025Q3/GF2_20250817_cloud.tif"
    with rasterio.open(demo["reference"]) as ref, rasterio.open(demo["after"]) as after, \
            rasterio.open(demo["cloud_reference"]) as mask:
        for src in (ref, mask):
            assert src.crs == after.crs and src.crs.to_epsg() == 4545
            assert src.transform == after.transform and src.shape == after.shape == (SIZE, SIZE)
            assert src.block_shapes == [(256, 256)] * src.count
            assert src.compression.name.lower() == "deflate"
            assert src.tags()["ACQUISITION_DATE"] == "2025-08-17"
            assert src.tags()["TIFFTAG_DATETIME"] == "2025:08:17 10:30:00"
        assert ref.count == 4 and set(ref.dtypes) == {"uint16"} and ref.nodata == 0
        assert ref.descriptions == after.descriptions == ("blue", "green", "red", "nir")
        tags, after_tags = ref.tags(), after.tags()
        assert {k: tags[k] for k in ("SATELLITE", "SENSOR", "REFLECTANCE_SCALE")} == \
            {k: after_tags[k] for k in ("SATELLITE", "SENSOR", "REFLECTANCE_SCALE")}
        assert abs(float(tags["SUN_ELEVATION"]) - float(after_tags["SUN_ELEVATION"])) < 5
        assert mask.dtypes == ("uint8",)
        assert set(np.unique(mask.read(1)).tolist()) == {0, 1}
        assert ref.read().min() >= 1, "the reference has no nodata edge"


def test_config_globs_find_the_reference(demo):
    cfg = tomllib.loads(demo["config"].read_text(encoding="utf-8"))["imagery"]
    root = demo["config"].parent
    for key, want in (("reference", "reference"), ("cloud_mask_reference", "cloud_reference")):
        assert "{last_year_quarter}" in cfg[key]
        assert sorted(root.glob(cfg[key].format(last_year_quarter="2025Q3"))) == [demo[want]]


def test_cloud_mask_covers_the_references_bright_cloud_pixels(data):
    ref, mask = data["reference"], data["cloud_reference"]
    bright = ref[:3].mean(axis=0) > 5500           # cloud tops: visible reflectance > ~0.5
    assert bright.sum() > 100
    assert (mask[bright] == 1).all()
    assert 0.02 < mask.mean() < 0.3
    # Its clouds are not the after date's.
    assert (mask != data["cloud_after"]).mean() > 0.05


def test_a_reference_of_two_scenes_with_their_own_clouds(demo, tmp_path):
    """``reference_scenes=2``: a second scene REVISIT_DAYS later of the same land and season,
    under its own clouds; the first scene is the one-scene demo's, byte for byte, and the
    configuration gives each scene its own mask ({scene})."""
    from pipeline.config import load_config
    from pipeline.demo.generate import REVISIT_DAYS
    from tiles.errors import ConfigError
    from tiles.imagery import open_config_date

    two = make_demo(tmp_path, width=SIZE, height=SIZE, tile_size=TILE, seed=SEED, reference_scenes=2)
    for key in ("reference", "cloud_reference", "before", "after"):
        assert two[key].read_bytes() == demo[key].read_bytes()
    day = dt.date(2025, 8, 17) + dt.timedelta(days=REVISIT_DAYS)
    assert two["reference_2"].name == f"GF2_{day:%Y%m%d}_MS.tif"
    assert two["cloud_reference_2"].name == f"GF2_{day:%Y%m%d}_cloud.tif"
    with rasterio.open(two["reference_2"]) as second, rasterio.open(demo["reference"]) as first, \
            rasterio.open(two["cloud_reference_2"]) as m2, rasterio.open(demo["cloud_reference"]) as m1:
        assert second.tags()["ACQUISITION_DATE"] == day.isoformat()
        assert second.transform == first.transform and second.shape == first.shape
        c1, c2 = m1.read(1) > 0, m2.read(1) > 0
        a, b = first.read().astype(np.float64), second.read().astype(np.float64)
    assert c1.any() and c2.any() and (c1 & c2).sum() < 0.5 * min(c1.sum(), c2.sum())
    clear = ~c1 & ~c2                      # the same land and season: NIR correlates closely
    assert np.corrcoef(a[3][clear], b[3][clear])[0, 1] > 0.9
    imagery = load_config(two["config"]).imagery
    ref = open_config_date("reference", imagery, quarter="2026Q3", prev_quarter="2026Q2")
    assert ref.cloud_masks == []
    assert {Path(s).name: [Path(m).name for m in ms] for s, ms in ref.scene_masks.items()} == {
        two["reference"].name: [two["cloud_reference"].name],
        two["reference_2"].name: [two["cloud_reference_2"].name]}
    with pytest.raises(ConfigError, match="reference_scenes=0"):
        make_demo(tmp_path / "none", width=SIZE, height=SIZE, reference_scenes=0)


# --- crop stages a year earlier ---------------------------------------------------------------

def test_same_stage_share_per_class_matches_the_constants(data):
    seasonal = data["seasonal"]
    assert set(seasonal.REFERENCE) <= set(STATES)
    cls = seasonal.DLBM.map(CLASS_OF)
    assert cls.notna().all()
    same = seasonal.REFERENCE == seasonal.AFTER
    for kind, p in REFERENCE_SAME_STAGE.items():
        n = int((cls == kind).sum())
        assert n >= 30, kind
        share = same[cls == kind].mean()
        tol = 3 * math.sqrt(p * (1 - p) / n) + 1 / n    # 3 binomial standard deviations
        assert abs(share - p) <= tol, (kind, share, p, n)
    assert (~same).sum() > 30, "a year earlier is not a copy of this year"


def _parcel_means(data):
    """Per seasonal parcel with > 30 clear interior pixels on both dates: same-stage flag,
    centroid (m), after and reference means (4 bands) and the standard error of their difference."""
    t = data["transform"]
    near = _burn([g.buffer(6.0) for g in data["truth"].geometry], t)
    clear = (data["cloud_after"] == 0) & (data["cloud_reference"] == 0) & ~near
    rows = []
    for _, p in data["seasonal"].iterrows():
        m = _burn([p.geometry.buffer(-4.0)], t) & clear
        n = int(m.sum())
        if n > 30:
            a, r = data["after"][:, m], data["reference"][:, m]
            c = p.geometry.centroid
            rows.append((p.AFTER == p.REFERENCE, p.AFTER, c.x, c.y, a.mean(1), r.mean(1),
                         np.sqrt(a.var(1) / n + r.var(1) / n)))
    same = np.array([r[0] for r in rows])
    state = np.array([r[1] for r in rows])
    xy = np.array([(r[2], r[3]) for r in rows])
    after, ref, se = (np.array([r[i] for r in rows]) for i in (4, 5, 6))
    return same, state, xy - xy.mean(0), after, ref, se


def _residuals(same, xy, after, ref):
    """Reference minus its per-band fit gain * after + offset + linear ramp, fitted on same-stage parcels."""
    res = np.empty_like(ref)
    for b in range(4):
        design = np.column_stack([after[:, b], np.ones(len(after)), xy])
        coef, *_ = np.linalg.lstsq(design[same], ref[same, b], rcond=None)
        res[:, b] = ref[:, b] - design @ coef
    return res


def test_same_stage_parcels_look_alike_but_were_redrawn(data):
    same, state, xy, after, ref, se = _parcel_means(data)
    assert same.sum() >= 40 and (~same).sum() >= 20
    res = _residuals(same, xy, after, ref)
    norm = np.linalg.norm(res, axis=1)
    # Close: the same stage a year earlier is far nearer this year's spectrum than another stage.
    assert np.median(norm[same]) < 0.35 * np.median(norm[~same])
    # Not identical: copied parameters would leave only the noise of the means (|z| ~ 1; a copy
    # measured 1.4 in NIR), redrawn cover, straw brightness and muddiness leave far more.
    z_nir = np.abs(res[same, 3]) / se[same, 3]
    assert np.median(z_nir) > 5
    # Within a stage, parcels' NIR a year earlier hardly follows this year's (a copy: r > 0.97).
    for s in ("green", "flooded"):
        sel = same & (state == s)
        if sel.sum() >= 8:
            assert np.corrcoef(after[sel, 3], ref[sel, 3])[0, 1] < 0.8, s


# --- true changes ----------------------------------------------------------------------------

def test_true_change_sites_show_their_before_appearance(data):
    """Each site's contrast against a ring around it (cancelling each date's gain and offset) is
    the before date's on the reference, not the after date's."""
    t = data["transform"]
    before, after, ref = data["before"], data["after"], data["reference"]
    ok = (before > 0).all(axis=0) & (data["cloud_reference"] == 0) & (data["cloud_after"] == 0)
    closer = []
    for g in data["truth"].geometry:
        site = _burn([g.buffer(-2.0)], t) & ok
        ring = _burn([g.buffer(12.0).difference(g.buffer(4.0))], t) & ok
        if site.sum() < 15 or ring.sum() < 30:
            continue
        contrast = [x[:, site].mean(1) - x[:, ring].mean(1) for x in (before, after, ref)]
        closer.append(np.linalg.norm(contrast[2] - contrast[0]) < np.linalg.norm(contrast[2] - contrast[1]))
    assert len(closer) >= 10
    assert np.mean(closer) >= 0.9
