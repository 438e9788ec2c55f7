"""Seam merge and minimum mapping unit on hand-made parts with known answers."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from detect.merge import apply_mmu, merge_seams
from detect.objects import ADDITIVE

CRS = "EPSG:4545"


def parts_frame(boxes, npix=None):
    n = len(boxes)
    cols = {c: np.arange(1, n + 1, dtype=float) for c in ADDITIVE}
    cols["NPIX"] = np.asarray(npix if npix is not None else [1] * n, dtype=np.int64)
    cols["PX_AREA"] = np.full(n, 4.0)
    geoms = [shapely.box(*b) for b in boxes]
    return gpd.GeoDataFrame(cols, geometry=gpd.GeoSeries(geoms, crs=CRS), crs=CRS)


def test_edge_sharing_parts_merge_and_sum():
    # two tiles split a 4 x 2 block at x = 4; a third part elsewhere
    parts = parts_frame([(0, 0, 4, 2), (4, 0, 8, 2), (20, 20, 22, 22)], npix=[2, 2, 1])
    out = merge_seams(parts)
    assert len(out) == 2
    big = out.loc[out["NPIX"] == 4].iloc[0]
    assert big.geometry.equals(shapely.box(0, 0, 8, 2))
    assert big["S_P"] == 1.0 + 2.0
    # order: centroid y descending
    assert out.geometry.iloc[0].centroid.y > out.geometry.iloc[1].centroid.y


def test_corner_touch_stays_separate():
    parts = parts_frame([(0, 0, 2, 2), (2, 2, 4, 4)])
    out = merge_seams(parts)
    assert len(out) == 2
    np.testing.assert_array_equal(sorted(out["S_P"]), [1.0, 2.0])


def test_four_tile_corner_merges_into_one():
    parts = parts_frame([(0, 0, 2, 2), (2, 0, 4, 2), (0, 2, 2, 4), (2, 2, 4, 4)])
    out = merge_seams(parts)
    assert len(out) == 1
    assert out.geometry.iloc[0].equals(shapely.box(0, 0, 4, 4))
    assert out["S_P"].iloc[0] == 1 + 2 + 3 + 4
    assert out["NPIX"].iloc[0] == 4


def test_tiny_float_differences_do_not_hide_a_seam():
    x = 500000.0 + 2044 * 0.3  # the same seam computed by two tile transforms
    x2 = x + 3e-9  # a few ulps apart, as floating-point transform arithmetic can give
    parts = parts_frame([(x - 3, 10, x, 13), (x2, 10, x2 + 3, 13)])
    assert len(merge_seams(parts)) == 1


def test_mmu_uses_pixel_area():
    parts = parts_frame([(0, 0, 2, 2), (10, 10, 20, 20)], npix=[49, 50])
    out = apply_mmu(parts, 200.0)  # 49 * 4 = 196 < 200 <= 50 * 4
    assert list(out["NPIX"]) == [50]
    assert len(apply_mmu(parts.iloc[:0], 200.0)) == 0


def test_mmu_outline_adds_half_a_pixel_along_the_edge():
    # squares of 6 x 6 and 7 x 7 pixels of 2 m: 144 and 196 m² of pixels, perimeters 48 and
    # 56 m; half a 2 m pixel (1 m) along the edge adds 48 and 56 m²: 192 and 252 m²
    parts = parts_frame([(0, 0, 12, 12), (100, 0, 114, 14)], npix=[36, 49])
    assert list(apply_mmu(parts, 200.0, outline_px=0.5)["NPIX"]) == [49]
    assert list(apply_mmu(parts, 192.5, outline_px=0.5)["NPIX"]) == [49]
    assert list(apply_mmu(parts, 191.5, outline_px=0.5)["NPIX"]) == [36, 49]
    assert len(apply_mmu(parts, 197.0, outline_px=0.0)) == 0


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 9), st.integers(0, 9))
def test_split_anywhere_merges_back(w, h, cx, cy):
    """A w x h block cut by a vertical and a horizontal seam merges back to one box."""
    cx, cy = min(cx, w), min(cy, h)
    boxes = [(x0, y0, x1, y1) for x0, x1 in ((0, cx), (cx, w)) for y0, y1 in ((0, cy), (cy, h))
             if x1 > x0 and y1 > y0]
    out = merge_seams(parts_frame(boxes, npix=[(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]))
    assert len(out) == 1
    assert out["NPIX"].iloc[0] == w * h
    assert shapely.area(shapely.symmetric_difference(out.geometry.iloc[0],
                                                     shapely.box(0, 0, w, h))) == pytest.approx(0)
