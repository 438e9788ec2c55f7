"""Object recall and precision of change polygons against reference (truth) polygons.

Matching rule (one place, quoted in every result): a change polygon C *hits* a truth
polygon T when area(C ∩ T) >= 25 % of area(T) or area(C ∩ T) >= 50 % of area(C).
The first clause credits a detection that covers a good part of a change; the second
credits a small detection lying mostly inside a large change (a big site found in pieces).
Areas are planar in a common projected CRS (the changes' CRS when projected, else the
truth's, else the UTM zone of the changes); only ratios of areas are used, so the
projection's scale error cancels.

- recall: share of truth polygons with AREA_M2 >= ``min_area_m2`` (computed on the CGCS2000
  ellipsoid when AREA_M2 is absent) hit by at least one change polygon. An OUTSIDE flag on
  the truth is ignored: a change outside every county is still a change found.
- precision: share of change polygons that hit at least one truth polygon of any size.
- per TBLX: recall over the truth polygons of that type (truth's TBLX), precision over the
  change polygons of that type (the detections' TBLX).
- on basic farmland (when the truth has ON_JBNT): recall over the truth polygons on permanent
  basic farmland, precision over the change polygons the overlay put on it (JBNTMJ > 0).
- per ZXDJ (confidence level, when present): precision over the change polygons of that level,
  so an analyst sees whether 高 means more than 中.
- per YXJ: precision over the change polygons of that level; recall counts a found truth
  polygon at the most urgent level among the change polygons that hit it, so the levels'
  recalls add up to the overall recall (``recall_cum``: found at this level or a more urgent one).
"""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Geod

from tiles.errors import InputError

RULE = ("hit: area(change ∩ truth) >= 25 % of the truth polygon "
        "or >= 50 % of the change polygon")
TRUTH_SHARE = 0.25
CHANGE_SHARE = 0.50
_NONE = "(none)"


def evaluate(changes: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, *,
             min_area_m2: float = 200.0) -> dict:
    """Recall and precision of ``changes`` against ``truth`` (see the module docstring).

    Parameters
    ----------
    changes : GeoDataFrame
        Detected change polygons, any CRS; TBLX and YXJ used when present.
    truth : GeoDataFrame
        Reference polygons, any CRS; AREA_M2 (m²) and TBLX used when present.
    min_area_m2 : float
        Truth polygons smaller than this are left out of recall (the minimum mapping unit).

    Returns
    -------
    dict
        ``rule``, ``min_area_m2``, ``crs`` (where areas were measured), ``overall``,
        ``by_tblx`` (code -> counts and ratios), ``on_basic_farmland`` (counts and ratios, or
        None without ON_JBNT in the truth), ``by_zxdj`` (level -> counts and precision),
        ``by_yxj`` (level -> counts and ratios),
        ``invalid_fixed`` (geometries repaired with make_valid). Counts are ints; a ratio
        with an empty denominator is None. Keys of the count dicts: truth, truth_hit,
        recall, changes, changes_hit, precision (+ f1 overall, recall_cum per level).

    Examples
    --------
    >>> import geopandas as gpd
    >>> from shapely.geometry import box
    >>> t = gpd.GeoDataFrame({"AREA_M2": [400.0, 400.0]},
    ...                      geometry=[box(0, 0, 20, 20), box(100, 0, 120, 20)], crs=4545)
    >>> c = gpd.GeoDataFrame(geometry=[box(0, 0, 20, 10), box(500, 0, 520, 20)], crs=4545)
    >>> r = evaluate(c, t)
    >>> r["overall"]["recall"], r["overall"]["precision"]
    (0.5, 0.5)
    """
    for name, g in (("changes", changes), ("truth", truth)):
        if g.crs is None:
            raise InputError(f"evaluate: the {name} layer has no CRS; set it (e.g. EPSG:4545)")
    crs = _work_crs(changes, truth)
    cg, c_fixed = _valid(changes.geometry.to_crs(crs).to_numpy())
    tg, t_fixed = _valid(truth.geometry.to_crs(crs).to_numpy())
    c_area = shapely.area(cg)
    t_area = shapely.area(tg)

    ti, ci = _pairs(tg, cg)
    inter = shapely.area(shapely.intersection(tg[ti], cg[ci])) if len(ti) else np.zeros(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        hit = (inter >= TRUTH_SHARE * t_area[ti]) | (inter >= CHANGE_SHARE * c_area[ci])
    hit &= inter > 0
    ti, ci = ti[hit], ci[hit]

    nt, nc = len(tg), len(cg)
    truth_hit = np.zeros(nt, dtype=bool)
    truth_hit[ti] = True
    change_hit = np.zeros(nc, dtype=bool)
    change_hit[ci] = True
    eligible = _truth_area(truth) >= float(min_area_m2)

    c_yxj = _ints(changes, "YXJ")
    best = np.full(nt, np.iinfo(np.int64).max, dtype=np.int64)  # most urgent level hitting T
    if c_yxj is not None and len(ti):
        np.minimum.at(best, ti, c_yxj[ci])

    overall = _counts(eligible, truth_hit, np.ones(nc, dtype=bool), change_hit)
    p, r = overall["precision"], overall["recall"]
    overall["f1"] = None if p is None or r is None or p + r == 0 else 2 * p * r / (p + r)

    by_tblx = {}
    t_tblx = _codes(truth, "TBLX")
    c_tblx = _codes(changes, "TBLX")
    codes = sorted(set(t_tblx if t_tblx is not None else []) | set(c_tblx if c_tblx is not None else []))
    for code in codes:
        tsel = (t_tblx == code) if t_tblx is not None else None
        csel = (c_tblx == code) if c_tblx is not None else np.zeros(nc, dtype=bool)
        by_tblx[code] = _counts(eligible & tsel if tsel is not None else None,
                                truth_hit, csel, change_hit)

    on_jbnt = None
    if "ON_JBNT" in truth:
        t_jbnt = truth["ON_JBNT"].fillna(False).to_numpy(bool)
        c_jbnt = (changes["JBNTMJ"].fillna(0).to_numpy(np.float64) > 0 if "JBNTMJ" in changes
                  else np.zeros(nc, dtype=bool))
        on_jbnt = _counts(eligible & t_jbnt, truth_hit, c_jbnt, change_hit)

    by_zxdj = {}
    c_zxdj = _codes(changes, "ZXDJ")
    if c_zxdj is not None:
        for level in [lv for lv in ("高", "中", "低") if lv in set(c_zxdj)]:
            by_zxdj[level] = _counts(None, truth_hit, c_zxdj == level, change_hit)

    by_yxj = {}
    if c_yxj is not None:
        n_elig = int(eligible.sum())
        for level in sorted(set(c_yxj.tolist())):
            found = int((eligible & truth_hit & (best == level)).sum())
            found_cum = int((eligible & truth_hit & (best <= level)).sum())
            d = _counts(None, truth_hit, c_yxj == level, change_hit)
            d.update(truth=n_elig, truth_hit=found, recall=_ratio(found, n_elig),
                     recall_cum=_ratio(found_cum, n_elig))
            by_yxj[int(level)] = d

    return {
        "rule": RULE,
        "min_area_m2": float(min_area_m2),
        "crs": crs.to_string(),
        "overall": overall,
        "by_tblx": by_tblx,
        "on_basic_farmland": on_jbnt,
        "by_zxdj": by_zxdj,
        "by_yxj": by_yxj,
        "invalid_fixed": {"changes": c_fixed, "truth": t_fixed},
    }


def format_evaluation(result: dict) -> str:
    """A compact plain-text table of :func:`evaluate`'s result for the terminal."""
    head = f"{'':<12}{'truth':>7}{'found':>7}{'recall':>9}{'changes':>9}{'hits':>7}{'precision':>11}"
    lines = [f"Evaluation — {result['rule']}",
             f"truth polygons >= {result['min_area_m2']:g} m² for recall; areas in {result['crs']}",
             head, "-" * len(head)]

    def row(label: str, d: dict, cum: bool = False) -> str:
        truth = "" if d["truth"] is None or cum else d["truth"]
        found = "" if d["truth"] is None else d["truth_hit"]
        line = (f"{label:<12}{truth:>7}{found:>7}{_pct(d['recall']):>9}"
                f"{d['changes']:>9}{d['changes_hit']:>7}{_pct(d['precision']):>11}")
        return line + (f"   recall at this level or above {_pct(d['recall_cum']).strip()}" if cum else "")

    lines.append(row("all", result["overall"]))
    for code, d in result["by_tblx"].items():
        lines.append(row(f"TBLX {code}", d))
    if result.get("on_basic_farmland"):
        lines.append(row("on JBNT", result["on_basic_farmland"]))
    for level, d in result.get("by_zxdj", {}).items():
        lines.append(row(f"ZXDJ {level}", d))
    if result["by_yxj"]:
        lines.append("YXJ rows: found = truth polygons whose most urgent hit has this level")
        for level, d in result["by_yxj"].items():
            lines.append(row(f"YXJ {level}", d, cum=True))
    f1 = result["overall"].get("f1")
    lines.append(f"F1 {_pct(f1).strip()}; invalid geometries repaired: "
                 f"{result['invalid_fixed']['changes']} changes, {result['invalid_fixed']['truth']} truth")
    return "\n".join(lines)


def _counts(tsel: np.ndarray | None, truth_hit: np.ndarray,
            csel: np.ndarray, change_hit: np.ndarray) -> dict:
    d = {"changes": int(csel.sum()), "changes_hit": int((csel & change_hit).sum())}
    d["precision"] = _ratio(d["changes_hit"], d["changes"])
    if tsel is None:
        d.update(truth=None, truth_hit=None, recall=None)
    else:
        d["truth"] = int(tsel.sum())
        d["truth_hit"] = int((tsel & truth_hit).sum())
        d["recall"] = _ratio(d["truth_hit"], d["truth"])
    return {k: d[k] for k in ("truth", "truth_hit", "recall", "changes", "changes_hit", "precision")}


def _ratio(a: int, b: int) -> float | None:
    return None if b == 0 else a / b


def _pct(v: float | None) -> str:
    return "  —" if v is None else f"{100 * v:5.1f} %"


def _work_crs(changes: gpd.GeoDataFrame, truth: gpd.GeoDataFrame) -> CRS:
    for g in (changes, truth):
        if CRS.from_user_input(g.crs).is_projected:
            return CRS.from_user_input(g.crs)
    src = changes if len(changes) else truth
    if len(src) == 0:
        return CRS.from_epsg(4545)
    return src.estimate_utm_crs()


def _valid(geoms: np.ndarray) -> tuple[np.ndarray, int]:
    ok = shapely.is_valid(geoms) | shapely.is_missing(geoms)
    n_bad = int((~ok).sum())
    if n_bad:
        geoms = geoms.copy()
        geoms[~ok] = shapely.make_valid(geoms[~ok])
    return geoms, n_bad


def _pairs(tg: np.ndarray, cg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(tg) == 0 or len(cg) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    tree = shapely.STRtree(cg)
    ti, ci = tree.query(tg, predicate="intersects")
    return ti.astype(np.int64), ci.astype(np.int64)


def _truth_area(truth: gpd.GeoDataFrame) -> np.ndarray:
    """AREA_M2, or the ellipsoidal area on CGCS2000 where AREA_M2 is absent or blank, m²."""
    area = (pd.to_numeric(truth["AREA_M2"], errors="coerce").to_numpy(dtype=float)
            if "AREA_M2" in truth else np.full(len(truth), np.nan))
    todo = ~np.isfinite(area)
    if todo.any():
        geod = Geod(ellps="GRS80")  # CGCS2000's ellipsoid to well under a millimetre
        ll = truth.geometry[todo].to_crs(4490)
        area[todo] = [abs(geod.geometry_area_perimeter(g)[0]) if g is not None else 0.0
                      for g in ll]
    return area


def _ints(df: pd.DataFrame, col: str) -> np.ndarray | None:
    if col not in df:
        return None
    v = pd.to_numeric(df[col], errors="coerce")
    if v.isna().any():
        raise InputError(f"evaluate: column {col} has blank values; run overlay before evaluating")
    return v.to_numpy().astype(np.int64)


def _codes(df: pd.DataFrame, col: str) -> np.ndarray | None:
    if col not in df:
        return None
    return np.array([_NONE if pd.isna(v) or not str(v).strip() else str(v) for v in df[col]],
                    dtype=object)
