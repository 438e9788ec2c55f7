"""Field batches of one county: who goes where on which day, in which order.

A batch is one day in the field: at most ``max_per_batch`` polygons whose pairwise
great-circle distance (CGCS2000 ellipsoid, km) is at most ``max_span_km``. Batches are
built most-urgent first; inside a batch the visiting order is nearest neighbour from the
start point, improved by 2-opt (open path: the start is fixed, the end is free).
Everything is deterministic: ties break on the polygon's rank (YXJ, -YXJF, JCBH).
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
from pyproj import CRS, Geod

from tiles.errors import ConfigError, InputError

GEOD: Geod = CRS.from_epsg(4490).get_geod()
"""The CGCS2000 ellipsoid for great-circle distances."""

DEFAULT_DUE_DAYS: dict[int, int] = {1: 7, 2: 15, 3: 30}
"""Days from issue to due date per priority level (levels above 3 take level 3's days)."""

_QUARTER = re.compile(r"^\d{4}Q[1-4]$")


def assign_batches(
    county: gpd.GeoDataFrame,
    *,
    max_per_batch: int = 25,
    max_span_km: float = 20.0,
    start_lonlat: tuple[float, float] | None = None,
    quarter: str,
    xzqdm: str,
    issue_date: dt.date,
    due_days: Mapping[int, int] | None = None,
) -> gpd.GeoDataFrame:
    """Split one county's polygons into field batches and order the visits.

    Parameters
    ----------
    county : GeoDataFrame
        Polygons of ONE county with YXJ (int, 1 = most urgent), YXJF (score, higher is
        more urgent), JCBH, and JD / WD (lon / lat in degrees, CGCS2000; computed from the
        geometry's centroid when the columns are absent).
    max_per_batch : int
        Capacity of a batch (polygons per field day).
    max_span_km : float
        Largest great-circle distance between two members of a batch, km.
    start_lonlat : (float, float), optional
        Where every route starts (e.g. the county seat), lon / lat CGCS2000. Without it a
        route starts at the batch's most urgent polygon.
    quarter : str
        e.g. "2026Q3"; part of the batch code.
    xzqdm : str
        6-digit county code; part of the batch code.
    issue_date : datetime.date
        Day the package is issued; due dates count from it.
    due_days : mapping of int to int, optional
        Days to the due date per priority level (default ``{1: 7, 2: 15, 3: 30}``). A
        level missing from the map takes the days of the closest lower level given.

    Returns
    -------
    GeoDataFrame
        A copy of ``county`` with PCBH (e.g. "450512-2026Q3-P01"), PCXH (1..n visiting
        order inside the batch) and JZRQ (due date, ISO text), sorted by PCBH then PCXH;
        the original index is kept.

    Notes
    -----
    Batching: the most urgent unassigned polygon seeds a batch; then, while the batch has
    room, it takes among the unassigned polygons within ``max_span_km`` of every member
    the one of the most urgent level, nearest to the batch among equals. So a batch may
    pick up a less urgent polygon next door, never one outside the span.

    Examples
    --------
    >>> import datetime, geopandas as gpd
    >>> from shapely.geometry import Point
    >>> g = gpd.GeoDataFrame({"JCBH": ["a", "b"], "YXJ": [1, 2], "YXJF": [9.0, 5.0],
    ...                       "JD": [108.0, 108.01], "WD": [22.0, 22.0]},
    ...                      geometry=[Point(0, 0), Point(1, 1)], crs="EPSG:4545")
    >>> out = assign_batches(g, quarter="2026Q3", xzqdm="450512",
    ...                      issue_date=datetime.date(2026, 10, 1))
    >>> list(out["PCBH"]), list(out["PCXH"]), list(out["JZRQ"])
    (['450512-2026Q3-P01', '450512-2026Q3-P01'], [1, 2], ['2026-10-08', '2026-10-16'])
    """
    _check_args(county, max_per_batch, max_span_km, start_lonlat, quarter, xzqdm, issue_date)
    days = _due_days(due_days)
    out = county.copy()
    n = len(out)
    if n == 0:
        out["PCBH"] = pd.Series(dtype=object)
        out["PCXH"] = pd.Series(dtype="int64")
        out["JZRQ"] = pd.Series(dtype=object)
        return out

    lon, lat = _lonlat(out)
    yxj = out["YXJ"].to_numpy()
    rank = _priority_rank(out)  # rank[k] = position of row k in priority order

    by_rank = np.argsort(rank)  # row positions, most urgent first
    batches = _split(lon[by_rank], lat[by_rank], yxj[by_rank].astype(np.int64),
                     max_per_batch, max_span_km)

    width = max(2, len(str(len(batches))))
    pcbh = np.empty(n, dtype=object)
    pcxh = np.zeros(n, dtype=np.int64)
    for b, members in enumerate(batches, start=1):
        rows = by_rank[np.asarray(members)]  # members are in rank order: rows[0] most urgent
        order, _ = visit_order(lon[rows], lat[rows], start_lonlat)
        code = f"{xzqdm}-{quarter}-P{b:0{width}d}"
        pcbh[rows] = code
        pcxh[rows[order]] = np.arange(1, len(rows) + 1)

    out["PCBH"] = pcbh
    out["PCXH"] = pcxh
    out["JZRQ"] = [(issue_date + dt.timedelta(days=_days_for(days, int(v)))).isoformat()
                   for v in yxj]
    sort_key = pd.DataFrame({"b": pcbh, "x": pcxh})
    return out.iloc[sort_key.sort_values(["b", "x"], kind="mergesort").index.to_numpy()]


def visit_order(
    lon: np.ndarray,
    lat: np.ndarray,
    start_lonlat: tuple[float, float] | None = None,
    *,
    improve: bool = True,
) -> tuple[np.ndarray, float]:
    """Visiting order of points: nearest neighbour from the start, then 2-opt.

    Parameters
    ----------
    lon, lat : ndarray
        Points to visit, degrees CGCS2000. Without ``start_lonlat`` the route starts at
        point 0 (the caller passes the most urgent first).
    start_lonlat : (float, float), optional
        A depot the route leaves from (not itself a visit).
    improve : bool
        Apply 2-opt after nearest neighbour; only strictly shorter moves are taken, so
        the result is never longer than plain nearest neighbour.

    Returns
    -------
    order : ndarray of int
        Indices into ``lon`` / ``lat`` in visiting order.
    length_km : float
        Length of the open path (start, then every point once, no return), km.
    """
    lon = np.asarray(lon, dtype=float)
    lat = np.asarray(lat, dtype=float)
    if start_lonlat is not None:
        lon = np.concatenate([[float(start_lonlat[0])], lon])
        lat = np.concatenate([[float(start_lonlat[1])], lat])
    m = len(lon)
    if m == 0:
        return np.zeros(0, dtype=np.int64), 0.0
    dist = distance_matrix_km(lon, lat)
    path = _nearest_neighbour(dist)
    if improve:
        path = _two_opt(dist, path)
    length = float(sum(dist[a, b] for a, b in zip(path[:-1], path[1:])))
    order = np.asarray(path, dtype=np.int64)
    if start_lonlat is not None:
        order = order[1:] - 1
    return order, length


def distance_matrix_km(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Great-circle distances between all pairs of points on CGCS2000, km (n x n)."""
    n = len(lon)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    _, _, d = GEOD.inv(lon[i.ravel()], lat[i.ravel()], lon[j.ravel()], lat[j.ravel()])
    return np.asarray(d, dtype=float).reshape(n, n) / 1000.0


def _dist_from(lon0: float, lat0: float, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Great-circle distances from one point to many, km."""
    if len(lon) == 0:
        return np.zeros(0)
    _, _, d = GEOD.inv(np.full(len(lon), lon0), np.full(len(lat), lat0), lon, lat)
    return np.asarray(d, dtype=float) / 1000.0


def _split(lon: np.ndarray, lat: np.ndarray, yxj: np.ndarray,
           cap: int, span: float) -> list[list[int]]:
    """Batches as lists of positions into the rank-ordered arrays, each in rank order."""
    n = len(lon)
    free = np.ones(n, dtype=bool)
    batches: list[list[int]] = []
    for seed in range(n):
        if not free[seed]:
            continue
        free[seed] = False
        members = [seed]
        # Only polygons within the span of the seed can ever join this batch.
        reach = np.flatnonzero(free)
        d = _dist_from(lon[seed], lat[seed], lon[reach], lat[reach])
        keep = d <= span
        reach, maxd, mind = reach[keep], d[keep], d[keep].copy()
        open_ = np.ones(len(reach), dtype=bool)
        while len(members) < cap:
            cand = np.flatnonzero(open_ & (maxd <= span))
            if len(cand) == 0:
                break
            pick = cand[np.lexsort((reach[cand], mind[cand], yxj[reach[cand]]))[0]]
            open_[pick] = False
            p = reach[pick]
            members.append(int(p))
            free[p] = False
            d = _dist_from(lon[p], lat[p], lon[reach], lat[reach])
            maxd = np.maximum(maxd, d)
            mind = np.minimum(mind, d)
        batches.append(sorted(members))
    return batches


def _nearest_neighbour(dist: np.ndarray) -> list[int]:
    """Open path from node 0, always to the nearest unvisited node (ties: lower index)."""
    m = len(dist)
    seen = np.zeros(m, dtype=bool)
    path = [0]
    seen[0] = True
    for _ in range(m - 1):
        row = np.where(seen, np.inf, dist[path[-1]])
        nxt = int(np.argmin(row))
        path.append(nxt)
        seen[nxt] = True
    return path


def _two_opt(dist: np.ndarray, path: list[int]) -> list[int]:
    """2-opt on an open path with a fixed first node; accepts strictly shorter moves only."""
    path = list(path)
    m = len(path)
    improved = True
    while improved:
        improved = False
        for i in range(1, m - 1):
            for j in range(i + 1, m):
                a, b, c = path[i - 1], path[i], path[j]
                before = dist[a, b]
                after = dist[a, c]
                if j + 1 < m:
                    e = path[j + 1]
                    before += dist[c, e]
                    after += dist[b, e]
                if after < before - 1e-9:
                    path[i:j + 1] = path[i:j + 1][::-1]
                    improved = True
    return path


def _priority_rank(df: pd.DataFrame) -> np.ndarray:
    """Rank of every row: YXJ ascending, YXJF descending (missing last), JCBH ascending."""
    key = pd.DataFrame({
        "yxj": df["YXJ"].to_numpy(),
        "yxjf": pd.to_numeric(df["YXJF"], errors="coerce").fillna(-np.inf).to_numpy()
        if "YXJF" in df else np.zeros(len(df)),
        "jcbh": df["JCBH"].astype(str).to_numpy(),
    })
    order = key.sort_values(["yxj", "yxjf", "jcbh"], ascending=[True, False, True],
                            kind="mergesort").index.to_numpy()
    rank = np.empty(len(df), dtype=np.int64)
    rank[order] = np.arange(len(df))
    return rank


def _lonlat(df: gpd.GeoDataFrame) -> tuple[np.ndarray, np.ndarray]:
    """JD / WD columns, or the geometry's centroid transformed to EPSG:4490."""
    if "JD" in df and "WD" in df:
        lon = pd.to_numeric(df["JD"], errors="coerce").to_numpy(dtype=float)
        lat = pd.to_numeric(df["WD"], errors="coerce").to_numpy(dtype=float)
        if np.isfinite(lon).all() and np.isfinite(lat).all():
            return lon, lat
    if df.crs is None:
        raise InputError("batches: polygons lack JD/WD and their GeoDataFrame has no CRS; "
                         "set the CRS (e.g. EPSG:4545) or fill JD/WD")
    pts = df.geometry.centroid.to_crs(4490)
    return pts.x.to_numpy(), pts.y.to_numpy()


def _due_days(due_days: Mapping[int, int] | None) -> dict[int, int]:
    days = dict(DEFAULT_DUE_DAYS if due_days is None else due_days)
    if not days:
        raise ConfigError("batches.due_days is empty; give days per level, e.g. {1: 7, 2: 15, 3: 30}")
    for k, v in days.items():
        if int(v) < 0:
            raise ConfigError(f"batches.due_days[{k}] = {v} is negative; give days >= 0")
    return {int(k): int(v) for k, v in days.items()}


def _days_for(days: Mapping[int, int], level: int) -> int:
    lower = [k for k in days if k <= level]
    return days[max(lower)] if lower else days[min(days)]


def _check_args(county: pd.DataFrame, cap: int, span: float,
                start: Sequence[float] | None, quarter: str, xzqdm: str,
                issue_date: dt.date) -> None:
    if int(cap) < 1:
        raise ConfigError(f"batches.max_per_batch = {cap}; give a whole number >= 1")
    if not float(span) > 0:
        raise ConfigError(f"batches.max_span_km = {span}; give a distance > 0 km")
    if not _QUARTER.match(str(quarter)):
        raise InputError(f"quarter {quarter!r} is not like 2026Q3")
    if not str(xzqdm):
        raise InputError("batches: empty county code xzqdm; pass the 6-digit XZQDM")
    if not isinstance(issue_date, dt.date):
        raise InputError(f"batches: issue_date {issue_date!r} is not a datetime.date")
    if start is not None:
        lon, lat = (float(v) for v in start)
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise ConfigError(f"batches start point {start!r} is not lon/lat degrees (CGCS2000)")
    for col in ("YXJ", "JCBH"):
        if col not in county:
            raise InputError(f"batches: county {xzqdm} polygons lack column {col}; "
                             "run the overlay stage first")
    if len(county) and county["YXJ"].isna().any():
        raise InputError(f"batches: county {xzqdm} has polygons without YXJ; run overlay first")
    if "XZQDM" in county and len(county):
        other = set(county["XZQDM"].astype(str)) - {str(xzqdm)}
        if other:
            raise InputError(f"batches: rows of county {xzqdm} include XZQDM {sorted(other)[:3]}; "
                             "pass one county at a time")
