"""The registry across quarters: ``<workdir>/registry.gpkg``, every issued polygon with its verdict.

A run reads it in the overlay stage to link a new polygon to an earlier quarter's (QQJCBH) and
to hold back repeats of polygons already judged 合法 or 伪变化 that have not grown; after export
it records the polygons it issued; ``tianyan ingest`` records the counties' verdicts. Geometry
is stored in CGCS2000 lon/lat (EPSG:4490) so quarters processed in different CRSs compare.
The file is always replaced whole (written beside it, then renamed): a reader never sees half.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from pipeline.atomic import atomic_path
from pipeline.quarter import Quarter
from pipeline.schema import SCHEMA as RUN_SCHEMA, VERDICT_FIELDS, VERDICTS
from tiles.errors import ConfigError, InputFileError

log = logging.getLogger("tianyan")

REGISTRY_NAME = "registry.gpkg"
LAYER = "registry"
REGISTRY_CRS = "EPSG:4490"
LOCK_NAME = ".registry.lock"
GROWTH_TOLERANCE = 1e-6   # the 4490 round trip of stored polygons moves areas by ~1e-9 relative

STATUS_ISSUED, STATUS_VERIFIED, STATUS_WITHDRAWN = "已下发", "已核查", "已撤销"
RECTIFIED = ("拆除", "补办")
ZGZT_VALUES = ("拆除", "补办", "未整改")
"""整改情况 of an illegal polygon: demolished, retro-approved, or not (yet) rectified."""

# Fields only the registry has; the others take their 中文 and kind from pipeline.schema.
_REGISTRY_ONLY = {
    "JCJD": ("监测季度", "text"),
    "XFRQ": ("下发日期", "text"),
    "ZT": ("状态", "text"),
    "ZGZT": ("整改情况", "text"),
    "HSRQ": ("回收日期", "text"),
    "HSWJ": ("回收文件", "text"),
    "RUNID": ("运行编号", "text"),
}
_ORDER = ("JCBH", "XZQDM", "XZQMC", "JCJD", "QQJCBH", "TBLX", "JCMJ", "JCMJM", "GDMJ", "JBNTMJ",
          "YXJ", "PCBH", "XFRQ", "ZT", *VERDICT_FIELDS, "ZGZT", "HSRQ", "HSWJ", "RUNID")
_RUN = {f: (zh, kind) for f, zh, kind in RUN_SCHEMA}
# (field, 中文, kind) in file order; kind: text, float, int.
SCHEMA: tuple[tuple[str, str, str], ...] = tuple(
    (f, *(_REGISTRY_ONLY.get(f) or _RUN[f])) for f in _ORDER)
FIELDS = tuple(f for f, _, _ in SCHEMA)
FIELDS_ZH = {f: zh for f, zh, _ in SCHEMA}
KINDS = {f: kind for f, _, kind in SCHEMA}
RETURNED_FIELDS = (*VERDICT_FIELDS, "ZGZT")
"""What a county fills in; the rest is what the province issued."""


@dataclass(frozen=True)
class RegistryParams:
    """The ``[registry]`` settings (configs/default.toml documents them)."""

    enabled: bool = True
    min_overlap: float = 0.1
    max_growth: float = 1.2
    suppress_verdicts: tuple[str, ...] = ("合法", "伪变化")

    @classmethod
    def from_dict(cls, d: dict | None) -> "RegistryParams":
        """Check ``[registry]`` values; raise ConfigError naming the key and the fix."""
        d = dict(d or {})
        p = cls(enabled=bool(d.get("enabled", True)),
                min_overlap=float(d.get("min_overlap", cls.min_overlap)),
                max_growth=float(d.get("max_growth", cls.max_growth)),
                suppress_verdicts=tuple(d.get("suppress_verdicts", cls.suppress_verdicts)))
        if not 0 < p.min_overlap <= 1:
            raise ConfigError(f"[registry].min_overlap = {p.min_overlap}: give a share in (0, 1], e.g. 0.1")
        if not p.max_growth >= 1:
            raise ConfigError(f"[registry].max_growth = {p.max_growth}: give a factor >= 1, e.g. 1.2")
        bad = [v for v in p.suppress_verdicts if v not in VERDICTS]
        if bad:
            raise ConfigError(f"[registry].suppress_verdicts: {bad[0]!r} is not a verdict "
                              f"(one of {', '.join(VERDICTS)})")
        return p


def registry_path(workdir: str | os.PathLike) -> Path:
    return Path(workdir) / REGISTRY_NAME


def empty_registry() -> gpd.GeoDataFrame:
    cols = {f: pd.Series(dtype="float64" if k == "float" else "int64" if k == "int" else object)
            for f, _, k in SCHEMA}
    return gpd.GeoDataFrame(cols, geometry=gpd.GeoSeries([], crs=REGISTRY_CRS), crs=REGISTRY_CRS)


def read_registry(path: str | os.PathLike) -> gpd.GeoDataFrame:
    """The registry as a GeoDataFrame in EPSG:4490 (empty with every field when there is none).

    Text fields hold "" for blank.
    """
    path = Path(path)
    if not path.exists():
        return empty_registry()
    try:
        gdf = pyogrio.read_dataframe(path, layer=LAYER)
    except Exception as exc:  # noqa: BLE001 - any driver error: name the file and the fix
        raise InputFileError(f"{path}: the registry cannot be read ({exc}); restore it from a backup "
                             "or move it away to start a new one") from None
    missing = [f for f in FIELDS if f not in gdf]
    if missing:
        raise InputFileError(f"{path}: layer {LAYER!r} lacks field(s) {', '.join(missing)}; "
                             "it is not a Tianyan registry")
    return _typed(gdf)


def write_registry(gdf: gpd.GeoDataFrame, path: str | os.PathLike) -> Path:
    """Replace the registry file atomically (one layer written in one transaction, then renamed)."""
    path = Path(path)
    out = _typed(gdf.to_crs(REGISTRY_CRS) if gdf.crs is not None else gdf.set_crs(REGISTRY_CRS))
    out = out.sort_values(["JCJD", "JCBH"], kind="mergesort").reset_index(drop=True)
    out = out[list(FIELDS) + [out.geometry.name]]
    with atomic_path(path) as tmp:
        pyogrio.write_dataframe(out, tmp, layer=LAYER, driver="GPKG", promote_to_multi=True)
    return path


def _typed(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    gdf = gdf.copy()
    n = len(gdf)
    for f, _, kind in SCHEMA:
        col = gdf[f] if f in gdf else pd.Series([None] * n, index=gdf.index, dtype=object)
        if kind == "float":
            gdf[f] = pd.to_numeric(col, errors="coerce").astype("float64")
        elif kind == "int":
            gdf[f] = pd.to_numeric(col, errors="coerce").fillna(0).round().astype("int64")
        else:
            gdf[f] = pd.Series([_text(v) for v in col], index=gdf.index, dtype=object)
    return gdf


def _text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and math.isnan(v):
        return ""
    return str(v)


def _quarter_key(text: str) -> tuple[int, int]:
    q = Quarter.parse(text)
    return (q.year, q.q)


# ---------------------------------------------------------------------------------------------
# matching a new quarter against earlier ones
def match_earlier(changes: gpd.GeoDataFrame, registry: gpd.GeoDataFrame, quarter: str,
                  params: RegistryParams) -> tuple[gpd.GeoDataFrame, list[dict]]:
    """Link each new polygon to the earlier polygon it repeats; hold back judged repeats.

    Parameters
    ----------
    changes : GeoDataFrame
        This quarter's change polygons in the processing CRS (metres, e.g. EPSG:4545).
    registry : GeoDataFrame
        :func:`read_registry`; only polygons of quarters before ``quarter`` that were not
        withdrawn are matched (so rerunning a quarter never matches itself).
    quarter : str
        e.g. "2026Q3".
    params : RegistryParams
        ``min_overlap``: intersection / area of the smaller polygon for a pair to count;
        ``max_growth`` and ``suppress_verdicts``: see below.

    Returns
    -------
    issued : GeoDataFrame
        The rows of ``changes`` to issue, QQJCBH set to the JCBH of the earlier polygon with
        the latest quarter, then the largest overlap ("" for none). Order and index kept.
    suppressed : list of dict
        Rows held back: the latest earlier polygon was judged one of ``suppress_verdicts`` and
        growth = area / area of its part inside polygons so judged is at most ``max_growth``.
        Each: QQJCBH, JCJD and HCJG of that earlier polygon, XZQDM, JCMJ, JD, WD, growth and
        ``reason`` (Chinese, for the summary).
    """
    changes = changes.copy()
    changes["QQJCBH"] = ""
    earlier = registry
    if len(registry):
        key = _quarter_key(quarter)
        keep = np.array([_quarter_key(q) < key for q in registry["JCJD"]], dtype=bool)
        earlier = registry[keep & (registry["ZT"] != STATUS_WITHDRAWN).to_numpy()]
    if not params.enabled or not len(earlier) or not len(changes):
        return changes, []
    earlier = earlier.to_crs(changes.crs).reset_index(drop=True)
    new_geom = shapely.make_valid(changes.geometry.to_numpy())
    old_geom = shapely.make_valid(earlier.geometry.to_numpy())
    left, right = shapely.STRtree(old_geom).query(new_geom, predicate="intersects")
    inter = shapely.area(shapely.intersection(new_geom[left], old_geom[right]))
    smaller = np.minimum(shapely.area(new_geom[left]), shapely.area(old_geom[right]))
    ok = inter >= params.min_overlap * smaller
    left, right, inter = left[ok], right[ok], inter[ok]

    qkeys = [_quarter_key(q) for q in earlier["JCJD"]]
    judged = earlier["HCJG"].isin(params.suppress_verdicts).to_numpy()
    qq = np.full(len(changes), "", dtype=object)
    suppressed_rows: list[int] = []
    suppressed: list[dict] = []
    for i in np.unique(left):
        sel = np.flatnonzero(left == i)
        # latest quarter first, then the largest overlap, then JCBH (deterministic)
        best = min(sel, key=lambda k: (tuple(-v for v in qkeys[right[k]]), -round(float(inter[k]), 6),
                                       earlier["JCBH"].iloc[right[k]]))
        j = right[best]
        qq[i] = earlier["JCBH"].iloc[j]
        if not judged[j]:
            continue
        ground = shapely.union_all(old_geom[right[sel][judged[right[sel]]]])
        area = float(shapely.area(new_geom[i]))
        covered = float(shapely.area(shapely.intersection(new_geom[i], ground)))
        growth = area / covered if covered > 0 else math.inf
        if growth > params.max_growth + GROWTH_TOLERANCE:
            continue
        row = changes.iloc[i]
        suppressed_rows.append(i)
        suppressed.append({
            "QQJCBH": str(qq[i]), "JCJD": earlier["JCJD"].iloc[j], "HCJG": earlier["HCJG"].iloc[j],
            "XZQDM": _text(row.get("XZQDM")), "JCMJ": _round(row.get("JCMJ", area), 2),
            "JD": _round(row.get("JD"), 6), "WD": _round(row.get("WD"), 6), "growth": round(growth, 3),
            "reason": (f"重复图斑：与 {qq[i]}（{earlier['JCJD'].iloc[j]}，核查结果“{earlier['HCJG'].iloc[j]}”）"
                       f"重叠，面积为已核查部分的 {growth:.2f} 倍（不超过 {params.max_growth:g} 倍），不再下发"),
        })
    changes["QQJCBH"] = qq
    issued = changes.drop(index=changes.index[suppressed_rows])
    suppressed.sort(key=lambda s: (s["XZQDM"], s["QQJCBH"], -s["JCMJ"] if s["JCMJ"] is not None else 0))
    return issued, suppressed


def _round(v, digits: int):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else round(f, digits)


# ---------------------------------------------------------------------------------------------
# recording what was issued and what came back
def register_issued(registry: gpd.GeoDataFrame, changes: gpd.GeoDataFrame, *, quarter: str,
                    counties: list[str] | set[str], run_id: str = "", issue_date: str = "") -> gpd.GeoDataFrame:
    """The registry with this quarter's polygons of ``counties`` replaced by ``changes``'.

    Idempotent: running it again with the same polygons gives the same registry. Verdicts
    already recorded for a JCBH are kept. A polygon of this quarter and county that is no
    longer among ``changes`` (the quarter was run again with other settings) is dropped, or,
    when a county already returned its verdict, kept with ZT = 已撤销.
    """
    counties = {str(c) for c in counties}
    new = changes[changes["XZQDM"].astype(str).isin(counties)]
    new = new.to_crs(REGISTRY_CRS) if new.crs is not None else new
    rows = pd.DataFrame({f: (new[f].to_numpy() if f in new else [None] * len(new)) for f in FIELDS},
                        index=range(len(new)))
    rows["JCJD"] = str(quarter)
    rows["XFRQ"] = issue_date
    rows["RUNID"] = run_id
    rows["ZT"] = STATUS_ISSUED
    for f in (*RETURNED_FIELDS, "HSRQ", "HSWJ"):
        rows[f] = ""
    if "JCMJM" not in new and "JCMJ" in new:
        rows["JCMJM"] = pd.to_numeric(rows["JCMJ"], errors="coerce") * 3 / 2000
    rows = gpd.GeoDataFrame(rows, geometry=new.geometry.to_numpy(), crs=REGISTRY_CRS)
    rows = _typed(rows)

    old = _typed(registry) if len(registry) else empty_registry()
    this = (old["JCJD"] == str(quarter)) & old["XZQDM"].isin(counties)
    previous = {r["JCBH"]: r for r in old[this].to_dict("records")}
    for idx, jcbh in zip(rows.index, rows["JCBH"]):
        before = previous.get(jcbh)
        for f in (*RETURNED_FIELDS, "HSRQ", "HSWJ") if before else ():
            if before[f]:
                rows.at[idx, f] = before[f]
    rows.loc[rows["HCJG"] != "", "ZT"] = STATUS_VERIFIED
    gone = old[this & ~old["JCBH"].isin(rows["JCBH"])]
    gone = gone[(gone["HCJG"] != "") | (gone["ZGZT"] != "")].copy()
    gone["ZT"] = STATUS_WITHDRAWN
    parts = [p for p in (old[~this], rows, gone) if len(p)]
    if not parts:
        return empty_registry()
    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=REGISTRY_CRS)


def apply_verdicts(registry: gpd.GeoDataFrame, verdicts: pd.DataFrame, *, received: str,
                   source: str) -> gpd.GeoDataFrame:
    """The registry with a county's returned fields applied.

    ``verdicts`` holds JCBH and any of HCJG, WFLX, SJYT, HCRY, HCRQ, HCSM, ZGZT (checked by
    :mod:`pipeline.ingest`); a blank value never erases a recorded one. Rows with HCJG get
    ZT = 已核查, HSRQ = ``received`` and HSWJ = ``source``.
    """
    out = _typed(registry)
    where = pd.Series(out.index, index=out["JCBH"])
    missing = [j for j in verdicts["JCBH"] if j not in where.index]
    if missing:
        raise KeyError(f"JCBH {missing[0]} is not in the registry")
    for _, v in verdicts.iterrows():
        i = where[v["JCBH"]]
        touched = False
        for f in RETURNED_FIELDS:
            value = _text(v.get(f)).strip()
            if value:
                out.at[i, f] = value
                touched = True
        if touched:
            out.at[i, "HSRQ"] = received
            out.at[i, "HSWJ"] = source
        if out.at[i, "HCJG"]:
            out.at[i, "ZT"] = STATUS_VERIFIED
    return out


# ---------------------------------------------------------------------------------------------
# the two steps of a quarterly run
def link_to_earlier(workdir: str | os.PathLike, changes: gpd.GeoDataFrame, quarter: str,
                    settings: dict | None) -> tuple[gpd.GeoDataFrame, list[dict]]:
    """Overlay-stage step: :func:`match_earlier` against ``<workdir>/registry.gpkg``.

    ``settings`` is the ``[registry]`` table. Reads a snapshot of the registry (it is only
    ever replaced whole), so no lock is needed.
    """
    params = RegistryParams.from_dict(settings)
    if not params.enabled:
        changes = changes.copy()
        changes["QQJCBH"] = ""
        return changes, []
    return match_earlier(changes, read_registry(registry_path(workdir)), quarter, params)


def record_issued(workdir: str | os.PathLike, changes: gpd.GeoDataFrame, *, quarter: str,
                  counties, run_id: str, issue_date: str, settings: dict | None) -> Path | None:
    """Export-stage step: :func:`register_issued` under the registry lock, written atomically.

    Returns the registry path, or None when ``[registry].enabled`` is false.
    """
    from pipeline.rundir import WorkdirLock

    if not RegistryParams.from_dict(settings).enabled:
        return None
    path = registry_path(workdir)
    with WorkdirLock(workdir, name=LOCK_NAME, wait=120):
        remove_stale_temps(workdir)
        updated = register_issued(read_registry(path), changes, quarter=quarter, counties=counties,
                                  run_id=run_id, issue_date=issue_date)
        write_registry(updated, path)
    return path


def remove_stale_temps(workdir: str | os.PathLike) -> list[Path]:
    """Remove half-written registry files a killed process left (call holding the registry lock)."""
    stale = sorted(Path(workdir).glob(f".{Path(REGISTRY_NAME).stem}.*.tmp*"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
