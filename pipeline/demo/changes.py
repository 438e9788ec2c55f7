"""True land-use changes of the demo (the ground truth), placed by rule, with their flags.

Each change is an outline polygon (the truth) and one or more rendered parts (roofs, a yard, a
road strip, panels, water), all in EPSG:4545. Changes are placed into *slots* that force the
hard cases a pipeline must handle: on permanent basic farmland, in the ecological red line, in
a protected area's core zone, on approved construction land, across tile lines (one across a
four-tile corner), across county borders, and on land outside every county.

Changes are as varied as real ones: new roofs bright steel, blue steel, red tile or dark grey;
new roads concrete, asphalt or a gravel bed; and some sites are two changes side by side (a
house beside its new yard, earthworks beside a new road), 0-2 m apart, as they are on the ground.

Every flag is computed from the generator's own geometry (:class:`Zones`). A candidate whose
overlap with any zone is ambiguous (above 0 but under 5 % of its area, or partly outside the
counties, or a sliver of under 4 m^2 across a tile line) is rejected, so the flags are robust to
re-projection and to any reasonable overlap threshold.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import shapely
from shapely import affinity

from pipeline.demo.landscape import Landscape
from pipeline.demo.scene import CRS_PROC
from pipeline.demo.shapes import blob, main_angle, oriented_rect, random_point_in

log = logging.getLogger(__name__)

TBLX = ("20", "YH", "TD", "DL", "GF", "KT")
#: Share of each type among the changes (about 70 at the default size).
TYPE_SHARE = {"20": 0.26, "YH": 0.16, "TD": 0.2, "DL": 0.13, "GF": 0.1, "KT": 0.15}
#: Area range (m^2) of each type.
AREA_RANGE = {"20": (170, 2500), "YH": (250, 5000), "TD": (300, 5000), "DL": (500, 4000),
              "GF": (1000, 5000), "KT": (400, 4000)}
#: Minimum number of changes per slot (EDGE/CORNER only when the scene has tile lines).
SLOT_MIN = {"outside": 1, "core": 3, "corner": 1, "border": 3, "sthx": 3, "pzyd": 3,
            "edge": 3, "jbnt": 4}
SLOT_TYPES = {
    "outside": ("KT", "TD", "YH", "20"), "core": ("20", "TD", "YH", "DL"),
    "corner": TBLX, "edge": TBLX, "border": ("DL", "20", "YH", "TD", "KT"),
    "sthx": ("GF", "TD", "20", "DL", "YH"), "pzyd": ("20", "YH", "TD", "DL"),
    "jbnt": ("20", "KT", "TD", "YH", "GF", "DL"), "free": TBLX, "beside": ("20", "YH", "TD", "DL"),
}
SPACING = 20.0      # m between changes (but a "beside" change and its neighbour)
#: Share of the changes (at least BESIDE_MIN) placed right beside an earlier one, their gap (m).
BESIDE_SHARE = 0.1
BESIDE_MIN = 2
BESIDE_GAP = (0.0, 2.0)
#: Roof of a new building (one per site): colour-coated steel / white, blue steel, red clay
#: tile, dark grey cement tile or dark-painted steel (dark roofs are common in Guangxi villages).
ROOF_P = {"roof_new": 0.45, "roof_blue": 0.2, "roof_tile": 0.15, "roof_dark": 0.2}
#: Surface of a new road: concrete (rural roads), asphalt, or a road bed not yet paved.
ROAD_P = {"concrete_new": 0.6, "asphalt": 0.25, "gravel": 0.15}
#: Share of earthworks on a site that already lay bare on the before date (a fallow corner, a
#: cleared plot); the before-date part of such a site has the material BEFORE_BARE.
TD_ON_BARE_P = 0.3
BEFORE_BARE = "soil_before"
#: Water of a new pond: still muddy from digging, clear, or clear with an algal bloom.
POND_P = {"water_muddy": 0.5, "water_new": 0.3, "water_algae": 0.2}
SCENE_INSET = 12.0  # m kept free along the scene edge and the before-scene nodata edge
AMBIGUOUS = 0.05    # an overlap share in (0, AMBIGUOUS) is rejected
MIN_SIDE = 4.0      # m^2 on each side of a tile line for a change to straddle it


@dataclass
class Zones:
    """The reference geometry flags are computed against (EPSG:4545), as written to the layers."""

    jbnt: np.ndarray
    redline: shapely.Geometry
    core: shapely.Geometry
    approved: shapely.Geometry
    counties: np.ndarray
    codes: list
    xs: list
    ys: list
    _tree: shapely.STRtree = field(init=False, repr=False)

    def __post_init__(self):
        self._tree = shapely.STRtree(self.jbnt)
        for g in (self.redline, self.core, self.approved, *self.counties):
            shapely.prepare(g)

    @classmethod
    def from_landscape(cls, land: Landscape) -> "Zones":
        xs, ys = land.scene.tile_lines()
        return cls(jbnt=land.jbnt.geometry.to_numpy(), redline=land.redline.geometry.union_all(),
                   core=land.core, approved=land.approved.geometry.union_all(),
                   counties=land.counties.geometry.to_numpy(), codes=list(land.counties.XZQDM),
                   xs=xs, ys=ys)

    def flags(self, g) -> dict | None:
        """The truth flags of polygon ``g``, or None when any overlap is ambiguous."""
        a = g.area
        hits = self._tree.query(g, predicate="intersects")
        f_jbnt = shapely.union_all(self.jbnt[hits]).intersection(g).area / a if len(hits) else 0.0
        shares = [f_jbnt] + [(z.intersection(g).area / a) if z.intersects(g) else 0.0
                             for z in (self.redline, self.core, self.approved)]
        county = np.array([c.intersection(g).area / a if c.intersects(g) else 0.0 for c in self.counties])
        inside = county.sum()
        if any(1e-6 < s < AMBIGUOUS for s in list(shares) + list(county)):
            return None
        if 1e-6 < inside < 1 - 1e-6:
            return None
        on_edge = False
        xmin, ymin, xmax, ymax = g.bounds
        for line, vertical in [(x, True) for x in self.xs] + [(y, False) for y in self.ys]:
            lo, hi = (xmin, xmax) if vertical else (ymin, ymax)
            if not lo < line < hi:
                continue
            half = (shapely.box(xmin - 1, ymin - 1, line, ymax + 1) if vertical
                    else shapely.box(xmin - 1, ymin - 1, xmax + 1, line))
            side = g.intersection(half).area
            small = min(side, a - side)
            if 0 < small < MIN_SIDE:
                return None
            on_edge |= small >= MIN_SIDE
        n_county = int((county >= AMBIGUOUS).sum())
        # Shares are either <= 1e-6 (a numerical touch: no overlap) or >= AMBIGUOUS.
        return {"ON_JBNT": shares[0] >= AMBIGUOUS, "IN_STHX": shares[1] >= AMBIGUOUS,
                "IN_CORE": shares[2] >= AMBIGUOUS, "IN_PZYD": shares[3] >= AMBIGUOUS, "ON_EDGE": bool(on_edge), "ON_BORDER": n_county >= 2,
                "OUTSIDE": inside <= 1e-6,
                "XZQDM": self.codes[int(county.argmax())] if inside > 1e-6 else "",
                "_share": {"core": shares[2], "pzyd": shares[3]}}


def change_shape(tblx: str, c, angle: float, area: float, rng: np.random.Generator):
    """Outline and rendered parts ``[(polygon, material), ...]`` of one change of type ``tblx``.

    ``c`` is the centre (EPSG:4545 m), ``angle`` the main direction (radians from east) and
    ``area`` the target area in m^2 (met exactly except for roads, whose area is length x width).
    """
    x, y = c
    if tblx == "20":
        mat = str(rng.choice(list(ROOF_P), p=list(ROOF_P.values())))
        if area < 700:
            asp = rng.uniform(1.0, 1.8)
            roof = oriented_rect(x, y, math.sqrt(area * asp), math.sqrt(area / asp), angle)
            return roof, [(roof, mat)]
        asp = rng.uniform(1.3, 2.2)
        length, width = math.sqrt(area * asp), math.sqrt(area / asp)
        yard = oriented_rect(x, y, length, width, angle)
        n = int(rng.integers(2, 5))
        parts = [(yard, "concrete_new")]
        step = length / n
        for k in range(n):
            u = -length / 2 + step * (k + 0.5)
            parts.append((oriented_rect(x + u * math.cos(angle), y + u * math.sin(angle),
                                        step * rng.uniform(0.6, 0.8), width * rng.uniform(0.55, 0.75), angle),
                          mat))
        return yard, parts
    if tblx == "YH":
        asp = rng.uniform(1.0, 3.0)
        if rng.random() < 0.4:    # L-shaped yard: a rectangle missing one corner quarter
            length, width = math.sqrt(area * asp / 0.75), math.sqrt(area / asp / 0.75)
            full = oriented_rect(x, y, length, width, angle)
            u, v = length / 4, width / 4
            cut = oriented_rect(x + u * math.cos(angle) - v * math.sin(angle),
                                y + u * math.sin(angle) + v * math.cos(angle), length / 2 + 0.01,
                                width / 2 + 0.01, angle)
            g = full.difference(cut)
        else:
            g = oriented_rect(x, y, math.sqrt(area * asp), math.sqrt(area / asp), angle)
        return g, [(g, "concrete_new")]
    if tblx == "TD":
        g = blob((x, y), math.sqrt(area / math.pi), rng, roughness=0.25, n=40,
                 aspect=rng.uniform(1.0, 2.0), angle=angle)
        g = affinity.scale(g, math.sqrt(area / g.area), math.sqrt(area / g.area), origin=(x, y))
        if rng.random() < TD_ON_BARE_P:     # the site lay bare (fallow, cleared) before
            return g, [(g, BEFORE_BARE), (g, "fresh_earth")]
        return g, [(g, "fresh_earth")]
    if tblx == "DL":
        width = rng.uniform(6, 10)
        length = float(np.clip(area / width, 80, 400))
        bend = rng.uniform(-0.45, 0.45) if rng.random() < 0.5 else 0.0
        h = length / 2
        p0 = (x - h * math.cos(angle), y - h * math.sin(angle))
        p2 = (x + h * math.cos(angle + bend), y + h * math.sin(angle + bend))
        g = shapely.LineString([p0, (x, y), p2]).buffer(width / 2, cap_style="flat", join_style="mitre")
        return g, [(g, str(rng.choice(list(ROAD_P), p=list(ROAD_P.values()))))]
    if tblx == "GF":
        asp = rng.uniform(1.2, 2.5)
        g = oriented_rect(x, y, math.sqrt(area * asp), math.sqrt(area / asp), angle)
        return g, [(g, "solar")]
    if tblx == "KT":
        asp = rng.uniform(1.0, 2.0)
        g = oriented_rect(x, y, math.sqrt(area * asp) + 1.2, math.sqrt(area / asp) + 1.2, angle)
        g = g.buffer(-3.0, join_style="round").buffer(2.4, join_style="round")
        g = affinity.scale(g, math.sqrt(area / g.area), math.sqrt(area / g.area), origin=(x, y))
        return g, [(g, str(rng.choice(list(POND_P), p=list(POND_P.values()))))]
    raise ValueError(f"unknown change type {tblx!r}; expected one of {TBLX}")


def _slots(land: Landscape, n_total: int) -> list[str]:
    xs, ys = land.scene.tile_lines()
    slots = []
    for name in ("outside", "core", "corner", "border", "sthx", "pzyd", "edge", "jbnt"):
        if name in ("edge", "corner") and not (xs or ys):
            log.warning("demo: no tile line inside a %dx%d scene with tile_size %d: no change straddles a tile",
                        land.scene.width, land.scene.height, land.scene.tile_size)
            continue
        if name == "corner" and not (xs and ys):
            continue
        slots += [name] * SLOT_MIN[name]
    n_beside = max(BESIDE_MIN, round(BESIDE_SHARE * n_total))
    return slots + ["free"] * max(n_total - len(slots) - n_beside, 0) + ["beside"] * n_beside


def _centre(slot, land: Landscape, zones: Zones, rng):
    """A candidate centre and main direction for ``slot`` (None if the slot's zone is empty)."""
    sc = land.scene
    inner = sc.box(-SCENE_INSET - 10)
    if slot == "outside":
        p = random_point_in(land.outside.buffer(-6), rng)
        return (p, rng.uniform(-0.15, 0.15)) if p else None
    if slot == "core":
        p = random_point_in(land.core.buffer(-8), rng)
        return (p, rng.uniform(0, np.pi)) if p else None
    if slot == "sthx":
        p = random_point_in(land.hill.difference(land.core.buffer(10)).intersection(inner), rng)
        return (p, rng.uniform(0, np.pi)) if p else None
    if slot == "pzyd":
        g = land.approved.geometry.iloc[int(rng.integers(len(land.approved)))]
        return random_point_in(g.buffer(-6), rng), main_angle(g)
    if slot == "jbnt":
        g = zones.jbnt[int(rng.integers(len(zones.jbnt)))]
        return random_point_in(g, rng), main_angle(g)
    if slot == "edge":
        lines = [(x, True) for x in zones.xs] + [(y, False) for y in zones.ys]
        pos, vertical = lines[int(rng.integers(len(lines)))]
        xmin, ymin, xmax, ymax = inner.bounds
        off = rng.uniform(-4, 4)
        if vertical:
            return (pos + off, rng.uniform(ymin, ymax)), rng.uniform(-0.5, 0.5)
        return (rng.uniform(xmin, xmax), pos + off), np.pi / 2 + rng.uniform(-0.5, 0.5)
    if slot == "corner":
        x, y = zones.xs[int(rng.integers(len(zones.xs)))], zones.ys[int(rng.integers(len(zones.ys)))]
        return (x + rng.uniform(-3, 3), y + rng.uniform(-3, 3)), rng.uniform(0.3, 1.2)
    if slot == "border":
        line = land.borders[int(rng.integers(len(land.borders)))].intersection(inner)
        if line.is_empty:
            return None
        s = rng.uniform(0, line.length)
        p, q = line.interpolate(s), line.interpolate(min(s + 5, line.length))
        across = math.atan2(q.y - p.y, q.x - p.x) + np.pi / 2
        return (p.x, p.y), across + rng.uniform(-0.4, 0.4)
    p = random_point_in(inner, rng)
    return p, rng.uniform(0, np.pi)


def _beside(placed, rows, area, rng):
    """A centre just outside an earlier (non-pond) change, and that change's index; (None, None) if none."""
    cand = [k for k, r in enumerate(rows) if r["TBLX"] != "KT"]
    if not cand:
        return None, None
    k = cand[int(rng.integers(len(cand)))]
    g = placed[k]
    b = g.exterior.interpolate(rng.uniform(0, g.exterior.length))
    c = g.centroid
    d = math.hypot(b.x - c.x, b.y - c.y) or 1.0
    reach = 0.5 * math.sqrt(area)
    centre = (b.x + (b.x - c.x) / d * reach, b.y + (b.y - c.y) / d * reach)
    return (centre, main_angle(g) + rng.choice([0.0, np.pi / 2])), k


def _cut(g, parts, away):
    """``g`` and its parts minus ``away``; (None, None) unless ``g`` stays one polygon."""
    g = g.difference(away)
    if g.geom_type != "Polygon" or g.is_empty:
        return None, None
    out = []
    for p, m in parts:
        p = p.difference(away)
        if p.geom_type == "Polygon" and not p.is_empty:
            out.append((p, m))
    return (g, out) if out else (None, None)


def _slot_ok(slot, g, fl, zones: Zones) -> bool:
    if slot == "outside":
        return fl["OUTSIDE"]
    if fl["OUTSIDE"]:
        return False
    if slot == "core":
        return fl["_share"]["core"] > 0.999
    if slot == "sthx":
        return fl["IN_STHX"] and not fl["IN_CORE"]
    if slot == "pzyd":
        return fl["_share"]["pzyd"] > 0.999
    if slot == "jbnt":
        return fl["ON_JBNT"]
    if slot == "border":
        return fl["ON_BORDER"]
    if slot == "edge":
        return fl["ON_EDGE"]
    if slot == "corner":
        x = min(zones.xs, key=lambda v: abs(v - g.centroid.x))
        y = min(zones.ys, key=lambda v: abs(v - g.centroid.y))
        xmin, ymin, xmax, ymax = g.bounds
        quads = [shapely.box(*b) for b in ((xmin, ymin, x, y), (x, ymin, xmax, y),
                                           (xmin, y, x, ymax), (x, y, xmax, ymax))]
        return fl["ON_EDGE"] and all(g.intersection(q).area >= MIN_SIDE for q in quads)
    return True


def place_changes(land: Landscape, rng: np.random.Generator, n_total: int | None = None):
    """Place the true changes.

    Returns
    -------
    truth : GeoDataFrame
        One outline per change (EPSG:4545): ID, TBLX, AREA_M2 (planar m^2), the booleans
        ON_JBNT, IN_STHX, IN_CORE, IN_PZYD (overlap >= 5 % of the area; every share is either
        that or <= 1e-6), ON_EDGE (>= 4 m^2 on both sides of a tile line), ON_BORDER (>= 5 % in
        two counties), OUTSIDE (in no county), XZQDM (county holding most, '' outside), SLOT
        (the placement rule it was drawn for) and MATERIAL (of its top part: the roof of a
        building, the surface of a road, the water of a pond).
    parts : GeoDataFrame
        Rendered parts: ID, MATERIAL, WHEN (the date it is drawn on: ``after`` for the change,
        ``before`` for a site that lay bare before), in drawing order (later parts on top).
    """
    sc = land.scene
    zones = Zones.from_landscape(land)
    if n_total is None:
        n_total = max(12, round(70 * sc.area_ratio()))
    slots = _slots(land, n_total)
    n_small = max(1, round(0.04 * len(slots)))
    allowed_zone = sc.box(-SCENE_INSET).difference(land.nodata.buffer(SCENE_INSET))
    shapely.prepare(allowed_zone)
    blockers = shapely.union_all([land.forbidden, land.buildings.geometry.union_all().buffer(3.0)])
    shapely.prepare(blockers)
    target = {t: TYPE_SHARE[t] * len(slots) for t in TBLX}
    count = dict.fromkeys(TBLX, 0)
    placed, rows = [], []
    small_left = n_small
    for slot in slots:
        order = sorted(SLOT_TYPES[slot], key=lambda t: (count[t] - target[t], rng.random()))
        small = slot in ("free", "jbnt") and small_left > 0
        done = False
        for attempt in range(400):
            tblx = order[(attempt // 60) % len(order)]
            if small:
                tblx = ("20", "YH")[attempt % 2]
                area = rng.uniform(150, 199)
            else:
                lo, hi = AREA_RANGE[tblx]
                hi = hi * 0.85 ** (attempt // 25)
                if slot == "core":
                    hi = min(hi, 0.08 * land.core.area)
                if slot == "outside":
                    hi = min(hi, 1500.0)
                area = math.exp(rng.uniform(math.log(lo), math.log(max(hi, lo * 1.01))))
            if slot == "beside":
                got, near = _beside(placed, rows, area, rng)
            else:
                got, near = _centre(slot, land, zones, rng), None
            if got is None or got[0] is None:
                continue
            (cx, cy), ang = got
            g, parts = change_shape(tblx, (cx, cy), ang, area, rng)
            if near is not None:   # cut away what overlaps the neighbour, keep a 0-2 m gap
                g, parts = _cut(g, parts, placed[near].buffer(rng.uniform(*BESIDE_GAP)))
                if g is None or g.area < max(0.6 * area, AREA_RANGE[tblx][0]):
                    continue
            if not allowed_zone.contains(g) or blockers.intersects(g):
                continue
            if any(g.distance(o) < SPACING for k, o in enumerate(placed) if k != near):
                continue
            fl = zones.flags(g)
            if fl is None or not _slot_ok(slot, g, fl, zones):
                continue
            placed.append(g)
            count[tblx] += 1
            fl.pop("_share")
            rows.append({"TBLX": tblx, "geometry": g, "SLOT": slot, "_parts": parts, **fl})
            small_left -= small
            done = True
            break
        if not done:
            log.warning("demo: could not place a change in slot %r after 400 tries", slot)
    # IDs in reading order (north to south, west to east), as an analyst would number them.
    rows.sort(key=lambda r: (-round(r["geometry"].centroid.y, 3), r["geometry"].centroid.x))
    part_rows = []
    for i, r in enumerate(rows, start=1):
        r["ID"] = i
        r["AREA_M2"] = float(r["geometry"].area)
        r["MATERIAL"] = r["_parts"][-1][1]
        part_rows += [{"ID": i, "MATERIAL": m, "WHEN": "before" if m == BEFORE_BARE else "after",
                       "geometry": p} for p, m in r.pop("_parts")]
    cols = ["ID", "TBLX", "AREA_M2", "ON_JBNT", "IN_STHX", "IN_CORE", "IN_PZYD", "ON_EDGE",
            "ON_BORDER", "OUTSIDE", "XZQDM", "SLOT", "MATERIAL", "geometry"]
    truth = gpd.GeoDataFrame(rows, columns=cols, geometry="geometry", crs=CRS_PROC)
    parts = gpd.GeoDataFrame(part_rows, columns=["ID", "MATERIAL", "WHEN", "geometry"],
                             geometry="geometry", crs=CRS_PROC)
    return truth, parts

