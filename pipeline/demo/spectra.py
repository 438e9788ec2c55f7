"""Surface reflectance of every demo object on all three dates: endmembers, crop seasons, vigour.

Each rendered object (a land-cover polygon, a house, a part of a true change) is a linear mix of
a background endmember A and a foreground endmember V (usually green vegetation) with cover
fraction f, times a brightness factor: ``refl = ((1 - f) * A + f * V) * bright``. Seasonal crop
change is a change of A, V, f (and brightness) of a parcel between the dates, or of a part of it
when a harvest is still in progress; it is not land-use change. The states spread as real fields
do: straw from wet and dark to dry and bright, fields already ploughed after the harvest, flood
water from clear to muddy, soil darkened by the August rains; new ponds muddy or clear.
The third date (the reference: the same season a year earlier) shows the land use of the before
date in the season of the after date; every parcel's crop stage a year earlier is drawn by
:func:`reference_stages` and all its parameters afresh by :func:`fill_reference`.
Band order everywhere: blue, green, red, nir (GF-2 PMS bands), reflectance 0-1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely import affinity

from pipeline.demo.changes import BEFORE_BARE
from pipeline.demo.shapes import main_angle

#: Endmember reflectance (blue, green, red, nir).
ENDMEMBERS = {
    "crop": (0.030, 0.075, 0.040, 0.450),           # dense green canopy, NDVI ~0.84
    "grass": (0.035, 0.075, 0.050, 0.330),
    "canopy": (0.025, 0.055, 0.030, 0.360),         # broadleaf forest / fruit trees
    "understory": (0.020, 0.035, 0.025, 0.120),     # shaded gaps in a forest
    "soil": (0.070, 0.100, 0.150, 0.200),           # dry red lateritic field soil
    "soil_wet": (0.050, 0.070, 0.090, 0.130),       # puddled paddy soil
    "stubble": (0.090, 0.120, 0.150, 0.220),        # straw and stubble after harvest
    "shallow_water": (0.070, 0.090, 0.070, 0.040),  # flooded paddy, 5-10 cm over mud
    "water_turbid": (0.070, 0.090, 0.075, 0.035),
    "pond_water": (0.050, 0.075, 0.050, 0.025),
    "sea": (0.060, 0.075, 0.050, 0.015),
    "sand": (0.170, 0.210, 0.250, 0.280),
    "orchard_floor": (0.060, 0.090, 0.110, 0.220),
    "yard": (0.130, 0.140, 0.150, 0.180),
    "concrete_old": (0.160, 0.180, 0.190, 0.210),
    "asphalt": (0.060, 0.070, 0.075, 0.085),
    "roof_tile": (0.090, 0.100, 0.180, 0.220),
    "roof_grey": (0.160, 0.170, 0.180, 0.200),
    "roof_blue": (0.200, 0.170, 0.110, 0.150),
    "roof_new": (0.300, 0.320, 0.330, 0.340),       # new colour-coated steel / white roof
    "concrete_new": (0.200, 0.220, 0.230, 0.250),
    "fresh_earth": (0.120, 0.170, 0.260, 0.300),    # freshly moved laterite: brighter, redder than stubble
    "solar": (0.035, 0.040, 0.035, 0.045),          # PV panels: dark in all bands
    "water_new": (0.050, 0.070, 0.050, 0.020),      # new pond, clear water 1-2 m deep
    "cloud": (0.700, 0.710, 0.720, 0.700),
    # Realistic spread (red-team review): the states below are what real scenes also hold.
    "paddy_turbid": (0.080, 0.100, 0.100, 0.050),   # freshly puddled paddy, muddy water, NDVI -0.33
    "water_muddy": (0.075, 0.095, 0.090, 0.030),    # freshly dug pond, clay in suspension
    "roof_dark": (0.055, 0.060, 0.065, 0.080),      # dark grey cement tile / dark-painted steel
    "gravel": (0.110, 0.130, 0.165, 0.210),         # compacted laterite road bed, not yet paved
}
EM = {k: np.asarray(v, np.float32) for k, v in ENDMEMBERS.items()}

#: Crop states: (background endmember, cover fraction range) with crop canopy as foreground.
#: ``tilled``: ploughed after harvest (peanut / vegetable fields re-made in August); ``puddled``:
#: a harvested paddy ploughed wet, no standing water yet; ``flooded``: 0-10 % cover is the range
#: from a just-flooded paddy to transplanted seedlings.
STATES = {
    "green": ("soil", (0.70, 0.90)), "young": ("soil", (0.12, 0.30)), "bare": ("soil", (0.0, 0.05)),
    "stubble": ("stubble", (0.02, 0.15)), "flooded": ("shallow_water", (0.0, 0.10)),
    "tilled": ("soil", (0.0, 0.03)), "puddled": ("soil_wet", (0.0, 0.03)),
}
#: Seasonal change between the dates per farmland class: probabilities of each kind.
SEASON_P = {
    "paddy": {"flood": 0.30, "harvest": 0.13, "green_up": 0.02, "none": 0.55},
    "irrigated": {"flood": 0.03, "harvest": 0.15, "green_up": 0.20, "none": 0.62},
    "dry": {"flood": 0.0, "harvest": 0.12, "green_up": 0.30, "none": 0.58},
}
#: What a harvested field shows on the after date: straw left standing, or already ploughed.
#: Between May and late August a paddy is mostly re-flooded (``flood``), a dry or vegetable
#: field mostly ploughed for the next crop.
HARVEST_AFTER = {
    "paddy": {"stubble": 0.7, "puddled": 0.3},
    "irrigated": {"stubble": 0.4, "tilled": 0.6},
    "dry": {"stubble": 0.5, "tilled": 0.5},
}
#: Share of harvests still in progress on the after date, and the harvested share of those.
PARTIAL_HARVEST_P = 0.25
PARTIAL_SHARE = (0.3, 0.7)
#: After-date brightness factor of a state (moisture, straw colour): wet decomposing straw is
#: dark, dry straw bright; ploughed laterite darkens when moist.
STATE_BRIGHT = {"stubble": (0.75, 1.3), "tilled": (0.8, 1.2), "puddled": (0.85, 1.15)}
#: Share of muddy water in a flooded paddy (0 clear water over dark mud, 1 muddy just after puddling).
FLOOD_MUDDY = (0.0, 1.0)
#: Soil moisture of August (rainy season) darkens fields whose soil shows (young crop, bare).
SOIL_MOISTURE = (0.85, 1.1)
#: Brightness factor range per change material (fresh earth: moist fill to dry subsoil).
MATERIAL_BRIGHT = {"fresh_earth": (0.8, 1.15), "concrete_new": (0.85, 1.08)}
#: New ponds (materials chosen in :mod:`~pipeline.demo.changes`): share of muddy water in a
#: ``water_muddy`` pond, and the cover of floating algae in a ``water_algae`` one (fish ponds
#: are fertilised and bloom within weeks).
POND_MUDDY = (0.3, 1.0)
POND_ALGAE_F = (0.005, 0.04)
#: Year-to-year and date-to-date variation of static objects: relative change of the cover
#: fraction (canopy and grass vigour, orchard pruning), summer algae cover of fish ponds, and a
#: per-object brightness factor (normal sd, clipped to a range; moisture, view geometry).
COVER_JITTER = {"grass": (0.9, 1.1), "forest": (0.9, 1.1), "village": (0.9, 1.1),
                "orchard": (0.95, 1.08)}
POND_SUMMER_ALGAE = (0.02, 0.08)
BRIGHT_JITTER_SD, BRIGHT_JITTER_CLIP = 0.02, (0.95, 1.05)
#: Share of farmland parcels whose crop stage a year earlier (on the reference date) equals
#: this year's after-date stage, per class. Double-rice transplanting in Guangxi follows the
#: early-rice harvest within the same fortnight most years (the late-rice window closes with
#: the autumn cold dew), so paddies repeat most; vegetable (irrigated) fields are re-sown several
#: times a year and dry fields (peanut, cassava, sugarcane) rotate crops, so they repeat less.
REFERENCE_SAME_STAGE = {"paddy": 0.7, "irrigated": 0.6, "dry": 0.5}
#: Of the parcels in another stage a year earlier, the share one stage earlier or later in the
#: crop calendar (the season ran a week or two later or earlier); the rest rotated, their stage
#: drawn as the class's after-state distribution gives.
REFERENCE_ADJACENT_P = 0.5
#: The crop calendar of each class as a cycle of states (a stage's neighbours are one step
#: behind or ahead): double rice ripens, is harvested, puddled, flooded and transplanted; dry
#: and vegetable fields are harvested, ploughed, lie bare, are sown. A flooded vegetable field
#: (water spinach, taro) follows the paddy cycle.
CROP_CYCLE = {
    "paddy": ("green", "stubble", "puddled", "flooded", "young"),
    "irrigated": ("green", "stubble", "tilled", "bare", "young"),
    "dry": ("green", "stubble", "tilled", "bare", "young"),
}
PATTERN_NONE, PATTERN_ROWS, PATTERN_PANELS = 0, 1, 2
#: Date indices of :class:`ObjectTable`.
BEFORE, AFTER, REFERENCE = 0, 1, 2
N_DATES = 3


@dataclass
class ObjectTable:
    """Per-object rendering parameters; index 0 is the fallback (grass), dates BEFORE=0, AFTER=1,
    REFERENCE=2 (the same season a year earlier)."""

    A: np.ndarray        # (3, n, 4) background reflectance
    V: np.ndarray        # (3, n, 4) foreground reflectance
    f: np.ndarray        # (3, n) foreground cover fraction
    bright: np.ndarray   # (3, n) brightness factor
    tex: np.ndarray      # (n,) relative per-pixel variation of f (persistent texture)
    pattern: np.ndarray  # (n,) PATTERN_*
    period: np.ndarray   # (n,) row spacing, m
    angle: np.ndarray    # (n,) row direction, radians from east
    duty: np.ndarray     # (n,) panel share of a row period


@dataclass
class CropStory:
    """The seasonal story of one farmland parcel (index ``land`` into the land table).

    ``share`` is the part of the parcel that changed (1 unless a harvest is in progress);
    ``patch`` that part as a polygon (EPSG:4545) when ``share`` < 1, else None.
    """

    land: int
    kind: str
    before: str
    after: str
    share: float = 1.0
    patch: object = None


def _empty(n):
    return ObjectTable(A=np.zeros((N_DATES, n, 4), np.float32), V=np.zeros((N_DATES, n, 4), np.float32),
                       f=np.zeros((N_DATES, n), np.float32), bright=np.ones((N_DATES, n), np.float32),
                       tex=np.zeros(n, np.float32), pattern=np.zeros(n, np.int8),
                       period=np.ones(n, np.float32), angle=np.zeros(n, np.float32),
                       duty=np.ones(n, np.float32))


def _set(t, i, d, a, v="crop", f=0.0):
    t.A[d, i] = EM[a]
    t.V[d, i] = EM[v]
    t.f[d, i] = f


def crop_stories(land, rng: np.random.Generator) -> list[CropStory]:
    """The seasonal story of every farmland parcel of ``land`` (in ``land`` order)."""
    out = []
    for k, (kind, geom) in enumerate(zip(land.KIND.to_numpy(), land.geometry.to_numpy())):
        if kind not in SEASON_P:
            continue
        change, before, after = _crop_story(kind, rng)
        story = CropStory(k, change, before, after)
        if change == "harvest" and rng.random() < PARTIAL_HARVEST_P:
            share = rng.uniform(*PARTIAL_SHARE)
            patch = split_off(geom, share, rng)
            if patch is not None:
                story.share, story.patch = float(patch.area / geom.area), patch
        out.append(story)
    return out


def split_off(geom, share: float, rng: np.random.Generator):
    """The part of polygon ``geom`` on one side of a straight cut across its long axis.

    The cut runs across the main direction (a combine harvester works along the rows), placed
    by bisection so the part holds ``share`` of the area; None when no single piece results.
    """
    ang = main_angle(geom)
    c = geom.centroid
    local = affinity.rotate(geom, -ang, origin=c, use_radians=True)
    xmin, ymin, xmax, ymax = local.bounds
    from_west = rng.random() < 0.5
    lo, hi = xmin, xmax
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        box = (shapely.box(xmin - 1, ymin - 1, mid, ymax + 1) if from_west
               else shapely.box(mid, ymin - 1, xmax + 1, ymax + 1))
        got = local.intersection(box).area / local.area
        if (got < share) == from_west:
            lo = mid
        else:
            hi = mid
    part = local.intersection(box)
    if part.geom_type != "Polygon" or part.is_empty:
        return None
    return affinity.rotate(part, ang, origin=c, use_radians=True)


def object_table(land, buildings, stories, parts, rng: np.random.Generator):
    """Rendering parameters of every object on the before and after dates.

    The reference date (index 2) is filled afterwards by :func:`fill_reference`, from its own
    random stream. Object ids: 0 fallback, 1..len(land) land features (in ``land`` order), then houses, then
    the harvested patches of harvests in progress (``stories`` with a patch, after date only),
    then change parts (each drawn on the date of its WHEN).

    Returns
    -------
    table : ObjectTable
    """
    patches = [s for s in stories if s.patch is not None]
    n_land, n_b, n_s, n_p = len(land), len(buildings), len(patches), len(parts)
    t = _empty(1 + n_land + n_b + n_s + n_p)
    for d in range(N_DATES):
        _set(t, 0, d, "soil", "grass", 0.6)
    bright = np.clip(rng.normal(1.0, 0.05, len(t.f[0])), 0.9, 1.1).astype(np.float32)
    t.bright[0] = bright
    t.bright[1] = bright * np.clip(rng.normal(1.0, BRIGHT_JITTER_SD, len(bright)), *BRIGHT_JITTER_CLIP)
    by_land = {s.land: s for s in stories}
    patch_id = {s.land: 1 + n_land + n_b + j for j, s in enumerate(patches)}
    for k, (kind, geom) in enumerate(zip(land.KIND.to_numpy(), land.geometry.to_numpy()), start=1):
        if kind in SEASON_P:
            s = by_land[k - 1]
            for d, state in enumerate((s.before, s.after)):
                _set_state(t, k, d, kind, state, rng)
            if s.kind == "none":   # crop vigour differs between dates everywhere
                t.f[1, k] = min(t.f[0, k] * rng.uniform(0.85, 1.15), 0.95)
            if s.patch is not None:   # harvest in progress: the rest of the parcel still stands
                j = patch_id[k - 1]
                t.A[:, j], t.V[:, j], t.f[:, j] = t.A[:, k], t.V[:, k], t.f[:, k]
                t.bright[:, j], t.tex[j] = t.bright[:, k], 0.12
                t.A[1, k], t.V[1, k], t.f[1, k] = t.A[0, k], t.V[0, k], t.f[0, k]
                t.bright[1, k] = t.bright[0, k]
            t.tex[k] = 0.12
        elif kind == "orchard":
            f0 = rng.uniform(0.55, 0.75)
            _set(t, k, 0, "orchard_floor", "canopy", f0)
            _set(t, k, 1, "orchard_floor", "canopy", f0 * rng.uniform(*COVER_JITTER["orchard"]))
            t.pattern[k], t.period[k], t.angle[k] = PATTERN_ROWS, rng.uniform(4.5, 6.5), main_angle(geom)
            t.tex[k] = 0.15
        else:
            a, v, f, tex = _STATIC[kind]
            f0 = rng.uniform(*f)
            _set(t, k, 0, a, v, f0)
            f1 = f0 * rng.uniform(*COVER_JITTER[kind]) if kind in COVER_JITTER else f0
            if kind in ("pond",):
                f1 = rng.uniform(*POND_SUMMER_ALGAE)     # summer algae
            _set(t, k, 1, a, v, min(f1, 0.95))
            if kind == "river":                  # muddier water after the summer rains
                t.A[1, k] = EM["water_turbid"] * np.float32(1.12)
            t.tex[k] = tex
    base = 1 + n_land
    for j, roof in enumerate(buildings.ROOF.to_numpy()):
        for d in range(N_DATES):
            _set(t, base + j, d, roof, "crop", 0.0)
    base += n_b + n_s
    for j, mat in enumerate(parts.MATERIAL.to_numpy()):
        i = base + j
        em = {"water_algae": "water_new", BEFORE_BARE: "soil"}.get(mat, mat)
        for d in range(N_DATES):   # a part is drawn on some dates only; set all for safety
            _set(t, i, d, em, "crop", 0.0)
        t.bright[:, i] = np.clip(rng.normal(1.0, 0.04), 0.92, 1.08)
        if mat in MATERIAL_BRIGHT:
            t.bright[:, i] = rng.uniform(*MATERIAL_BRIGHT[mat])
        if mat == "solar":       # rows of panels running east-west, soil and grass between
            for d in range(N_DATES):
                _set(t, i, d, "orchard_floor", "solar", 0.97)
            t.pattern[i], t.period[i], t.angle[i], t.duty[i] = PATTERN_PANELS, rng.uniform(5.0, 7.0), 0.0, 0.7
        elif mat == BEFORE_BARE:     # a bare site before the earthworks: soil, a few weeds
            t.f[:, i] = rng.uniform(0.0, 0.08)
            t.bright[:, i] = rng.uniform(*SOIL_MOISTURE)
        elif mat == "water_muddy":   # clay still in suspension: between clear and muddy water
            w = rng.uniform(*POND_MUDDY)
            t.A[:, i] = (1 - w) * EM["water_new"] + w * EM["water_muddy"]
        elif mat == "water_algae":   # clear water with a bloom of floating algae
            t.f[:, i] = rng.uniform(*POND_ALGAE_F)
    return t


def _set_state(t, k, d, kind, state, rng):
    """Parameters of crop state ``state`` of a ``kind`` parcel at object ``k``, date ``d``."""
    a, (lo, hi) = STATES[state]
    if kind == "paddy" and a == "soil":
        a = "soil_wet"
    _set(t, k, d, a, "crop", rng.uniform(lo, hi))
    if d == BEFORE:
        return
    # After and reference dates lie in the rainy season: flood water, straw and soil vary.
    if state == "flooded":   # clear water over dark mud .. muddy water just after puddling
        w = rng.uniform(*FLOOD_MUDDY)
        t.A[d, k] = (1 - w) * EM["shallow_water"] + w * EM["paddy_turbid"]
    if state in STATE_BRIGHT:
        t.bright[d, k] *= rng.uniform(*STATE_BRIGHT[state])
    elif state in ("young", "bare"):
        t.bright[d, k] *= rng.uniform(*SOIL_MOISTURE)


_STATIC = {  # kind: (background, foreground, cover range, texture)
    "grass": ("soil", "grass", (0.5, 0.75), 0.3),
    "forest": ("understory", "canopy", (0.8, 0.92), 0.25),
    "village": ("yard", "canopy", (0.2, 0.35), 0.9),
    "rural_road": ("concrete_old", "grass", (0.0, 0.05), 0.5),
    "highway": ("asphalt", "grass", (0.0, 0.0), 0.0),
    "river": ("water_turbid", "crop", (0.0, 0.0), 0.0),
    "pond": ("pond_water", "crop", (0.01, 0.04), 0.5),
    "sea": ("sea", "crop", (0.0, 0.0), 0.0),
    "reclaimed": ("sand", "grass", (0.02, 0.08), 0.8),
}


def _crop_story(kind: str, rng: np.random.Generator) -> tuple[str, str, str]:
    """(change kind, before state, after state) of one farmland parcel of class ``kind``."""
    p = SEASON_P[kind]
    change = rng.choice(list(p), p=list(p.values()))
    if change == "flood":
        return change, ("green" if rng.random() < 0.6 else "bare"), "flooded"
    if change == "harvest":
        q = HARVEST_AFTER[kind]
        return change, "green", str(rng.choice(list(q), p=list(q.values())))
    if change == "green_up":
        return change, ("young" if rng.random() < 0.6 else "bare"), "green"
    state = "green" if kind == "paddy" or rng.random() < 0.55 else "young"
    return change, state, state


def reference_stages(land, stories, rng: np.random.Generator) -> list[str]:
    """Each farmland parcel's crop stage a year earlier, on the reference date (``stories`` order).

    With probability :data:`REFERENCE_SAME_STAGE` of its class the stage of this year's after
    date (for a harvest in progress: the harvested state); otherwise another stage: with
    probability :data:`REFERENCE_ADJACENT_P` a neighbour in :data:`CROP_CYCLE` (one step behind or
    ahead, equally likely), else a rotation drawn from the class's after-state distribution
    (:data:`SEASON_P`, :data:`HARVEST_AFTER`) among the states other than this year's.
    """
    kinds = land.KIND.to_numpy()
    out = []
    for s in stories:
        kind = kinds[s.land]
        if rng.random() < REFERENCE_SAME_STAGE[kind]:
            out.append(s.after)
            continue
        if rng.random() >= REFERENCE_ADJACENT_P:
            other = _rotation(kind, s.after, rng)
            if other is not None:
                out.append(other)
                continue
        out.append(_adjacent(kind, s.after, rng))
    return out


def _adjacent(kind: str, state: str, rng: np.random.Generator) -> str:
    """The stage one step behind or ahead of ``state`` in the crop calendar of ``kind``."""
    cycle = CROP_CYCLE[kind] if state in CROP_CYCLE[kind] else CROP_CYCLE["paddy"]
    i = cycle.index(state)
    return cycle[(i + (1 if rng.random() < 0.5 else -1)) % len(cycle)]


def _rotation(kind: str, state: str, rng: np.random.Generator, tries: int = 50) -> str | None:
    """An after-date state of a ``kind`` parcel other than ``state`` (None if none is drawn)."""
    for _ in range(tries):
        other = _crop_story(kind, rng)[2]
        if other != state:
            return other
    return None


def fill_reference(t: ObjectTable, land, buildings, stories, stages,
                   rng: np.random.Generator) -> None:
    """Fill date REFERENCE (2) of table ``t`` in place: the same season a year earlier.

    Objects keep the land use of the before date (true-change parts keep their before
    parameters; which parts show is the renderer's choice of id raster). Static kinds take their
    after-date (same season) parameters with a fresh year-to-year jitter of the ranges used
    between the dates (:data:`COVER_JITTER`, :data:`POND_SUMMER_ALGAE`, the brightness jitter);
    farmland parcels are set to ``stages`` (from :func:`reference_stages`) with every
    parameter (cover, flood muddiness, straw brightness, soil moisture) drawn afresh. A parcel
    harvested in part this year is one state a year earlier (its patch copies it).
    """
    n = len(t.f[REFERENCE])
    t.bright[REFERENCE] = t.bright[BEFORE] * np.clip(rng.normal(1.0, BRIGHT_JITTER_SD, n),
                                                     *BRIGHT_JITTER_CLIP)
    stage_of = {s.land: stage for s, stage in zip(stories, stages)}
    patches = [s.land for s in stories if s.patch is not None]
    patch_id = {k: 1 + len(land) + len(buildings) + j for j, k in enumerate(patches)}
    for k, kind in enumerate(land.KIND.to_numpy(), start=1):
        if kind in SEASON_P:
            _set_state(t, k, REFERENCE, kind, stage_of[k - 1], rng)
            if k - 1 in patch_id:    # not drawn on the reference; kept equal to its parcel
                j = patch_id[k - 1]
                t.A[REFERENCE, j], t.V[REFERENCE, j] = t.A[REFERENCE, k], t.V[REFERENCE, k]
                t.f[REFERENCE, j], t.bright[REFERENCE, j] = t.f[REFERENCE, k], t.bright[REFERENCE, k]
            continue
        t.A[REFERENCE, k], t.V[REFERENCE, k] = t.A[AFTER, k], t.V[AFTER, k]
        f = t.f[AFTER, k]
        if kind in COVER_JITTER:
            f = min(f * rng.uniform(*COVER_JITTER[kind]), 0.95)
        elif kind == "pond":
            f = rng.uniform(*POND_SUMMER_ALGAE)
        t.f[REFERENCE, k] = f
