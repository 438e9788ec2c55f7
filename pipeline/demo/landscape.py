"""The demo landscape as vector polygons in EPSG:4545, before any change happens.

One call, :func:`build_landscape`, draws a coastal plain near Beihai: three counties whose
southern edge is the old coastline (a strip of newly reclaimed land and the sea lie outside
every county), a meandering river, a highway, a forested hill that holds a protected area, a
grid of rural roads with farmland parcels (paddy, irrigated, dry, orchard, grass), villages with
houses, fish ponds, approved construction land and permanent basic farmland. The land cover is
a partition (no overlaps): higher features (sea, river, roads, hill, ponds, villages) are cut
out of the ones below, so the rendered image and the DLTB layer agree pixel for pixel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import shapely

from pipeline.demo.scene import CRS_PROC, Scene
from pipeline.demo.shapes import blob, explode_polygons, oriented_rect, smooth_profile, wiggly_line

MARGIN = 60.0          # m the landscape extends beyond the scene on every side
RIVER_WIDTH = 30.0     # m
HIGHWAY_WIDTH = 12.0   # m
RURAL_ROAD_WIDTH = 5.0  # m

#: The three demo counties, west / north-east / south-east.
COUNTIES = (("450502", "海城区"), ("450503", "银海区"), ("450512", "铁山港区"))

#: DLBM -> DLMC (三调 land-use codes used by the demo).
DLMC = {
    "0101": "水田", "0102": "水浇地", "0103": "旱地", "0103K": "旱地(可调整)", "0201": "果园",
    "0301": "乔木林地", "0404": "其他草地", "0702": "农村宅基地", "1003": "公路用地",
    "1006": "农村道路", "1101": "河流水面", "1104": "坑塘水面",
}
FARMLAND_CODES = ("0101", "0102", "0103", "0103K")
_PARCEL_CLASSES = ("0101", "0102", "0103", "0103K", "0201", "0404")
_PARCEL_WEIGHTS = np.array([0.36, 0.17, 0.26, 0.05, 0.11, 0.05])


@dataclass
class Landscape:
    """Every vector the demo is drawn from (EPSG:4545 metres)."""

    scene: Scene
    land: gpd.GeoDataFrame        # partition of the frame: KIND, DLBM ('' off-survey), BLOCK, IN_DLTB
    buildings: gpd.GeoDataFrame   # existing village houses: ROOF material
    counties: gpd.GeoDataFrame    # XZQDM, XZQMC
    borders: list                 # county border LineStrings
    coast: shapely.LineString     # old coastline = southern edge of the counties
    outside: shapely.Geometry     # reclaimed land strip in no county (land, not sea)
    hill: shapely.Polygon
    hill_center: tuple            # (x, y) of the hill top
    hill_radius: float            # m, mean radius of the forest blob
    hill_height: float            # m, peak of the Gaussian hill
    core: shapely.Polygon         # protected area, 核心保护区
    general: shapely.Geometry     # protected area, 一般控制区
    redline: gpd.GeoDataFrame     # HXMC, HXLX
    approved: gpd.GeoDataFrame    # PZWH, XMMC, PZRQ
    jbnt: gpd.GeoDataFrame        # LAND (index into land), DLBM; two polygons overlap on purpose
    forbidden: shapely.Geometry   # water and highway: no new building/earth work is drawn there
    nodata: shapely.Polygon       # area without data in the before scene
    extras: dict = field(default_factory=dict)


def build_landscape(scene: Scene, rng: np.random.Generator, year: int = 2026) -> Landscape:
    """Draw the whole demo landscape for ``scene`` from the random generator ``rng``."""
    frame = scene.box(MARGIN)
    xmin, ymin, xmax, ymax = scene.bounds
    ext = max(300.0, 0.1 * max(scene.wm, scene.hm))     # counties reach this far beyond the scene
    small = float(np.clip(min(scene.wm, scene.hm) / 6000.0, 0.35, 1.0))  # shrink features in small demos

    # Coast: counties end at the old coastline; below it reclaimed land, then the sea wall.
    strip = max(90.0, 0.06 * scene.hm)
    y_coast, y_wall = ymin + strip, ymin + 0.45 * strip
    k_x = scene.at(0.41, 0)[0]
    cx = np.union1d(np.arange(xmin - ext, xmax + ext, 40.0), [k_x, xmax + ext])
    cy = y_coast + smooth_profile(cx, rng, 7.0)
    coast = shapely.LineString(np.column_stack([cx, cy]))
    above_coast = shapely.Polygon(np.vstack([np.column_stack([cx, cy]),
                                             [[xmax + ext, ymax + ext], [xmin - ext, ymax + ext]]]))
    sea = frame.intersection(shapely.box(xmin - ext, ymin - ext, xmax + ext, y_wall))
    reclaimed = frame.difference(above_coast).difference(sea)

    counties, borders = _counties(scene, rng, cx, cy, k_x, ext)

    # River from the north edge to the sea, highway west to east.
    x_top, x_end = scene.at(0.17, 0)[0], scene.at(0.27, 0)[0]
    t = np.linspace(0, 1, 160)
    meander = min(60.0, 0.03 * scene.wm)
    ph = rng.uniform(0, 2 * np.pi)
    rx = x_top + (x_end - x_top) * t + meander * (np.sin(2 * np.pi * 3.3 * t + ph)
                                                  + 0.35 * np.sin(2 * np.pi * 7.1 * t + 2 * ph))
    ry = (ymax + MARGIN + 40) - t * ((ymax + MARGIN + 40) - (y_wall - 60))
    river_line = shapely.LineString(np.column_stack([rx, ry]))
    river = river_line.buffer(RIVER_WIDTH / 2, cap_style="flat")
    road_pts = wiggly_line((xmin - MARGIN - 20, scene.at(0, 0.58)[1]),
                           (xmax + MARGIN + 20, scene.at(0, 0.62)[1]), rng, spacing=60,
                           amplitude=0.008 * scene.wm)
    highway_line = shapely.LineString(road_pts)
    highway = highway_line.buffer(HIGHWAY_WIDTH / 2, cap_style="flat")

    # Forested hill with a protected area: core zone inside, general control zone around it.
    r_hill = 0.15 * min(scene.wm, scene.hm)
    hc = scene.at(0.74, 0.22)
    hill = blob(hc, r_hill, rng, roughness=0.12)
    core_c = (hc[0] + 0.08 * r_hill, hc[1] - 0.05 * r_hill)
    core = blob(core_c, 0.45 * r_hill, rng, roughness=0.08).intersection(hill.buffer(-10))
    general = blob(core_c, 0.8 * r_hill, rng, roughness=0.1).intersection(hill.buffer(20)).difference(core)

    blocks, edges = _grid(frame, rng)
    rural = _rural_roads(edges, rng, frame)
    villages = _villages(scene, rng, small, highway_line, river, hill, y_coast)
    ponds = _ponds(scene, rng, small, river_line, hill, villages, highway, y_coast, frame)
    parcels, parcel_block, parcel_class = _parcels(blocks, rng, river_line)

    layers = [
        ("sea", "", [sea]), ("river", "1101", [river.intersection(frame)]),
        ("highway", "1003", [highway.intersection(frame)]), ("reclaimed", "", [reclaimed]),
        ("forest", "0301", [hill]), ("rural_road", "1006", rural), ("pond", "1104", ponds),
        ("village", "0702", villages),
    ]
    kinds, codes, geoms, block_ids = [], [], [], []
    for kind, code, gs in layers:
        kinds += [kind] * len(gs)
        codes += [code] * len(gs)
        geoms += list(gs)
        block_ids += [-1] * len(gs)
    for cls, blk, g in zip(parcel_class, parcel_block, parcels):
        kinds.append(_PARCEL_KIND[cls])
        codes.append(cls)
        geoms.append(g)
        block_ids.append(blk)
    land = _partition(geoms, kinds, codes, block_ids, frame, above_coast)

    buildings = _houses(villages, land, rng)
    approved = _approved(scene, rng, small, highway_line, hill, river, villages, ponds, year)
    redline = gpd.GeoDataFrame(
        {"HXMC": ["北海市生态保护红线", "北海市生态保护红线"],
         "HXLX": ["水源涵养", "生物多样性维护"]},
        geometry=[hill.buffer(25.0),
                  river_line.buffer(RIVER_WIDTH / 2 + 20.0, cap_style="flat").intersection(above_coast)
                  .intersection(frame.buffer(200))],
        crs=CRS_PROC)
    jbnt = _basic_farmland(land, approved, redline, rng)

    # Before-scene nodata: a slanted scene edge along the west side, ~3 % of the area.
    nodata = shapely.Polygon([(xmin - 1, ymax + 1), (xmin + 0.01 * scene.wm, ymax + 1),
                              (xmin + 0.05 * scene.wm, ymin - 1), (xmin - 1, ymin - 1)])
    water = land.geometry[land.KIND.isin(["sea", "river", "pond"])].union_all()
    forbidden = shapely.union_all([water, highway])
    return Landscape(scene=scene, land=land, buildings=buildings, counties=counties,
                     borders=borders, coast=coast, outside=reclaimed.intersection(scene.box()),
                     hill=hill, hill_center=hc, hill_radius=r_hill, hill_height=0.12 * r_hill, core=core,
                     general=general, redline=redline, approved=approved, jbnt=jbnt,
                     forbidden=forbidden, nodata=nodata,
                     extras={"river_line": river_line, "highway_line": highway_line,
                             "villages": villages})


_PARCEL_KIND = {"0101": "paddy", "0102": "irrigated", "0103": "dry", "0103K": "dry",
                "0201": "orchard", "0404": "grass"}


def _counties(scene, rng, cx, cy, k_x, ext):
    """Three county polygons tiling the land above the coastline, with irregular borders."""
    xmin, ymin, xmax, ymax = scene.bounds
    top, right = ymax + ext, xmax + ext
    j = np.array(scene.at(0.46, 0.5)) + rng.uniform(-0.02, 0.02, 2) * [scene.wm, scene.hm]
    p_top = (scene.at(0.37, 0)[0], top)
    p_right = (right, scene.at(0, 0.43)[1])
    k = (k_x, float(cy[np.searchsorted(cx, k_x)]))
    ab = wiggly_line(p_top, j, rng)
    bc = wiggly_line(j, p_right, rng)
    ac = wiggly_line(j, k, rng)
    west = np.column_stack([cx, cy])[cx < k_x][::-1]
    east = np.column_stack([cx, cy])[cx > k_x][::-1]
    a = np.vstack([ab, ac[1:], west, [[xmin - ext, top]]])
    b = np.vstack([[p_top, (right, top)], bc[::-1], ab[::-1][1:]])
    c = np.vstack([bc, east, ac[::-1][:-1]])
    polys = [shapely.make_valid(shapely.Polygon(p)) for p in (a, b, c)]
    polys = [p if p.geom_type == "Polygon" else max(shapely.get_parts(p), key=lambda g: g.area)
             for p in polys]
    counties = gpd.GeoDataFrame({"XZQDM": [c[0] for c in COUNTIES], "XZQMC": [c[1] for c in COUNTIES]},
                                geometry=polys, crs=CRS_PROC)
    return counties, [shapely.LineString(ab), shapely.LineString(bc), shapely.LineString(ac)]


def _grid(frame, rng):
    """Jittered grid of blocks (quads, 180-300 m x 130-240 m) and its edges (for rural roads)."""
    fx0, fy0, fx1, fy1 = frame.bounds
    xs = [fx0 - 40.0]
    while xs[-1] < fx1 + 40:
        xs.append(xs[-1] + rng.uniform(180, 300))
    ys = [fy1 + 40.0]
    while ys[-1] > fy0 - 40:
        ys.append(ys[-1] - rng.uniform(130, 240))
    nx, ny = len(xs), len(ys)
    px = np.array(xs)[:, None] + rng.uniform(-5, 5, (nx, ny))
    py = np.array(ys)[None, :] + rng.uniform(-5, 5, (nx, ny))
    blocks, edges = [], []
    for i in range(nx - 1):
        for jj in range(ny - 1):
            blocks.append(np.array([[px[i, jj], py[i, jj]], [px[i + 1, jj], py[i + 1, jj]],
                                    [px[i + 1, jj + 1], py[i + 1, jj + 1]], [px[i, jj + 1], py[i, jj + 1]]]))
    for i in range(nx):
        for jj in range(ny):
            if i + 1 < nx:
                edges.append(((px[i, jj], py[i, jj]), (px[i + 1, jj], py[i + 1, jj])))
            if jj + 1 < ny:
                edges.append(((px[i, jj], py[i, jj]), (px[i, jj + 1], py[i, jj + 1])))
    return blocks, edges


def _rural_roads(edges, rng, frame, cell: float = 500.0):
    """5 m concrete rural roads on ~75 % of the grid edges, cut into ~500 m pieces."""
    kept = [shapely.LineString(e) for e in edges if rng.random() < 0.75]
    net = shapely.union_all(shapely.buffer(np.array(kept, dtype=object), RURAL_ROAD_WIDTH / 2,
                                           cap_style="square", join_style="mitre"))
    net = net.intersection(frame)
    fx0, fy0, fx1, fy1 = frame.bounds
    cells = [shapely.box(x, y, x + cell, y + cell)
             for x in np.arange(fx0, fx1, cell) for y in np.arange(fy0, fy1, cell)]
    pieces = shapely.intersection(net, np.array(cells, dtype=object))
    return [g for _, g in explode_polygons(pieces, 1.0)]


def _far_from(geom, others, dist) -> bool:
    return all(o is None or geom.distance(o) >= dist for o in others)


def _villages(scene, rng, small, highway_line, river, hill, y_coast):
    """Irregular village (rural homestead, 0702) outlines near the highway."""
    n = max(1, round(5 * scene.area_ratio()))
    inner = scene.box(-0.06 * min(scene.wm, scene.hm))
    out = []
    for _ in range(400):
        if len(out) == n:
            break
        r = rng.uniform(60, 140) * max(small, 0.6)
        s = rng.uniform(0.05, 0.95) * highway_line.length
        p = highway_line.interpolate(s)
        off = rng.choice([-1, 1]) * rng.uniform(r * 0.4, r + 250 * small)
        c = (p.x + rng.uniform(-20, 20), p.y + off)
        v = blob(c, r, rng, roughness=0.2, aspect=rng.uniform(1.0, 1.8), angle=rng.uniform(0, np.pi))
        if not inner.contains(v.centroid) or v.bounds[1] < y_coast + 60:
            continue
        if _far_from(v, [river, hill] + out, 40.0) and all(v.distance(o) > 80 for o in out):
            out.append(v)
    return out


def _ponds(scene, rng, small, river_line, hill, villages, highway, y_coast, frame):
    """Fish-pond clusters (1104): 2x2 to 3x2 rectangular ponds with 5 m dykes, near water."""
    n = max(1, round(4 * scene.area_ratio()))
    xmin, ymin, xmax, ymax = scene.bounds
    out, clusters = [], []
    avoid = [hill, highway] + list(villages)
    for k in range(300):
        if len(clusters) == n:
            break
        if k % 2 == 0:       # beside the river
            p = river_line.interpolate(rng.uniform(0.1, 0.85) * river_line.length)
            side = rng.choice([-1, 1])
            c = (p.x + side * rng.uniform(70, 260) * max(small, 0.5), p.y + rng.uniform(-30, 30))
        else:                # behind the old coastline
            c = (rng.uniform(xmin + 0.08 * scene.wm, xmax - 0.05 * scene.wm),
                 y_coast + rng.uniform(60, 260) * max(small, 0.5))
        ang = rng.uniform(-0.3, 0.3)
        nx, ny = int(rng.integers(2, 4)), 2
        pw, ph, dyke = rng.uniform(40, 70), rng.uniform(30, 55), 5.0
        cells = []
        for i in range(nx):
            for j in range(ny):
                u = (i - (nx - 1) / 2) * (pw + dyke)
                v = (j - (ny - 1) / 2) * (ph + dyke)
                cells.append(oriented_rect(c[0] + u * math.cos(ang) - v * math.sin(ang),
                                           c[1] + u * math.sin(ang) + v * math.cos(ang), pw, ph, ang))
        hull = shapely.union_all(cells).envelope
        if not frame.contains(hull) or hull.bounds[1] < y_coast + 15:
            continue
        if hull.distance(river_line) < RIVER_WIDTH / 2 + 10 or not _far_from(hull, avoid + clusters, 15.0):
            continue
        clusters.append(hull)
        out += cells
    return out


def _parcels(blocks, rng, river_line):
    """Split every block into rectangular-ish parcels of 40-150 m and give each a land-use class."""
    geoms, block_of, classes = [], [], []
    for b, q in enumerate(blocks):
        w = 0.5 * (np.hypot(*(q[1] - q[0])) + np.hypot(*(q[2] - q[3])))
        h = 0.5 * (np.hypot(*(q[3] - q[0])) + np.hypot(*(q[2] - q[1])))
        fu = _splits(w, rng)
        fv = _splits(h, rng)
        centre = q.mean(axis=0)
        near_river = river_line.distance(shapely.Point(centre)) < 500
        weights = _PARCEL_WEIGHTS.copy()
        if near_river:
            weights[0] *= 2.0
        dominant = rng.choice(len(_PARCEL_CLASSES), p=weights / weights.sum())
        for i in range(len(fu) - 1):
            for j in range(len(fv) - 1):
                corners = [_bilinear(q, fu[a], fv[c]) for a, c in ((i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1))]
                geoms.append(shapely.Polygon(corners))
                block_of.append(b)
                k = dominant if rng.random() < 0.75 else rng.choice(len(_PARCEL_CLASSES), p=_PARCEL_WEIGHTS)
                classes.append(_PARCEL_CLASSES[k])
    return geoms, block_of, classes


def _splits(length, rng):
    """Cut fractions in [0, 1] giving pieces of roughly 50-120 m (never below 40 m or above 150 m)."""
    n = int(np.clip(round(length / rng.uniform(60, 110)), 1, None))
    while length / n > 150:
        n += 1
    while n > 1 and length / n < 45:
        n -= 1
    f = (np.arange(n + 1) + np.r_[0, rng.uniform(-0.12, 0.12, n - 1), 0]) / n
    return f


def _bilinear(q, u, v):
    """Point at fractions (u, v) of quad q (corners 0-1-2-3 counter-clockwise from upper-left)."""
    top = q[0] + u * (q[1] - q[0])
    bottom = q[3] + u * (q[2] - q[3])
    return tuple(top + v * (bottom - top))


def _partition(geoms, kinds, codes, blocks, frame, above_coast) -> gpd.GeoDataFrame:
    """Cut each feature by all earlier ones (earlier wins), clip to the frame, explode to parts.

    Parts on survey land (above the old coastline) carry their DLBM and IN_DLTB=True; the sea,
    the reclaimed strip and the river mouth are drawn but belong to no DLTB polygon.
    """
    geoms = shapely.intersection(np.array(geoms, dtype=object), frame)
    out_g, out_i = [], []
    taken: list = []
    # Features of one kind never overlap each other (nor do parcels), so each run is cut as a batch.
    runs = [0] + [i for i in range(1, len(kinds)) if kinds[i] != kinds[i - 1]
                  and not (kinds[i] in _PARCEL_SET and kinds[i - 1] in _PARCEL_SET)] + [len(kinds)]
    for a, b in zip(runs[:-1], runs[1:]):
        batch = geoms[a:b]
        if taken:
            taken_a = np.array(taken, dtype=object)
            src, hit = shapely.STRtree(taken_a).query(batch, predicate="intersects")
            cut = list(batch)
            for i in np.unique(src):
                cut[i] = shapely.difference(batch[i], shapely.union_all(taken_a[hit[src == i]]))
            # Snap to 1 mm: overlay leaves collinear back-tracking spikes that turn into
            # self-intersections once the polygon is re-projected to lon/lat.
            batch = shapely.set_precision(np.array(cut, dtype=object), 0.001)
        for i, g in explode_polygons(batch, 1.0):
            out_g.append(g)
            out_i.append(a + i)
        taken.extend([g for g in batch if not g.is_empty])
    kinds_a, codes_a, blocks_a = np.array(kinds), np.array(codes, dtype=object), np.array(blocks)
    idx = np.array(out_i)
    out_g = np.array(out_g, dtype=object)
    on_land = shapely.area(shapely.intersection(out_g, above_coast)) > 0.5 * shapely.area(out_g)
    # Split features that straddle the coastline (the river mouth) into survey and off-survey parts.
    final_g, final_i, final_land = [], [], []
    for g, i, inside in zip(out_g, idx, on_land):
        if codes_a[i] and not above_coast.contains(g):
            for part_on, piece in ((True, g.intersection(above_coast)), (False, g.difference(above_coast))):
                for _, p in explode_polygons([piece], 1.0):
                    final_g.append(p)
                    final_i.append(i)
                    final_land.append(part_on)
        else:
            final_g.append(g)
            final_i.append(i)
            final_land.append(bool(inside) and bool(codes_a[i]))
    final_i = np.array(final_i)
    in_dltb = np.array(final_land)
    return gpd.GeoDataFrame(
        {"KIND": kinds_a[final_i], "DLBM": np.where(in_dltb, codes_a[final_i], ""),
         "BLOCK": blocks_a[final_i], "IN_DLTB": in_dltb},
        geometry=final_g, crs=CRS_PROC)


_PARCEL_SET = {"paddy", "irrigated", "dry", "orchard", "grass"}


def _houses(villages, land, rng):
    """Existing houses (10-14 m x 11-16 m roofs) in rows inside each village, off the roads."""
    roofs, mats = [], []
    roads = land.geometry[land.KIND.isin(["rural_road", "highway"])].union_all().buffer(2.0)
    for v in villages:
        ang = rng.uniform(-0.25, 0.25)
        ca, sa = math.cos(ang), math.sin(ang)
        c = v.centroid
        r = math.sqrt(v.area / math.pi) * 2.2
        lx, ly = rng.uniform(10, 14), rng.uniform(11, 16)
        gx, gy = lx + rng.uniform(4, 7), ly + rng.uniform(5, 8)
        area = v.buffer(-3).difference(roads)
        shapely.prepare(area)
        for u in np.arange(-r, r, gx):
            for w in np.arange(-r, r, gy):
                if rng.random() > 0.78:
                    continue
                x = c.x + u * ca - w * sa
                y = c.y + u * sa + w * ca
                house = oriented_rect(x, y, lx * rng.uniform(0.9, 1.1), ly * rng.uniform(0.9, 1.1), ang)
                if area.contains(house):
                    roofs.append(house)
                    mats.append(rng.choice(["roof_tile", "roof_grey", "roof_blue"], p=[0.45, 0.4, 0.15]))
    return gpd.GeoDataFrame({"ROOF": mats}, geometry=roofs, crs=CRS_PROC)


def _approved(scene, rng, small, highway_line, hill, river, villages, ponds, year):
    """Approved construction land (已批建设用地) beside the highway, partly on farmland."""
    n = max(3, round(5 * scene.area_ratio()))
    inner = scene.box(-0.05 * min(scene.wm, scene.hm))
    out = []
    avoid = [hill.buffer(30), river.buffer(20)] + list(villages) + list(ponds)
    for _ in range(500):
        if len(out) == n:
            break
        w, h = rng.uniform(100, 220) * max(small, 0.5), rng.uniform(80, 180) * max(small, 0.5)
        p = highway_line.interpolate(rng.uniform(0.05, 0.95) * highway_line.length)
        side = rng.choice([-1, 1])
        c = (p.x, p.y + side * (HIGHWAY_WIDTH / 2 + 8 + h / 2 + rng.uniform(0, 40)))
        r = oriented_rect(c[0], c[1], w, h, rng.uniform(-0.1, 0.1))
        if inner.contains(r) and all(not r.intersects(a) for a in avoid) and _far_from(r, out, 30):
            out.append(r)
    pzwh = [f"桂政土批〔{year - 1}〕{int(rng.integers(10, 400))}号" for _ in out]
    xmmc = [f"北海市{year - 1}年度第{i + 1}批次城镇建设用地" for i in range(len(out))]
    pzrq = [f"{year - 1}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 28)):02d}" for _ in out]
    return gpd.GeoDataFrame({"PZWH": pzwh, "XMMC": xmmc, "PZRQ": pzrq}, geometry=out, crs=CRS_PROC)


def _basic_farmland(land, approved, redline, rng) -> gpd.GeoDataFrame:
    """~60 % of the farmland parcels, chosen block-wise, as permanent basic farmland (YJJBNTTB).

    Parcels on approved construction land or in the ecological red line are never basic
    farmland. Two touching basic-farmland parcels are made to overlap (one grown by 8 m): real
    layers have such digitising errors.
    """
    farm = land[land.IN_DLTB & land.DLBM.isin(["0101", "0102", "0103"])]
    blocked = shapely.union_all(list(approved.geometry) + list(redline.geometry))
    eligible = ~shapely.intersects(farm.geometry.to_numpy(), blocked)
    eligible &= rng.random(len(farm)) < 0.92
    # Whole blocks at a time (basic farmland is designated in contiguous tracts) until ~60 %.
    block = farm.BLOCK.to_numpy()
    pick = np.zeros(len(farm), bool)
    for b in rng.permutation(np.unique(block)):
        if pick.sum() >= 0.6 * len(farm):
            break
        pick |= (block == b) & eligible
    sel = farm[pick]
    geoms = sel.geometry.to_numpy().copy()
    tree = shapely.STRtree(geoms)
    order = rng.permutation(len(geoms))
    for i in order:
        hits = [h for h in tree.query(geoms[i], predicate="dwithin", distance=3.0) if h != i]
        if hits and geoms[i].area > 3000:
            geoms[i] = geoms[i].buffer(8.0, join_style="mitre")
            break
    return gpd.GeoDataFrame({"LAND": sel.index.to_numpy(), "DLBM": sel.DLBM.to_numpy()},
                            geometry=geoms, crs=CRS_PROC)
