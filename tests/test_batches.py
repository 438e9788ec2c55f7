"""Field batches: capacity, span, visiting order, priority, due dates, determinism."""
from __future__ import annotations

import datetime as dt
import itertools
import math

import geopandas as gpd
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Point

from pipeline.batches import assign_batches, visit_order
from tiles.errors import ConfigError, InputError

ISSUE = dt.date(2026, 10, 1)


def haversine_km(lon1, lat1, lon2, lat2, r=6371.0088):
    """Independent spherical distance (differs from the ellipsoid by < 0.5 %)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


def path_km(points):
    return sum(haversine_km(*a, *b) for a, b in zip(points[:-1], points[1:]))


def county(lon, lat, yxj, yxjf=None, code="450102"):
    n = len(lon)
    yxjf = np.linspace(100, 1, n) if yxjf is None else yxjf
    return gpd.GeoDataFrame(
        {"JCBH": [f"{code}2026Q3{i:05d}" for i in range(n)], "XZQDM": code,
         "YXJ": np.asarray(yxj, dtype=int), "YXJF": np.asarray(yxjf, dtype=float),
         "JD": np.asarray(lon, dtype=float), "WD": np.asarray(lat, dtype=float)},
        geometry=[Point(x, y) for x, y in zip(lon, lat)], crs=4490)


@pytest.fixture
def spread():
    rng = np.random.default_rng(42)
    n = 240
    lon = 108.3 + rng.uniform(-0.35, 0.35, n)  # ~70 km x 80 km around Nanning
    lat = 22.8 + rng.uniform(-0.35, 0.35, n)
    return county(lon, lat, rng.integers(1, 6, n), rng.uniform(0, 100, n))


def test_capacity_span_and_complete(spread):
    out = assign_batches(spread, max_per_batch=25, max_span_km=20.0,
                         quarter="2026Q3", xzqdm="450102", issue_date=ISSUE)
    assert sorted(out["JCBH"]) == sorted(spread["JCBH"])
    assert out["PCBH"].notna().all()
    for code, b in out.groupby("PCBH"):
        assert code.startswith("450102-2026Q3-P")
        assert len(b) <= 25
        assert sorted(b["PCXH"]) == list(range(1, len(b) + 1))
        pts = list(zip(b["JD"], b["WD"]))
        span = max((haversine_km(*p, *q) for p, q in itertools.combinations(pts, 2)), default=0)
        assert span <= 20.0 * 1.006
    # 240 points over ~5,600 km² cannot fit in fewer than 240/25 batches
    assert out["PCBH"].nunique() >= 10


def test_far_clusters_split_by_span():
    lon = [108.0 + 0.001 * i for i in range(5)] + [109.0 + 0.001 * i for i in range(5)]
    lat = [22.5] * 10
    out = assign_batches(county(lon, lat, [1] * 10), quarter="2026Q3", xzqdm="450102",
                         issue_date=ISSUE)
    groups = {frozenset(b["JCBH"]) for _, b in out.groupby("PCBH")}
    first = frozenset(f"4501022026Q3{i:05d}" for i in range(5))
    second = frozenset(f"4501022026Q3{i:05d}" for i in range(5, 10))
    assert groups == {first, second}


def test_capacity_splits_one_site():
    n = 60
    out = assign_batches(county([108.0] * n, [22.5] * n, [3] * n), max_per_batch=25,
                         quarter="2026Q3", xzqdm="450102", issue_date=ISSUE)
    assert sorted(out.groupby("PCBH").size().tolist()) == [10, 25, 25]
    assert sorted(out["PCBH"].unique()) == [f"450102-2026Q3-P0{k}" for k in (1, 2, 3)]


def test_priority_first_and_most_urgent_starts(spread):
    out = assign_batches(spread, quarter="2026Q3", xzqdm="450102", issue_date=ISSUE)
    ranked = spread.sort_values(["YXJ", "YXJF"], ascending=[True, False])
    top = ranked["JCBH"].iloc[0]
    row = out.set_index("JCBH").loc[top]
    assert row["PCBH"].endswith("P01") and row["PCXH"] == 1
    # each batch starts at its most urgent member; batches are numbered by that member's rank
    seeds = []
    for code, b in out.groupby("PCBH", sort=True):
        best = b.sort_values(["YXJ", "YXJF"], ascending=[True, False]).iloc[0]
        assert b.loc[b["PCXH"] == 1, "JCBH"].item() == best["JCBH"]
        seeds.append((best["YXJ"], -best["YXJF"]))
    assert seeds == sorted(seeds)


def test_deterministic_under_row_order(spread):
    a = assign_batches(spread, quarter="2026Q3", xzqdm="450102", issue_date=ISSUE)
    shuffled = spread.sample(frac=1.0, random_state=7)
    b = assign_batches(shuffled, quarter="2026Q3", xzqdm="450102", issue_date=ISSUE)
    cols = ["PCBH", "PCXH", "JZRQ"]
    assert a.set_index("JCBH")[cols].sort_index().equals(b.set_index("JCBH")[cols].sort_index())


def test_due_dates_per_level():
    out = assign_batches(county([108.0, 108.01, 108.02, 108.03], [22.5] * 4, [1, 2, 3, 5]),
                         quarter="2026Q3", xzqdm="450102", issue_date=ISSUE)
    got = dict(zip(out["YXJ"], out["JZRQ"]))
    assert got == {1: "2026-10-08", 2: "2026-10-16", 3: "2026-10-31", 5: "2026-10-31"}
    out = assign_batches(county([108.0, 108.01], [22.5] * 2, [1, 4]), due_days={1: 3, 4: 60},
                         quarter="2026Q3", xzqdm="450102", issue_date=ISSUE)
    assert dict(zip(out["YXJ"], out["JZRQ"])) == {1: "2026-10-04", 4: "2026-11-30"}


def test_order_along_a_line_with_start():
    lon = [108.03, 108.01, 108.04, 108.02]
    order, length = visit_order(np.array(lon), np.array([22.5] * 4), start_lonlat=(108.0, 22.5))
    assert list(order) == [1, 3, 0, 2]
    assert length == pytest.approx(haversine_km(108.0, 22.5, 108.04, 22.5), rel=0.006)
    out = assign_batches(county(lon, [22.5] * 4, [1] * 4), start_lonlat=(108.0, 22.5),
                         quarter="2026Q3", xzqdm="450102", issue_date=ISSUE)
    assert list(out["JD"]) == sorted(lon)


def brute_force_km(lon, lat):
    best = math.inf
    for perm in itertools.permutations(range(1, len(lon))):
        p = [0, *perm]
        best = min(best, path_km([(lon[i], lat[i]) for i in p]))
    return best


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(108.0, 108.3), st.floats(22.4, 22.7)), min_size=2, max_size=25))
def test_two_opt_never_longer_than_nearest_neighbour(points):
    lon = np.array([p[0] for p in points])
    lat = np.array([p[1] for p in points])
    nn, nn_km = visit_order(lon, lat, improve=False)
    opt, opt_km = visit_order(lon, lat)
    assert opt_km <= nn_km + 1e-9
    assert sorted(opt) == list(range(len(lon))) and opt[0] == 0
    # the reported length is the length of the reported order
    indep = path_km([(lon[i], lat[i]) for i in opt])
    assert opt_km == pytest.approx(indep, rel=0.006, abs=1e-6)


def test_two_opt_fixes_nearest_neighbour_detour():
    # Nearest neighbour goes right (0.010), back left (0.022), then far right (0.112):
    # 0.144 deg; going left first is 0.012 + 0.022 + 0.090 = 0.124 deg.
    lon = np.array([108.0, 108.01, 107.988, 108.10])
    lat = np.array([22.5] * 4)
    _, nn_km = visit_order(lon, lat, improve=False)
    order, km = visit_order(lon, lat)
    assert list(order) == [0, 2, 1, 3]
    assert km < nn_km
    assert km / nn_km == pytest.approx(0.124 / 0.144, rel=1e-3)
    assert km == pytest.approx(brute_force_km(lon, lat), rel=0.006)


def test_small_sets_match_brute_force_closely():
    rng = np.random.default_rng(3)
    for _ in range(20):
        lon = 108 + rng.uniform(0, 0.2, 7)
        lat = 22.5 + rng.uniform(0, 0.2, 7)
        _, km = visit_order(lon, lat)
        best = brute_force_km(lon, lat)
        assert best * (1 - 0.006) <= km <= best * 1.25


def test_lonlat_from_geometry_when_absent():
    g = gpd.GeoDataFrame({"JCBH": ["a", "b"], "YXJ": [1, 1]},
                         geometry=[Point(500000, 2500000), Point(500100, 2500000)], crs=4545)
    out = assign_batches(g, quarter="2026Q3", xzqdm="450102", issue_date=ISSUE)
    assert list(out["PCXH"]) == [1, 2] and out["PCBH"].nunique() == 1


def test_empty_and_errors():
    empty = county([], [], [])
    out = assign_batches(empty, quarter="2026Q3", xzqdm="450102", issue_date=ISSUE)
    assert len(out) == 0 and {"PCBH", "PCXH", "JZRQ"} <= set(out.columns)
    one = county([108.0], [22.5], [1])
    with pytest.raises(ConfigError, match="max_per_batch"):
        assign_batches(one, max_per_batch=0, quarter="2026Q3", xzqdm="450102", issue_date=ISSUE)
    with pytest.raises(InputError, match="450103"):
        assign_batches(one, quarter="2026Q3", xzqdm="450103", issue_date=ISSUE)
    with pytest.raises(InputError, match="YXJ"):
        assign_batches(one.drop(columns="YXJ"), quarter="2026Q3", xzqdm="450102", issue_date=ISSUE)
    with pytest.raises(InputError, match="quarter"):
        assign_batches(one, quarter="2026-3", xzqdm="450102", issue_date=ISSUE)
