"""The run configuration: one TOML file, checked key by key, paths made absolute.

``DEFAULTS`` is the single source of every default; ``configs/default.toml`` documents the same
keys for people (a test keeps the two equal). The ``[detect]`` and ``[priority]`` tables are
checked by the code that owns them (``detect.detector.DetectParams``, ``overlay.priority``).
No value from the configuration is ever evaluated as code or spliced into SQL.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tiles.dates import compile_date_pattern
from detect.detector import DetectParams
from overlay.priority import priority_from_dict
from pipeline.cluster.settings import dask_settings
from pipeline.config_types import check_type
from tiles.errors import ConfigError, InputFileError

DEFAULTS: dict[str, dict[str, Any]] = {
    "run": {
        "name": "",
        "workdir": "runs",
        "crs": "",            # empty: the after date's CRS
        "resolution": 0.0,    # 0: the after date's resolution
        "tile_size": 2048,
        "workers": 0,         # 0: one per core
        "decimation": 0,      # 0: choose so the scene-wide fit sees about 4 Mpx
    },
    "imagery": {
        "before": "",
        "after": "",
        "reference": "",      # optional third date: the same season a year earlier
        "bands": ["blue", "green", "red", "nir"],
        "cloud_mask_before": "",
        "cloud_mask_after": "",
        "cloud_mask_reference": "",
        "cloud_mask_values": [],  # mask values that mean cloud/shadow; empty: any value > 0
        "cloud_mask_bits": [],    # or bit numbers of a QA band, e.g. Landsat QA_PIXEL [1, 3, 4]
        "before_date": "",
        "after_date": "",
        "reference_date": "",
        "nodata": -1,         # -1: the files' own nodata
        "dn_offset": 0.0,     # 0: each STAC asset's own offset / scale; else DN added to every file
        "resampling": "bilinear",
        "band_files": {},     # role -> what {band} stands for in before/after (one file per band)
        "date_pattern": "",   # regex with (?P<year>)(?P<month>)(?P<day>) or (?P<doy>) for file names
    },
    "batches": {
        "max_per_batch": 25,
        "max_span_km": 20.0,
        "due_days": [7, 15, 30],
        "start_points": {},   # XZQDM -> [lon, lat] of the county seat (batch start)
    },
    "export": {
        "formats": ["gpkg", "shp", "kmz", "xlsx", "chips", "html", "qgis"],
        "shp_encoding": "UTF-8",
    },
    "registry": {
        "enabled": True,      # match against <workdir>/registry.gpkg and update it after export
        "min_overlap": 0.1,   # share of the smaller polygon's area that must overlap for a repeat
        "max_growth": 1.2,    # a repeat of a 合法/伪变化 polygon is suppressed up to this growth
        "suppress_verdicts": ["合法", "伪变化"],
    },
    "stats": {
        "illegal_farmland_mu": 100.0,    # flag a county above this illegal farmland (亩) ...
        "illegal_ratio": 0.15,           # ... and above this 违法占用耕地比例
        "construction_verdicts": ["合法", "违法"],  # verdicts whose farmland is the ratio's denominator
    },
}

LAYER_NAMES = ("counties", "farmland", "basic_farmland", "ecological_redline",
               "protected_areas", "approved", "facility_farmland")
LAYER_KEYS = {"path", "layer", "code_field", "name_field", "codes", "encoding",
              "zone_field", "core_values"}
FREE_TABLES = ("detect", "priority", "dask")   # checked by their owners
BAND_ROLES = {"blue", "green", "red", "nir", "swir", "-"}
EXPORT_FORMATS = {"gpkg", "shp", "kmz", "xlsx", "chips", "html", "qgis"}


@dataclass
class Config:
    """A checked configuration. Paths are absolute; ``hash`` identifies the effective settings."""

    path: Path
    run: dict
    imagery: dict
    detect: dict
    layers: dict[str, dict]
    priority: dict
    batches: dict
    export: dict
    dask: dict = field(default_factory=dict)
    registry: dict = field(default_factory=lambda: copy.deepcopy(DEFAULTS["registry"]))
    stats: dict = field(default_factory=lambda: copy.deepcopy(DEFAULTS["stats"]))

    @property
    def workdir(self) -> Path:
        return Path(self.run["workdir"])

    def as_dict(self) -> dict:
        """JSON-safe view (paths as strings), what run.json records."""
        def clean(obj):
            if isinstance(obj, dict):
                return {k: clean(v) for k, v in obj.items()}
            if isinstance(obj, (list, tuple)):
                return [clean(v) for v in obj]
            if isinstance(obj, Path):
                return str(obj)
            return obj
        return clean({"run": self.run, "imagery": self.imagery, "detect": self.detect,
                      "layers": self.layers, "priority": self.priority,
                      "batches": self.batches, "export": self.export, "dask": self.dask,
                      "registry": self.registry, "stats": self.stats})

    @property
    def hash(self) -> str:
        text = json.dumps(self.as_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _check_cloud_rule(imagery: dict, path) -> None:
    """cloud_mask_values: integers; cloud_mask_bits: bit numbers 0..31; not both."""
    values, bits = imagery["cloud_mask_values"], imagery["cloud_mask_bits"]
    for key, items, top in (("cloud_mask_values", values, None), ("cloud_mask_bits", bits, 31)):
        bad = [v for v in items if not isinstance(v, int) or isinstance(v, bool) or v < 0
               or (top is not None and v > top)]
        if bad:
            want = "bit numbers 0..31" if top else "mask values (integers >= 0)"
            raise ConfigError(f"{path}: [imagery].{key} has {bad[0]!r}: give {want}, e.g. "
                              + ("[1, 3, 4] (Landsat QA_PIXEL dilated cloud, cloud, shadow)" if top
                                 else "[3, 8, 9, 10] (Sentinel-2 SCL shadow, clouds, cirrus)"))
    if values and bits:
        raise ConfigError(f"{path}: [imagery].cloud_mask_values and cloud_mask_bits are both set: "
                          f"give one (values for a class raster such as SCL, bits for a QA band)")


def load_config(path: str | os.PathLike) -> Config:
    """Read and check a TOML configuration; raise ConfigError naming the file and key at fault."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise InputFileError(f"{path}: configuration file not found (give --config the path of a TOML file)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid UTF-8 TOML: {exc}") from None
    return config_from_dict(raw, path)


def config_from_dict(raw: dict, path: Path) -> Config:
    """Check a parsed TOML mapping (``path`` is used for messages and relative paths)."""
    base = path.parent
    allowed = set(DEFAULTS) | {"layers"} | set(FREE_TABLES)
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{path}: unknown section [{key}] (known: {', '.join(sorted(allowed))})")
    tables = {}
    for section, defaults in DEFAULTS.items():
        given = raw.get(section, {})
        _require_table(given, section, path)
        merged = copy.deepcopy(defaults)
        for key, value in given.items():
            if key not in defaults:
                raise ConfigError(f"{path}: unknown key [{section}].{key} "
                                  f"(known: {', '.join(sorted(defaults))})")
            merged[key] = check_type(value, defaults[key], f"[{section}].{key}", path)
        tables[section] = merged

    run, imagery = tables["run"], tables["imagery"]
    run["workdir"] = str((base / run["workdir"]).resolve())
    if run["tile_size"] < 64:
        raise ConfigError(f"{path}: [run].tile_size = {run['tile_size']} is too small (use 256 or more)")
    if run["workers"] < 0:
        raise ConfigError(f"{path}: [run].workers must be 0 (auto) or a positive count")
    for key in ("before", "after"):
        if not imagery[key]:
            raise ConfigError(f"{path}: [imagery].{key} is missing (a path or glob such as "
                              f"'imagery/{{quarter}}/*.tif')")
    if imagery["cloud_mask_reference"] and not imagery["reference"]:
        raise ConfigError(f"{path}: [imagery].cloud_mask_reference is set but [imagery].reference "
                          f"is not: give the reference imagery too, or drop the mask")
    for key in ("before", "after", "reference", "cloud_mask_before", "cloud_mask_after",
                "cloud_mask_reference"):
        if imagery[key]:
            imagery[key] = str(base / imagery[key])
    _check_cloud_rule(imagery, path)
    bad = [b for b in imagery["bands"] if b not in BAND_ROLES]
    if bad:
        raise ConfigError(f"{path}: [imagery].bands has unknown role {bad[0]!r} "
                          f"(use blue, green, red, nir, swir or '-' to skip a band)")
    for role, value in imagery["band_files"].items():
        if role not in BAND_ROLES - {"-"} or not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: [imagery].band_files.{role} = {value!r}: keys are band roles "
                              f"(blue, green, red, nir, swir), values the text of {{band}} in the "
                              f"file pattern, e.g. nir = \"B08_10m\"")
    compile_date_pattern(imagery["date_pattern"], f"{path}: [imagery].date_pattern")
    needed = {"red", "nir", "green"}
    if not needed <= set(imagery["bands"]):
        raise ConfigError(f"{path}: [imagery].bands must name at least green, red and nir "
                          f"(got {imagery['bands']})")
    bad = [f for f in tables["export"]["formats"] if f not in EXPORT_FORMATS]
    if bad:
        raise ConfigError(f"{path}: [export].formats has unknown format {bad[0]!r} "
                          f"(known: {', '.join(sorted(EXPORT_FORMATS))})")

    layers_raw = raw.get("layers", {})
    _require_table(layers_raw, "layers", path)
    layers = {}
    for name, spec in layers_raw.items():
        if name not in LAYER_NAMES:
            raise ConfigError(f"{path}: unknown layer [layers.{name}] (known: {', '.join(LAYER_NAMES)})")
        _require_table(spec, f"layers.{name}", path)
        for key in spec:
            if key not in LAYER_KEYS:
                raise ConfigError(f"{path}: unknown key [layers.{name}].{key} "
                                  f"(known: {', '.join(sorted(LAYER_KEYS))})")
        if "path" not in spec:
            raise ConfigError(f"{path}: [layers.{name}].path is missing")
        layers[name] = dict(spec, path=str((base / spec["path"]).resolve()))
    if "counties" not in layers:
        raise ConfigError(f"{path}: [layers.counties] is missing (a county layer with XZQDM codes is required)")
    layers["counties"].setdefault("code_field", "XZQDM")
    layers["counties"].setdefault("name_field", "XZQMC")
    if "farmland" in layers:
        layers["farmland"].setdefault("code_field", "DLBM")
        layers["farmland"].setdefault("codes", ["0101", "0102", "0103"])

    free = {}
    for name in FREE_TABLES:
        table = raw.get(name, {})
        _require_table(table, name, path)
        free[name] = dict(table)
    # The owners' checks, so that a typo stops the run before the plan, naming file and key.
    for name, check in (("detect", DetectParams.from_dict), ("priority", priority_from_dict),
                        ("dask", lambda t: dask_settings(t, path))):
        try:
            check(free[name])
        except ConfigError as exc:
            message = str(exc)
            raise ConfigError(message if str(path) in message else f"{path}: {message}") from None
    return Config(path=path, run=run, imagery=imagery, detect=free["detect"], layers=layers,
                  priority=free["priority"], batches=tables["batches"], export=tables["export"],
                  dask=free["dask"], registry=tables["registry"], stats=tables["stats"])


def _require_table(value, name, path):
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{name}] must be a table, got {type(value).__name__}")
