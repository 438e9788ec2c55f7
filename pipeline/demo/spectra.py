"""Surface reflectance of every demo object on both dates: endmembers, crop seasons, vigour.

Each rendered object (a land-cover polygon, a house, a part of a true change) is a linear mix of
a background endmember A and a foreground endmember V (usually green vegetation) with cover
fraction f, times a brightness factor: ``refl = ((1 - f) * A + f * V) * bright``. Seasonal crop
change is a change of A, V, f of a whole parcel between the dates; it is not land-use change.
Band order everywhere: blue, green, red, nir (GF-2 PMS bands), reflectance 0-1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    "water_new": (0.050, 0.070, 0.050, 0.020),
    "cloud": (0.700, 0.710, 0.720, 0.700),
}
EM = {k: np.asarray(v, np.float32) for k, v in ENDMEMBERS.items()}

#: Crop states: (background endmember, cover fraction range) with crop canopy as foreground.
STATES = {
    "green": ("soil", (0.70, 0.90)), "young": ("soil", (0.12, 0.30)), "bare": ("soil", (0.0, 0.05)),
    "stubble": ("stubble", (0.02, 0.06)), "flooded": ("shallow_water", (0.02, 0.07)),
}
#: Seasonal change between the dates per farmland class: probabilities of each kind.
SEASON_P = {
    "paddy": {"flood": 0.30, "harvest": 0.13, "green_up": 0.02, "none": 0.55},
    "irrigated": {"flood": 0.03, "harvest": 0.15, "green_up": 0.20, "none": 0.62},
    "dry": {"flood": 0.0, "harvest": 0.12, "green_up": 0.30, "none": 0.58},
}
PATTERN_NONE, PATTERN_ROWS, PATTERN_PANELS = 0, 1, 2


@dataclass
class ObjectTable:
    """Per-object rendering parameters; index 0 is the fallback (grass), dates 0=before 1=after."""

    A: np.ndarray        # (2, n, 4) background reflectance
    V: np.ndarray        # (2, n, 4) foreground reflectance
    f: np.ndarray        # (2, n) foreground cover fraction
    bright: np.ndarray   # (2, n) brightness factor
    tex: np.ndarray      # (n,) relative per-pixel variation of f (persistent texture)
    pattern: np.ndarray  # (n,) PATTERN_*
    period: np.ndarray   # (n,) row spacing, m
    angle: np.ndarray    # (n,) row direction, radians from east
    duty: np.ndarray     # (n,) panel share of a row period


def _empty(n):
    return ObjectTable(A=np.zeros((2, n, 4), np.float32), V=np.zeros((2, n, 4), np.float32),
                       f=np.zeros((2, n), np.float32), bright=np.ones((2, n), np.float32),
                       tex=np.zeros(n, np.float32), pattern=np.zeros(n, np.int8),
                       period=np.ones(n, np.float32), angle=np.zeros(n, np.float32),
                       duty=np.ones(n, np.float32))


def _set(t, i, d, a, v="crop", f=0.0):
    t.A[d, i] = EM[a]
    t.V[d, i] = EM[v]
    t.f[d, i] = f


def object_table(land, buildings, parts, rng: np.random.Generator):
    """Rendering parameters of every object, and the seasonal story of each farmland parcel.

    Object ids: 0 fallback, 1..len(land) land features (in ``land`` order), then houses, then
    change parts (after date only).

    Returns
    -------
    table : ObjectTable
    season : list of (land index, kind, before state, after state) for farmland parcels, kind in
        ``flood``, ``harvest``, ``green_up``, ``none``.
    """
    n_land, n_b, n_p = len(land), len(buildings), len(parts)
    t = _empty(1 + n_land + n_b + n_p)
    for d in (0, 1):
        _set(t, 0, d, "soil", "grass", 0.6)
    bright = np.clip(rng.normal(1.0, 0.05, len(t.f[0])), 0.9, 1.1).astype(np.float32)
    t.bright[0] = bright
    t.bright[1] = bright * np.clip(rng.normal(1.0, 0.02, len(bright)), 0.95, 1.05)
    season = []
    for k, (kind, geom) in enumerate(zip(land.KIND.to_numpy(), land.geometry.to_numpy()), start=1):
        if kind in SEASON_P:
            story = _crop_story(kind, rng)
            season.append((k - 1, *story))
            for d, state in enumerate(story[1:]):
                a, (lo, hi) = STATES[state]
                if kind == "paddy" and a == "soil":
                    a = "soil_wet"
                _set(t, k, d, a, "crop", rng.uniform(lo, hi))
            if story[0] == "none":   # crop vigour differs between dates everywhere
                t.f[1, k] = min(t.f[0, k] * rng.uniform(0.85, 1.15), 0.95)
            t.tex[k] = 0.12
        elif kind == "orchard":
            f0 = rng.uniform(0.55, 0.75)
            _set(t, k, 0, "orchard_floor", "canopy", f0)
            _set(t, k, 1, "orchard_floor", "canopy", f0 * rng.uniform(0.95, 1.08))
            t.pattern[k], t.period[k], t.angle[k] = PATTERN_ROWS, rng.uniform(4.5, 6.5), main_angle(geom)
            t.tex[k] = 0.15
        else:
            a, v, f, tex = _STATIC[kind]
            f0 = rng.uniform(*f)
            _set(t, k, 0, a, v, f0)
            f1 = f0 * rng.uniform(0.9, 1.1) if kind in ("grass", "forest", "village") else f0
            if kind in ("pond",):
                f1 = rng.uniform(0.02, 0.08)     # summer algae
            _set(t, k, 1, a, v, min(f1, 0.95))
            if kind == "river":                  # muddier water after the summer rains
                t.A[1, k] = EM["water_turbid"] * np.float32(1.12)
            t.tex[k] = tex
    base = 1 + n_land
    for j, roof in enumerate(buildings.ROOF.to_numpy()):
        for d in (0, 1):
            _set(t, base + j, d, roof, "crop", 0.0)
    base += n_b
    for j, mat in enumerate(parts.MATERIAL.to_numpy()):
        i = base + j
        for d in (0, 1):         # the before date never shows change parts; set both for safety
            _set(t, i, d, mat, "crop", 0.0)
        t.bright[:, i] = np.clip(rng.normal(1.0, 0.04), 0.92, 1.08)
        if mat == "solar":       # rows of panels running east-west, soil and grass between
            for d in (0, 1):
                _set(t, i, d, "orchard_floor", "solar", 0.97)
            t.pattern[i], t.period[i], t.angle[i], t.duty[i] = PATTERN_PANELS, rng.uniform(5.0, 7.0), 0.0, 0.7
    return t, season


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
        return change, "green", "stubble"
    if change == "green_up":
        return change, ("young" if rng.random() < 0.6 else "bare"), "green"
    state = "green" if kind == "paddy" or rng.random() < 0.55 else "young"
    return change, state, state
