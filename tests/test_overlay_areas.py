"""Ellipsoidal areas against independent calculations: equal-area projections and the
analytic area of a lon/lat quadrangle on the ellipsoid (authalic-latitude formula)."""
import math

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import shapely

from overlay.areas import GEOD, MU_M2, ellipsoidal_area
from tiles.errors import InputError

A = 6378137.0
F = 1 / 298.257222101  # CGCS2000
E2 = F * (2 - F)
E = math.sqrt(E2)


def quadrangle_area(lon1, lat1, lon2, lat2):
    """Area (m²) between two parallels and two meridians on the CGCS2000 ellipsoid, analytically:
    A = a²(1-e²)/2 · Δλ · [g(φ2) - g(φ1)], g(φ) = sinφ/(1-e² sin²φ) + ln((1+e sinφ)/(1-e sinφ))/(2e)."""
    def g(lat):
        s = math.sin(math.radians(lat))
        return s / (1 - E2 * s * s) + math.log((1 + E * s) / (1 - E * s)) / (2 * E)
    return A * A * (1 - E2) / 2 * math.radians(lon2 - lon1) * (g(lat2) - g(lat1))


def laea_area(geom, crs):
    """Planar area in a Lambert azimuthal equal-area projection on GRS80 centred on the shape."""
    dense = shapely.segmentize(geom, 10.0)
    ll = gpd.GeoSeries([dense], crs=crs).to_crs(4490)
    c = ll.iloc[0].centroid
    laea = pyproj.CRS.from_proj4(f"+proj=laea +lat_0={c.y} +lon_0={c.x} +ellps=GRS80 +units=m")
    return ll.to_crs(laea).area.iloc[0]


def test_cgcs2000_ellipsoid_is_grs80():
    ell = pyproj.CRS.from_epsg(4490).ellipsoid
    assert GEOD.a == ell.semi_major_metre
    assert 1 / GEOD.f == pytest.approx(ell.inverse_flattening, rel=1e-12)
    assert MU_M2 == pytest.approx(666.6666667)


def test_km_square_on_central_meridian_matches_equal_area_and_planar():
    sq = shapely.box(499_500, 3_000_000, 500_500, 3_001_000)  # EPSG:4545, on 108°E, ~27°N
    area = ellipsoidal_area(gpd.GeoSeries([sq], crs=4545))[0]
    assert area == pytest.approx(laea_area(sq, 4545), rel=1e-7)
    # Gauss-Krüger scale is 1 on the central meridian: planar ≈ ellipsoidal there
    assert area == pytest.approx(1e6, rel=1e-5)


def test_square_near_zone_edge_differs_from_planar():
    # 160 km east of the central meridian: GK scale k ≈ 1 + x²/2R², planar area ≈ k² too large
    sq = shapely.box(659_500, 3_000_000, 660_500, 3_001_000)
    area = ellipsoidal_area(gpd.GeoSeries([sq], crs=4545))[0]
    assert area == pytest.approx(laea_area(sq, 4545), rel=1e-7)
    r = 6_371_000.0
    expected_ratio = (1 + 160_000**2 / (2 * r * r)) ** 2
    assert 1e6 / area == pytest.approx(expected_ratio, rel=5e-5)
    assert 1e6 / area - 1 > 5e-4


def test_lonlat_box_matches_authalic_formula():
    lon1, lat1, lon2, lat2 = 108.0, 30.0, 108.1, 30.1
    box = shapely.segmentize(shapely.box(lon1, lat1, lon2, lat2), 0.0005)  # follow the parallels
    area = ellipsoidal_area(gpd.GeoSeries([box], crs=4490))[0]
    assert area == pytest.approx(quadrangle_area(lon1, lat1, lon2, lat2), rel=1e-8)


def test_holes_orientation_multipolygon_and_other_types():
    outer = shapely.box(500_000, 3_000_000, 501_000, 3_001_000)
    inner = shapely.box(500_200, 3_000_200, 500_400, 3_000_400)
    holed = shapely.Polygon(outer.exterior.coords, [inner.exterior.coords])
    cw = shapely.Polygon(list(holed.exterior.coords)[::-1], [list(inner.exterior.coords)[::-1]])
    far = shapely.box(510_000, 3_000_000, 510_100, 3_000_100)
    multi = shapely.MultiPolygon([holed, far])
    gc = shapely.GeometryCollection([far, shapely.LineString([(0, 0), (1, 1)])])
    s = gpd.GeoSeries([outer, inner, holed, cw, far, multi, gc, None, shapely.Polygon()], crs=4545)
    a = ellipsoidal_area(s)
    assert a[2] == pytest.approx(a[0] - a[1], rel=1e-12)
    assert a[3] == pytest.approx(a[2], rel=1e-12)
    assert a[5] == pytest.approx(a[2] + a[4], rel=1e-12)
    assert a[6] == pytest.approx(a[4], rel=1e-12)
    assert a[7] == 0 and a[8] == 0


def test_same_polygon_in_any_crs_same_area():
    poly = shapely.Polygon([(108.2, 22.5), (108.23, 22.5), (108.24, 22.53), (108.2, 22.52)])
    ll = gpd.GeoSeries([shapely.segmentize(poly, 0.0002)], crs=4490)
    ref = abs(GEOD.geometry_area_perimeter(shapely.geometry.polygon.orient(ll.iloc[0]))[0])
    for crs in (4490, 4326, 4545, 32649, 4502):  # 4502: zone-numbered 6-degree GK
        assert ellipsoidal_area(ll.to_crs(crs))[0] == pytest.approx(ref, rel=2e-7), crs


def test_vectorised_equals_pyproj_loop():
    rng = np.random.default_rng(5)
    pts = shapely.points(rng.uniform(450_000, 550_000, 200), rng.uniform(2.4e6, 2.6e6, 200))
    s = gpd.GeoSeries(shapely.buffer(pts, rng.uniform(5, 300, 200)), crs=4545)
    ll = s.to_crs(4490)
    ref = [abs(GEOD.geometry_area_perimeter(g)[0]) for g in ll]
    np.testing.assert_allclose(ellipsoidal_area(s), ref, rtol=1e-12)


def test_no_crs_is_refused():
    with pytest.raises(InputError, match="no CRS"):
        ellipsoidal_area(gpd.GeoSeries([shapely.box(0, 0, 1, 1)]))
