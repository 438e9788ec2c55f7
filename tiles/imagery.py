"""One date's imagery as configured: its scenes, the file and band of each role, and its date.

A date is given in one of three forms:

* multi-band files (GeoTIFF/COG, ENVI, VRT, anything GDAL reads): a path or glob; each file is
  a scene whose bands have the roles of ``[imagery].bands`` in file order;
* one file per band: a pattern with ``{band}`` and ``[imagery].band_files`` (see
  :mod:`tiles.bandfiles`); bands may have different resolutions and CRSs;
* a STAC ItemCollection JSON file (see :mod:`tiles.stac`).

Several scenes are mosaicked, first valid pixel wins in sorted order; each scene keeps its own
CRS and nodata and is warped onto the processing grid by :mod:`tiles.reader`.
"""
from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path

import rasterio
from rasterio.errors import RasterioError

from tiles.bandfiles import BAND, group_band_files
from tiles.dates import check_iso, compile_date_pattern, date_from_name, date_from_tags
from tiles.errors import ConfigError, InputFileError
from tiles.scenemasks import SCENE, as_glob, assign_masks, check_pattern, scene_names
from tiles.stac import is_stac, read_item_collection

#: Files next to rasters that a glob such as ``scenes/*`` also matches; never read as scenes.
SIDECARS = (".hdr", ".aux.xml", ".ovr", ".msk", ".tfw", ".tifw", ".wld", ".prj", ".rpb", "_rpc.txt")


@dataclass
class DateImagery:
    """The scenes of one date.

    ``files`` names the scenes (a multi-band file, or the first band file / asset of a scene);
    ``nodata`` and ``crs`` are per scene. ``indexes`` are the 1-based bands of each role in a
    multi-band file. ``sources`` maps a scene to ``[path, band, nodata, add]`` per role when its
    bands live in several files (``add``: DN added to the valid pixels to put them on the
    product's scale from zero, a STAC asset's offset / scale; 0 for plain files);
    ``footprints`` maps a scene to the WKT polygon (processing-grid CRS) outside which it has
    no valid data, once the plan has measured it. ``cloud_masks`` mask the
    whole date after the mosaic; ``scene_masks`` maps a scene to the masks of that scene alone
    (see :mod:`tiles.scenemasks`). A mask pixel is cloud when its value is one of
    ``mask_values``, has one of ``mask_bits`` set, or (neither given) is above 0.
    """

    label: str                      # "before" / "after"
    files: list[str]
    roles: tuple[str, ...]          # roles in array order, e.g. ("blue", "green", "red", "nir")
    indexes: tuple[int, ...]        # 1-based band index in multi-band files for each role
    date: str                       # ISO date of acquisition
    nodata: list[float | None]      # per scene
    crs: list[str]                  # per scene, WKT or EPSG string
    cloud_masks: list[str] = field(default_factory=list)
    sources: dict[str, list[list]] = field(default_factory=dict)
    footprints: dict[str, str] = field(default_factory=dict)
    scene_masks: dict[str, list[str]] = field(default_factory=dict)
    mask_values: list[int] = field(default_factory=list)
    mask_bits: list[int] = field(default_factory=list)
    dn_offset: float = 0.0          # [imagery].dn_offset: DN added to every file instead of own

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "DateImagery":
        d = dict(d)
        d["roles"], d["indexes"] = tuple(d["roles"]), tuple(d["indexes"])
        return cls(**d)

    def scene_reads(self, scene: str, nodata: float | None) -> list[tuple[str, list[int], list[int], float | None]]:
        """What to open for one scene: ``(path, array positions, 1-based bands, nodata)`` per file."""
        if scene not in self.sources:
            return [(scene, list(range(len(self.roles))), list(self.indexes), nodata)]
        reads: dict[str, tuple[str, list[int], list[int], float | None]] = {}
        for pos, (path, band, nd, *_) in enumerate(self.sources[scene]):
            entry = reads.setdefault(path, (path, [], [], nd))
            entry[1].append(pos)
            entry[2].append(int(band))
        return list(reads.values())

    def scene_adds(self, scene: str) -> list[float]:
        """DN to add to each role's valid pixels of one scene: ``dn_offset`` when set, else the
        STAC asset's own offset / scale (0 for plain files and plans written without it)."""
        if self.dn_offset:
            return [float(self.dn_offset)] * len(self.roles)
        return [float(src[3]) if len(src) > 3 else 0.0 for src in self.sources.get(scene, [])]

    def image_files(self) -> list[str]:
        """Every image file of the date (multi-band scenes and band files), scene by scene."""
        out = []
        for scene in self.files:
            out += [s[0] for s in self.sources[scene]] if scene in self.sources else [scene]
        return list(dict.fromkeys(out))

    def all_files(self) -> list[str]:
        """Every file the date reads (images and cloud masks), for the run manifest."""
        own = [m for scene in self.files for m in self.scene_masks.get(scene, [])]
        return list(dict.fromkeys(self.image_files() + list(self.cloud_masks) + own))


def expand(pattern: str, quarter: str, prev_quarter: str, key: str) -> list[str]:
    """Fill {quarter}/{prev_quarter} (keeping {band}) and expand the glob ({scene} matching as
    ``*``); sorted, sidecars left out."""
    filled = fill(pattern, quarter, prev_quarter, key)
    return sorted(f for f in glob.glob(as_glob(filled)) if not f.lower().endswith(SIDECARS))


def fill(pattern: str, quarter: str, prev_quarter: str, key: str) -> str:
    """The pattern with {quarter}, {prev_quarter} and {last_year_quarter} filled in; {band} and
    {scene} stay.

    {last_year_quarter} is the same quarter a year earlier (2026Q3 -> 2025Q3): where the
    optional reference date of the same season lives. {scene} marks a scene's name (see
    :mod:`tiles.scenemasks`).
    """
    check_pattern(pattern, key)
    try:
        return pattern.format(quarter=quarter, prev_quarter=prev_quarter,
                              last_year_quarter=last_year_quarter(quarter), band=BAND, scene=SCENE)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"[imagery].{key} = {pattern!r}: bad placeholder {exc} (only {{quarter}}, "
                          f"{{prev_quarter}}, {{last_year_quarter}}, {{band}} and {{scene}} are "
                          f"known)") from None


def last_year_quarter(quarter: str) -> str:
    """The same quarter a year earlier: ``"2026Q3"`` -> ``"2025Q3"``; other text is kept."""
    m = re.fullmatch(r"(\d{4})(Q[1-4])", quarter)
    return f"{int(m.group(1)) - 1}{m.group(2)}" if m else quarter


def open_config_date(label: str, imagery: dict, *, quarter: str, prev_quarter: str) -> DateImagery:
    """Resolve the ``before``, ``after`` or ``reference`` date of an ``[imagery]`` table."""
    date = open_date(label, imagery[label], imagery["bands"], quarter=quarter, prev_quarter=prev_quarter,
                     date_override=imagery.get(f"{label}_date", ""),
                     nodata_override=imagery.get("nodata", -1),
                     cloud_pattern=imagery.get(f"cloud_mask_{label}", ""),
                     band_files=imagery.get("band_files") or {},
                     date_pattern=imagery.get("date_pattern", ""))
    date.mask_values = list(imagery.get("cloud_mask_values") or [])
    date.mask_bits = list(imagery.get("cloud_mask_bits") or [])
    date.dn_offset = float(imagery.get("dn_offset", 0.0))
    return date


def open_date(label: str, pattern: str, roles_config: list[str], *, quarter: str, prev_quarter: str,
              date_override: str = "", nodata_override: float = -1, cloud_pattern: str = "",
              band_files: dict[str, str] | None = None, date_pattern: str = "") -> DateImagery:
    """Resolve one configured date (glob, ``{band}`` pattern or STAC JSON) and check its files.

    Raises InputFileError naming the file and the fix (ConfigError for a bad key).
    """
    roles = [r for r in roles_config if r != "-"]
    filled = fill(pattern, quarter, prev_quarter, label)
    mask_key = f"cloud_mask_{label}"
    mask_pattern = fill(cloud_pattern, quarter, prev_quarter, mask_key) if cloud_pattern else ""
    masks = expand(cloud_pattern, quarter, prev_quarter, mask_key) if cloud_pattern else []
    if cloud_pattern and not masks:
        raise InputFileError(f"[imagery].{mask_key}: no file matches {as_glob(mask_pattern)!r}")
    rx = compile_date_pattern(date_pattern)

    def split_masks(keys, names):
        return assign_masks(label, mask_pattern, masks, keys, names)

    if BAND in filled:
        groups = group_band_files(as_glob(filled), band_files or {}, roles, label)
        keys = [g[roles[0]] for g in groups]
        named = filled.replace(BAND, band_files.get(roles[0], "")) if SCENE in filled else None
        date_masks, own = split_masks(keys, scene_names(named, keys) if named else None)
        scenes = [[(r, g[r], 1, None, 0.0) for r in roles] for g in groups]
        return _open_scenes(label, scenes, roles, date_override=date_override,
                            nodata_override=nodata_override, cloud_masks=date_masks,
                            scene_masks=own, date_pattern=rx, prefer_name=bool(date_pattern))
    if is_stac(filled):
        items = read_item_collection(filled, roles)
        date_masks, own = split_masks([it.sources[roles[0]][0] for it in items],
                                      [it.id for it in items])
        scenes = [[(r, *it.sources[r]) for r in roles] for it in items]
        dates = [it.date for it in items]
        return _open_scenes(label, scenes, roles, date_override=date_override,
                            nodata_override=nodata_override, cloud_masks=date_masks,
                            scene_masks=own, date_pattern=rx, known_dates=dates)
    files = expand(pattern, quarter, prev_quarter, label)
    if not files:
        raise InputFileError(f"[imagery].{label}: no file matches {as_glob(filled)!r} (check the path "
                             f"and the quarter)")
    date_masks, own = split_masks(files, scene_names(filled, files))
    return open_files(label, files, roles_config, date_override=date_override,
                      nodata_override=nodata_override, cloud_masks=date_masks, scene_masks=own,
                      date_pattern=date_pattern)


def open_files(label: str, files: list[str], roles_config: list[str], *, date_override: str = "",
               nodata_override: float = -1, cloud_masks: list[str] | None = None,
               scene_masks: dict[str, list[str]] | None = None, require_date: bool = True,
               date_pattern: str = "") -> DateImagery:
    """Check multi-band files of one date (readable, CRS, same band count, enough bands) and date it.

    ``roles_config`` names the role of each band in file order ("-" skips one).
    Raises InputFileError naming the file and the fix.
    """
    indexes = [i + 1 for i, r in enumerate(roles_config) if r != "-"]
    roles = [r for r in roles_config if r != "-"]
    scenes = [[(r, f, i, None, 0.0) for r, i in zip(roles, indexes)] for f in files]
    date = _open_scenes(label, scenes, roles, date_override=date_override, nodata_override=nodata_override,
                        cloud_masks=cloud_masks or [], scene_masks=scene_masks or {},
                        date_pattern=compile_date_pattern(date_pattern),
                        prefer_name=bool(date_pattern), require_date=require_date,
                        roles_config=roles_config)
    return date


def check_pair(before: DateImagery, after: DateImagery) -> None:
    """Refuse two dates of multi-band files whose band counts differ (the roles fit only one)."""
    if before.sources or after.sources:
        return  # band files and STAC assets name each band's file: counts do not matter
    counts = []
    for date in (before, after):
        with rasterio.open(date.files[0]) as src:
            counts.append(src.count)
    if counts[0] != counts[1]:
        raise InputFileError(f"{after.files[0]}: has {counts[1]} bands but the before date's "
                             f"{before.files[0]} has {counts[0]}; [imagery].bands gives one band order "
                             f"for both dates (export the same bands for both, or use one file per band "
                             f"with [imagery].band_files)")


def _open_scenes(label, scenes, roles, *, date_override, nodata_override, cloud_masks, date_pattern,
                 scene_masks=None, prefer_name=False, require_date=True, known_dates=None, roles_config=None) -> DateImagery:
    """Open every file once: readable, has a CRS and the bands; nodata and date per scene."""
    info: dict[str, dict] = {}
    for scene in scenes:
        for role, path, band, *_ in scene:
            if path not in info:
                info[path] = _inspect(path, date_pattern, prefer_name)
            if band > info[path]["count"]:
                what = (f"the band roles name {len(roles_config)} ({', '.join(roles_config)})"
                        if roles_config else f"band {band} is the {role} band")
                raise InputFileError(f"{path}: has {info[path]['count']} bands but {what} "
                                     f"(name the file's bands in [imagery].bands, '-' for one to skip)")
    if not scenes:
        raise InputFileError(f"[imagery].{label}: no scene")
    multi = roles_config is not None
    if multi:
        counts = {p: i["count"] for p, i in info.items()}
        first = scenes[0][0][1]
        for scene in scenes[1:]:
            path = scene[0][1]
            if counts[path] != counts[first]:
                raise InputFileError(f"{path}: has {counts[path]} bands but {first} of the same date has "
                                     f"{counts[first]}; the scenes of one date need one band layout")
    files, nodatas, crss, dates, sources = [], [], [], [], {}
    for k, scene in enumerate(scenes):
        key = scene[0][1]
        resolved = [[path, int(band), _nodata(nd, info[path]["nodata"], nodata_override), add]
                    for _, path, band, nd, add in scene]
        files.append(key)
        nodatas.append(resolved[0][2])
        crss.append(info[key]["crs"])
        if not multi:
            sources[key] = resolved
        if known_dates:
            dates.append(known_dates[k])
        else:
            dates.append(next((info[p]["date"] for _, p, *_ in scene if info[p]["date"]), ""))
    if date_override:
        date = check_iso(date_override, f"[imagery].{label}_date")
    else:
        known = sorted(d for d in dates if d)
        if not known and not require_date:
            known = [""]
        elif not known:
            raise InputFileError(f"{files[0]}: no acquisition date in the metadata or the file name "
                                 f"(set [imagery].{label}_date = \"YYYY-MM-DD\" or [imagery].date_pattern)")
        date = known[len(known) // 2]
    indexes = [int(s[2]) for s in scenes[0]] if multi else [1] * len(roles)
    return DateImagery(label=label, files=files, roles=tuple(roles), indexes=tuple(indexes), date=date,
                       nodata=nodatas, crs=crss, cloud_masks=list(cloud_masks), sources=sources,
                       scene_masks=dict(scene_masks or {}))


def _nodata(own: float | None, files: float | None, override: float) -> float | None:
    if override != -1:
        return override
    return own if own is not None else files


def _inspect(path: str, date_pattern, prefer_name: bool) -> dict:
    """Band count, nodata, CRS and date of one file; InputFileError naming it when unusable."""
    if not path.startswith("/vsi") and not Path(path).exists():
        raise InputFileError(f"{path}: file not found")
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise InputFileError(f"{path}: has no CRS (assign one, e.g. gdal_edit.py -a_srs EPSG:4545)")
            if src.transform.is_identity:
                raise InputFileError(f"{path}: has no georeferencing (no geotransform); assign one, "
                                     f"e.g. gdal_edit.py -a_ullr")
            tags = src.tags()
            named = date_from_name(path, date_pattern)
            date = (named or date_from_tags(tags)) if prefer_name else (date_from_tags(tags) or named)
            return {"count": src.count, "nodata": src.nodata, "crs": src.crs.to_string(), "date": date}
    except RasterioError as exc:
        raise InputFileError(f"{path}: cannot be read as a raster ({exc})") from None
