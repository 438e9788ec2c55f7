"""Priority of change polygons for field verification: score YXJF, level YXJ, reason YXJLY.

The default weights encode the policy order of DOMAIN.md (most urgent first):

1. construction on permanent basic farmland (永久基本农田 非农化);
2. construction or mining in the ecological red line or a protected area's core zone;
3. other farmland turned to construction;
4. farmland turned to ponds / lakes (KT on 耕地);
5. everything else;

and change inside already-approved construction land (已批建设用地) ranks lower.

Score (dimensionless)::

    layer  = Σ_layer [hit[layer] if overlap ≥ min_overlap_mu] + per_mu[layer] · overlap_亩
    base   = per_mu_any · JCMJM
    YXJF   = tblx[TBLX] · confidence[ZXDJ] · (1 − approved_discount · PZMJ/JCMJ)
             · (1 − facility_discount · SSNYDMJ/JCMJ) · (layer + base) + repeat_bonus · [QQJCBH not blank]

``hit`` makes the category dominate (a 0.2 亩 house on basic farmland outranks a 3 亩 one on
plain farmland); ``per_mu`` orders polygons of one category by size. Basic farmland lies on
farmland, so a house on it collects both the JBNTMJ and the GDMJ terms. With the defaults,
1 亩 polygons at high confidence score 94 (category 1), 47 (2), 24 (3), 4.8 (4) and ≤ 1.2 (5). Levels: YXJ = 1 when
YXJF ≥ level1_min, 2 when ≥ level2_min, else 3.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd

from overlay.areas import MU_M2
from tiles.errors import ConfigError

#: Chinese names of the change types (TBLX codes).
TBLX_NAMES = {"20": "建(构)筑物", "YH": "硬化", "TD": "推填土", "DL": "道路", "GF": "光伏",
              "KT": "坑塘/水面", "QT": "其他"}
#: Overlap columns scored and their phrase in the reason text.
LAYER_LABELS = {"JBNTMJ": "永久基本农田", "STHXMJ": "生态保护红线", "BHQHXMJ": "自然保护地核心保护区",
                "BHQMJ": "自然保护地", "GDMJ": "耕地"}

DEFAULT_PRIORITY: dict = {
    # points once the polygon covers at least min_overlap_mu of the layer
    "hit": {"JBNTMJ": 60.0, "STHXMJ": 40.0, "BHQHXMJ": 40.0, "BHQMJ": 10.0, "GDMJ": 20.0},
    # points per 亩 of overlap
    "per_mu": {"JBNTMJ": 10.0, "STHXMJ": 6.0, "BHQHXMJ": 6.0, "BHQMJ": 2.0, "GDMJ": 3.0},
    "per_mu_any": 1.0,           # points per 亩 of the polygon itself
    "min_overlap_mu": 0.05,      # smaller overlaps are edge slivers: no hit points, not in the reason
    # factor per change type: construction-like types full, ponds and others far lower
    "tblx": {"20": 1.0, "YH": 0.9, "GF": 0.9, "DL": 0.8, "TD": 0.7, "KT": 0.2, "QT": 0.05},
    "tblx_unknown": 0.5,         # factor for a missing or unknown TBLX
    "confidence": {"高": 1.0, "中": 0.8, "低": 0.6},
    "confidence_unknown": 0.8,   # factor when ZXDJ / ZXD are missing
    "confidence_cuts": [0.5, 0.8],  # ZXD → 低 below the first, 高 from the second (when ZXDJ absent)
    "approved_discount": 0.8,    # the score shrinks by this fraction × share of the polygon in PZMJ
    "facility_discount": 0.3,    # … and by this × share in filed facility farmland (SSNYDMJ, 设施农用地)
    "repeat_bonus": 10.0,        # added when QQJCBH (an earlier quarter's polygon) is set
    "level1_min": 40.0,
    "level2_min": 4.0,
}
_MAPPINGS = ("hit", "per_mu", "tblx", "confidence")


def _number(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"[priority] {key} = {value!r}: must be a finite number")
    if value < 0:
        raise ConfigError(f"[priority] {key} = {value!r}: must not be negative")
    return float(value)


def priority_from_dict(d: dict | None) -> dict:
    """Validate a ``[priority]`` TOML table and merge it over ``DEFAULT_PRIORITY``.

    Parameters
    ----------
    d : dict or None
        Any subset of the keys of ``DEFAULT_PRIORITY``; sub-tables (``hit``, ``per_mu``,
        ``tblx``, ``confidence``) are merged key by key.

    Returns
    -------
    dict
        A complete weights dict (a new object; the defaults are never modified).

    Raises
    ------
    ConfigError
        Unknown key, non-numeric or negative weight, discount outside [0, 1], confidence cuts
        not increasing in [0, 1], or level1_min < level2_min.
    """
    w = copy.deepcopy(DEFAULT_PRIORITY)
    if d is None:
        return w
    if not isinstance(d, dict):
        raise ConfigError(f"[priority] must be a table, got {type(d).__name__}")
    for key, value in d.items():
        if key not in w:
            raise ConfigError(f"[priority] unknown key {key!r}; known keys: {sorted(w)}")
        if key in _MAPPINGS:
            if not isinstance(value, dict):
                raise ConfigError(f"[priority] {key} must be a table like {{ {next(iter(w[key]))!r} = 1.0 }}, got {value!r}")
            allowed = set(DEFAULT_PRIORITY[key]) if key in ("hit", "per_mu", "confidence") else None
            for sub, v in value.items():
                if allowed is not None and sub not in allowed:
                    raise ConfigError(f"[priority.{key}] unknown key {sub!r}; known keys: {sorted(allowed)}")
                w[key][str(sub)] = _number(f"{key}.{sub}", v)
        elif key == "confidence_cuts":
            if (not isinstance(value, (list, tuple)) or len(value) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                    or not 0 <= value[0] <= value[1] <= 1):
                raise ConfigError(f"[priority] confidence_cuts = {value!r}: give two increasing numbers in [0, 1], e.g. [0.5, 0.8]")
            w[key] = [float(v) for v in value]
        else:
            w[key] = _number(key, value)
    for key in ("approved_discount", "facility_discount"):
        if w[key] > 1:
            raise ConfigError(f"[priority] {key} = {w[key]}: must be in [0, 1]")
    if w["level1_min"] < w["level2_min"]:
        raise ConfigError(f"[priority] level1_min = {w['level1_min']} is below level2_min = {w['level2_min']}; level 1 must need the higher score")
    return w


def _mu_text(mu: float) -> str:
    return f"{mu:.1f}" if mu >= 0.1 else f"{mu:.2f}"


def _column(gdf, name, default=0.0) -> np.ndarray:
    if name in gdf.columns:
        return pd.to_numeric(gdf[name], errors="coerce").fillna(default).to_numpy(dtype=float)
    return np.full(len(gdf), default, dtype=float)


def _text(gdf, name) -> np.ndarray:
    if name not in gdf.columns:
        return np.full(len(gdf), "", dtype=object)
    return gdf[name].fillna("").astype(str).str.strip().to_numpy(dtype=object)


def confidence_levels(gdf, cuts) -> np.ndarray:
    """ZXDJ when present and valid, else 低 / 中 / 高 from ZXD cut at ``cuts``; "" when unknown."""
    level = _text(gdf, "ZXDJ")
    known = np.isin(level, ("低", "中", "高"))
    if "ZXD" in gdf.columns:
        p = pd.to_numeric(gdf["ZXD"], errors="coerce").to_numpy(dtype=float)
        from_p = np.where(np.isnan(p), "", np.where(p >= cuts[1], "高", np.where(p >= cuts[0], "中", "低")))
        level = np.where(known, level, from_p)
    else:
        level = np.where(known, level, "")
    return level.astype(object)


def prioritize(gdf, weights: dict | None = None):
    """Score, level and reason for every change polygon.

    Parameters
    ----------
    gdf : geopandas.GeoDataFrame or pandas.DataFrame
        Output of ``overlay_changes``: JCMJ and the overlap columns in m² (JBNTMJ, STHXMJ,
        BHQHXMJ, BHQMJ, GDMJ, PZMJ, SSNYDMJ; missing ones count as 0), plus TBLX, ZXD / ZXDJ and QQJCBH
        when available.
    weights : dict, optional
        A ``[priority]`` table (partial allowed), validated by :func:`priority_from_dict`.

    Returns
    -------
    Same type as ``gdf`` (a copy) with YXJF (float score, 2 decimals), YXJ (int 1/2/3, 1 most
    urgent) and YXJLY (one-line Chinese reason, e.g. "占永久基本农田1.2亩；疑似建(构)筑物；置信度高").

    Raises
    ------
    ConfigError
        Invalid weights.
    """
    w = priority_from_dict(weights)
    out = gdf.copy()
    n = len(out)
    jcmj = _column(out, "JCMJ")
    base = w["per_mu_any"] * jcmj / MU_M2
    layer_score = np.zeros(n)
    reasons = [[] for _ in range(n)]
    for col, label in LAYER_LABELS.items():
        mu = _column(out, col) / MU_M2
        hit = mu >= w["min_overlap_mu"]
        layer_score += np.where(hit, w["hit"][col], 0.0) + w["per_mu"][col] * mu
        for i in np.flatnonzero(hit):
            reasons[i].append(f"占{label}{_mu_text(mu[i])}亩")

    tblx = _text(out, "TBLX")
    type_factor = np.array([w["tblx"].get(t, w["tblx_unknown"]) for t in tblx], dtype=float)
    level_text = confidence_levels(out, w["confidence_cuts"])
    conf_factor = np.array([w["confidence"].get(c, w["confidence_unknown"]) for c in level_text], dtype=float)
    pzmj = _column(out, "PZMJ")
    approved_share = np.clip(np.divide(pzmj, jcmj, out=np.zeros(n), where=jcmj > 0), 0.0, 1.0)
    earlier = _text(out, "QQJCBH")
    repeat = earlier != ""

    ssnyd = _column(out, "SSNYDMJ")
    facility_share = np.clip(np.divide(ssnyd, jcmj, out=np.zeros(n), where=jcmj > 0), 0.0, 1.0)
    score = (type_factor * conf_factor * (1.0 - w["approved_discount"] * approved_share)
             * (1.0 - w["facility_discount"] * facility_share) * (layer_score + base))
    score += np.where(repeat, w["repeat_bonus"], 0.0)
    score = np.round(score, 2)
    level = np.where(score >= w["level1_min"], 1, np.where(score >= w["level2_min"], 2, 3)).astype(np.int64)

    for i in range(n):
        r = reasons[i]
        # 核心保护区 is part of 自然保护地: name the stronger one only.
        if any(s.startswith("占自然保护地核心保护区") for s in r):
            r[:] = [s for s in r if not s.startswith("占自然保护地") or s.startswith("占自然保护地核心保护区")]
        if not r:
            r.append("未占耕地及生态保护区域")
        name = TBLX_NAMES.get(tblx[i])
        r.append(f"疑似{name}" if name else "类型未定")
        if level_text[i]:
            r.append(f"置信度{level_text[i]}")
        pz_mu = pzmj[i] / MU_M2
        if approved_share[i] >= 0.999:
            r.append("位于已批建设用地内")
        elif pz_mu >= w["min_overlap_mu"]:
            r.append(f"部分位于已批建设用地{_mu_text(pz_mu)}亩")
        ss_mu = ssnyd[i] / MU_M2
        if facility_share[i] >= 0.999:
            r.append("位于设施农用地备案范围内")
        elif ss_mu >= w["min_overlap_mu"]:
            r.append(f"部分位于设施农用地备案{_mu_text(ss_mu)}亩")
        if repeat[i]:
            r.append(f"前期图斑{earlier[i]}重复出现")
    out["YXJF"] = score
    out["YXJ"] = level
    out["YXJLY"] = ["；".join(r) for r in reasons]
    return out
