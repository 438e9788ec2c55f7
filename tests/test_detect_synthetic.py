"""End-to-end detector tests on a small synthetic pair with known truth.

Spectra are typical surface reflectances (blue, green, red, NIR): green crop,
harvested stubble, flooded paddy, bare soil, concrete, water, solar panels. The
after date carries a per-band gain/offset and noise; seasonal crop change covers
whole parcels; the true changes are rectangles (truth known exactly).
"""
from __future__ import annotations

import numpy as np
import pytest
import shapely
from affine import Affine

from detect.classify import classify
from detect.detector import HALO_PX, DetectParams, detect_tile, fit_model
from detect.merge import apply_mmu, merge_seams
from detect.objects import tile_objects

BANDS = ("blue", "green", "red", "nir")
SPECTRA = {
    "crop": (0.04, 0.08, 0.05, 0.40),
    "crop2": (0.05, 0.09, 0.06, 0.33),
    "stubble": (0.08, 0.11, 0.14, 0.26),
    "flooded": (0.07, 0.09, 0.07, 0.06),
    "soil": (0.12, 0.16, 0.21, 0.25),
    "forest": (0.03, 0.06, 0.04, 0.30),
    "concrete": (0.25, 0.27, 0.28, 0.30),
    "roof": (0.18, 0.20, 0.24, 0.27),
    "water": (0.06, 0.07, 0.05, 0.02),
    "panel": (0.08, 0.07, 0.06, 0.07),
    "village": (0.14, 0.15, 0.17, 0.24),
}
TRANSFORM = Affine(2.0, 0.0, 500000.0, 0.0, -2.0, 3000000.0)
CRS = "EPSG:4545"


def make_pair(seed=0, h=192, w=240, gain=(1.08, 1.05, 1.1, 0.95), offset=(0.01, 0.008, 0.005, 0.02),
              noise=0.004):
    """A synthetic before/after pair (uint16 x 10000 DN as float32), valid mask and truth.

    Returns (before, after, valid, truth) where truth is a list of
    (row0, row1, col0, col1, tblx) rectangles of land-use change.
    """
    rng = np.random.default_rng(seed)
    before = np.zeros((4, h, w))
    after_cls = np.empty((h, w), dtype=object)
    before_cls = np.empty((h, w), dtype=object)
    # parcels of 32 x 40 px
    kinds = ["crop", "crop", "crop", "crop2", "forest", "soil", "village", "crop", "water"]
    season = {"crop": ["crop", "stubble", "flooded", "crop"], "crop2": ["crop", "crop2"]}
    for r0 in range(0, h, 32):
        for c0 in range(0, w, 40):
            k = kinds[rng.integers(len(kinds))]
            before_cls[r0:r0 + 32, c0:c0 + 40] = k
            a = season.get(k, [k])[rng.integers(len(season.get(k, [k])))]
            after_cls[r0:r0 + 32, c0:c0 + 40] = a
    truth = []
    changes = [(20, 34, 10, 24, "crop", "roof", "20"), (60, 72, 100, 140, "soil", "concrete", "YH"),
               (110, 134, 30, 50, "crop", "water", "KT"), (150, 170, 150, 175, "crop", "soil", "TD"),
               (40, 43, 160, 230, "forest", "concrete", "DL"),
               (120, 140, 190, 220, "soil", "panel", "GF")]
    for r0, r1, c0, c1, was, kind, code in changes:
        before_cls[r0:r1, c0:c1] = was
        after_cls[r0:r1, c0:c1] = kind
        truth.append((r0, r1, c0, c1, code))
    after = np.zeros((4, h, w))
    for name, spec in SPECTRA.items():
        for cls, arr in ((before_cls, before), (after_cls, after)):
            m = cls == name
            for b in range(4):
                arr[b][m] = spec[b]
    # per-parcel brightness variation, shared by both dates; pixel noise per date
    tex = 1.0 + 0.08 * rng.standard_normal((h // 8 + 1, w // 8 + 1)).repeat(8, 0).repeat(8, 1)[:h, :w]
    before = before * tex + noise * rng.standard_normal(before.shape)
    after = after * tex + noise * rng.standard_normal(after.shape)
    g = np.asarray(gain)[:, None, None]
    o = np.asarray(offset)[:, None, None]
    after = after * g + o
    to_dn = lambda a: np.clip(np.round(a * 10000), 1, 65535).astype(np.float32)
    valid = np.ones((h, w), dtype=bool)
    return to_dn(before), to_dn(after), valid, truth


def run_tiled(before, after, valid, model, params, tile_rows, tile_cols):
    """Run detect_tile + tile_objects over a tile grid with HALO_PX halos; return the parts."""
    import pandas as pd

    h, w = valid.shape
    parts = []
    for r0, r1 in tile_rows:
        for c0, c1 in tile_cols:
            hr0, hr1 = max(r0 - HALO_PX, 0), min(r1 + HALO_PX, h)
            hc0, hc1 = max(c0 - HALO_PX, 0), min(c1 + HALO_PX, w)
            sl = (slice(hr0, hr1), slice(hc0, hc1))
            layers = detect_tile(before[:, sl[0], sl[1]], after[:, sl[0], sl[1]], valid[sl],
                                 BANDS, model, params)
            core = (slice(r0 - hr0, r1 - hr0), slice(c0 - hc0, c1 - hc0))
            tr = TRANSFORM * Affine.translation(hc0, hr0)
            parts.append(tile_objects(layers, valid[sl], core, tr, CRS))
    import geopandas as gpd

    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=CRS)


@pytest.fixture(scope="module")
def scene():
    before, after, valid, truth = make_pair()
    params = DetectParams()
    model = fit_model(before[:, ::2, ::2], after[:, ::2, ::2], valid[::2, ::2], BANDS, params)
    return before, after, valid, truth, params, model


def truth_polygon(r0, r1, c0, c1):
    x0, y0 = TRANSFORM * (c0, r0)
    x1, y1 = TRANSFORM * (c1, r1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def test_model_recovers_radiometric_gain(scene):
    _, _, _, _, _, model = scene
    # before = gain * after + offset inverts the simulated after = g * before + o
    g_true = 1.0 / np.array([1.08, 1.05, 1.1, 0.95])
    o_true = -np.array([0.01, 0.008, 0.005, 0.02]) * 10000 * g_true
    np.testing.assert_allclose(model.gain, g_true, rtol=0.02)
    np.testing.assert_allclose(model.offset, o_true, atol=60)
    assert model.converged


def test_finds_true_changes_and_ignores_seasonal(scene):
    before, after, valid, truth, params, model = scene
    h, w = valid.shape
    parts = run_tiled(before, after, valid, model, params, [(0, h)], [(0, w)])
    objs = classify(apply_mmu(merge_seams(parts), params.min_area_m2))
    truth_polys = [truth_polygon(*t[:4]) for t in truth]
    # each true change is found with IoU >= 0.7
    for poly, t in zip(truth_polys, truth):
        inter = shapely.area(shapely.intersection(objs.geometry.values, poly))
        k = int(np.argmax(inter))
        iou = inter[k] / shapely.area(shapely.union(objs.geometry.values[k], poly))
        assert iou >= 0.7, (t, iou)
    # no object outside the truth rectangles (seasonal parcels suppressed)
    union_truth = shapely.union_all(truth_polys).buffer(4.0)
    outside = [g for g in objs.geometry.values if not union_truth.contains(g)]
    assert not outside, [g.bounds for g in outside]


def test_types_of_true_changes(scene):
    before, after, valid, truth, params, model = scene
    h, w = valid.shape
    parts = run_tiled(before, after, valid, model, params, [(0, h)], [(0, w)])
    objs = classify(apply_mmu(merge_seams(parts), params.min_area_m2))
    for t in truth:
        poly = truth_polygon(*t[:4])
        inter = shapely.area(shapely.intersection(objs.geometry.values, poly))
        assert objs["TBLX"].iloc[int(np.argmax(inter))] == t[4], t


def test_tiling_does_not_change_objects(scene):
    """One tile vs six tiles whose edges cut objects, incl. a four-tile corner inside one."""
    before, after, valid, truth, params, model = scene
    h, w = valid.shape
    whole = merge_seams(run_tiled(before, after, valid, model, params, [(0, h)], [(0, w)]))
    parts = run_tiled(before, after, valid, model, params, [(0, 130), (130, h)],
                      [(0, 120), (120, 200), (200, w)])
    assert len(parts) > len(whole)  # the tile edges really cut objects
    tiled = merge_seams(parts)
    assert len(tiled) == len(whole)
    for g1, g2 in zip(whole.geometry.values, tiled.geometry.values):
        assert g1.geom_type == g2.geom_type == "Polygon"
        assert shapely.area(shapely.symmetric_difference(g1, g2)) == 0.0
    np.testing.assert_array_equal(whole["NPIX"], tiled["NPIX"])
    for col in ("S_P", "S_DNDVI", "S_DBRI", "N_STRONG"):
        np.testing.assert_allclose(whole[col], tiled[col], rtol=1e-9)
    # polygon area equals changed-pixel area
    np.testing.assert_allclose(shapely.area(tiled.geometry.values), tiled["NPIX"] * 4.0)


def test_cloud_mask_and_nodata_never_change(scene):
    before, after, valid, truth, params, model = scene
    v = valid.copy()
    v[100:150, 20:40] = False  # a cloud over the left half of the KT change (cols 30-50)
    a = after.copy()
    a[:, 100:150, 20:40] = 0.0  # arbitrary values under the mask
    layers = detect_tile(before, a, v, BANDS, model, params)
    assert not layers.changed[~v].any()
    assert np.isnan(layers.probability[~v]).all()
    r0, r1, c0, c1, code = truth[2]
    assert code == "KT"
    # the visible part is found whole: the masked pixels never erode it
    assert layers.changed[r0:r1, 40:c1].all()
    assert layers.changed[truth[0][0]:truth[0][1], truth[0][2]:truth[0][3]].all()
