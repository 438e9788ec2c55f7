"""Check every input of a run before it starts: imagery, dates, overlap, layers, fields, disk,
the registry and the places a run under cron must be able to write to."""
from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from pathlib import Path

import pyogrio
from pyproj import CRS
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from detect.detector import DetectParams, reflectance_warning
from overlay.layers import layer_info
from pipeline.config import Config
from pipeline.quarter import Quarter
from tiles.errors import TianyanError
from tiles.grid import footprint, make_grid
from tiles.imagery import check_pair, open_config_date
from tiles.reader import date_clouds, read_date

FREE_DISK_MB = 2048
MIN_OVERLAP_SHARE = 0.5   # below this share of the after date covered by both dates: a warning
MAX_CLOUD_SHARE = 0.8     # above this share of the grid under a date's cloud masks: a warning


def _check_scene_masks(label: str, date) -> tuple[str, str, str]:
    """How many of a date's scenes have cloud masks of their own ({scene}); WARN for the rest."""
    bare = [s for s in date.files if s not in date.scene_masks]
    what = f"imagery.cloud_mask_{label}"
    if not bare:
        return ("OK", what, f"every scene ({len(date.files)}) has its own cloud mask")
    return ("WARN", what, f"{len(bare)} of {len(date.files)} scenes have no cloud mask of their "
                          f"own and are read unmasked, e.g. {bare[0]} (name its mask with {{scene}})")


def validate_inputs(cfg: Config, quarter: Quarter) -> list[tuple[str, str, str]]:
    """Return findings ``(level, what, message)``; level is OK, WARN or ERROR (blocking)."""
    out: list[tuple[str, str, str]] = []
    im, dates = cfg.imagery, {}
    labels = ("before", "after", "reference") if im.get("reference") else ("before", "after")
    for label in labels:
        try:
            d = open_config_date(label, im, quarter=str(quarter), prev_quarter=str(quarter.previous()))
            dates[label] = d
            out.append(("OK", f"imagery.{label}", f"{len(d.image_files())} file(s), date {d.date}, "
                                                  f"bands {','.join(d.roles)}"))
            if d.scene_masks:
                out.append(_check_scene_masks(label, d))
        except TianyanError as exc:
            out.append(("ERROR", f"imagery.{label}", str(exc)))
    if "before" in dates and "after" in dates:
        try:
            check_pair(dates["before"], dates["after"])
            grid = make_grid(dates["before"].image_files(), dates["after"].image_files(),
                             crs=cfg.run["crs"], resolution=cfg.run["resolution"])
            out.append(("OK", "grid", f"{grid.width} x {grid.height} px at {grid.res} m in {grid.crs}"))
            out.append(_check_overlap(dates["after"].image_files(), grid))
            out.extend(_check_dates(dates["before"].date, dates["after"].date, quarter))
            scale = DetectParams.from_dict(cfg.detect).reflectance_scale
            for d in dates.values():
                if d.cloud_masks or d.scene_masks:
                    out.append(_check_cloud_share(d, grid))
                out.append(_check_reflectance(d, grid, scale))
            if "reference" in dates:
                check_pair(dates["reference"], dates["after"])
                out.extend(_check_reference_date(dates["reference"].date, dates["before"].date,
                                                 dates["after"].date))
        except TianyanError as exc:
            out.append(("ERROR", "grid", str(exc)))
            grid = None
    else:
        grid = None
    for name, spec in cfg.layers.items():
        finding = _check_layer(name, spec)
        out.append(finding)
        if grid is not None and finding[0] == "OK":
            cover = _check_layer_cover(name, spec, grid)
            if cover:
                out.append(cover)
    out.extend(_check_registry(cfg))
    out.extend(_check_writable(cfg))
    workdir = Path(cfg.run["workdir"])
    probe = workdir if workdir.exists() else workdir.parent
    while not probe.exists():
        probe = probe.parent
    free_mb = shutil.disk_usage(probe).free // 2**20
    out.append(("OK" if free_mb >= FREE_DISK_MB else "ERROR", "disk",
                f"{free_mb} MB free under {probe} (need {FREE_DISK_MB} MB)"))
    return out


def _check_layer(name: str, spec: dict) -> tuple[str, str, str]:
    what = f"layers.{name}"
    try:
        info = layer_info(spec)
    except TianyanError as exc:
        return ("ERROR", what, str(exc))
    except Exception as exc:  # noqa: BLE001 - any driver error is a finding
        return ("ERROR", what, f"{spec['path']}: cannot be read ({exc})")
    count = f"{info['features']} features" if info["features"] >= 0 else "features not counted"
    return ("OK", what, f"layer {info['layer']!r}, {count}, {info['crs'].to_string()}")


def _check_overlap(after_files: list[str], grid) -> tuple[str, str, str]:
    """Share of the after date's footprint that the before date also covers (the grid)."""
    a = footprint(after_files, grid.crs)
    after_area = max((a[2] - a[0]) * (a[3] - a[1]), 1e-9)
    share = min(1.0, grid.width * grid.height * grid.res ** 2 / after_area)
    level = "OK" if share >= MIN_OVERLAP_SHARE else "WARN"
    return (level, "overlap", f"the before date covers {share:.0%} of the after date's extent"
                              + ("" if level == "OK" else " (most of the after date cannot be compared; "
                                 "check [imagery].before)"))


def _check_cloud_share(date, grid) -> tuple[str, str, str]:
    """Share of the grid the date's cloud masks mark, on every n-th pixel (about 512 per side).

    Over MAX_CLOUD_SHARE is a warning: an overcast date, or a class raster (e.g. Sentinel-2 SCL,
    where every class is above 0) read without [imagery].cloud_mask_values.
    """
    step = max(1, max(grid.width, grid.height) // 512)
    full = Window(0, 0, grid.width, grid.height)
    masks = date.cloud_masks + [m for ms in date.scene_masks.values() for m in ms]
    what = f"imagery.cloud_mask_{date.label}"
    try:
        share = float(date_clouds(date, masks, grid, full, decimate=step).mean())
    except TianyanError as exc:
        return ("ERROR", what, str(exc))
    # scene masks: a pixel counts when any scene marks it (the next scene may still fill it)
    marked = "masked as cloud or shadow" + (" in some scene" if date.scene_masks else "")
    if share <= MAX_CLOUD_SHARE:
        return ("OK", what, f"{share:.0%} of the grid {marked}")
    return ("WARN", what, f"{share:.0%} of the grid {marked}: an overcast date, "
                          f"or a class or QA raster read as 'any value above 0' (set "
                          f"[imagery].cloud_mask_values or cloud_mask_bits)")


UNITS_SCENES = 16  # scenes of a date whose units validate reads (a product's units are its own)


def _check_reflectance(date, grid, scale: float) -> tuple[str, str, str]:
    """Whether the date's DN x [detect].reflectance_scale reads as reflectance, on every n-th
    pixel (about 512 per side) of up to UNITS_SCENES scenes spread over the date's list (see
    ``detect.detector.reflectance_warning``)."""
    step = max(1, max(grid.width, grid.height) // 512)
    what = f"imagery.{date.label} units"
    n = len(date.files)
    scenes = list(range(0, n, -(-n // UNITS_SCENES)))
    try:
        data, valid = read_date(date, grid, Window(0, 0, grid.width, grid.height), decimate=step,
                                scenes=scenes)
    except TianyanError as exc:
        return ("ERROR", what, str(exc))
    why = reflectance_warning(data, valid, date.roles, scale)
    if why:
        return ("WARN", what, f"{date.files[0]}: {why} ([detect] reflectance_scale)")
    return ("OK", what, f"DN x reflectance_scale {scale:g} reads as reflectance")


def _check_dates(before: str, after: str, quarter: Quarter) -> list[tuple[str, str, str]]:
    b, a = _dt.date.fromisoformat(str(before)[:10]), _dt.date.fromisoformat(str(after)[:10])
    if b >= a:
        return [("ERROR", "dates", f"after date {a} is not later than before date {b} "
                                   "(check [imagery].before / after or before_date / after_date)")]
    out = [("OK", "dates", f"before {b}, after {a} ({(a - b).days} days apart)")]
    if not quarter.first_day <= a <= quarter.last_day:
        out.append(("WARN", "dates", f"after date {a} is outside {quarter} ({quarter.first_day} to "
                                     f"{quarter.last_day}); is [imagery].after the right quarter?"))
    if b >= quarter.first_day:
        out.append(("WARN", "dates", f"before date {b} lies inside {quarter} itself; the before date "
                                     f"normally comes from {quarter.previous()}"))
    return out


#: Days from the reference date to one year before the after date beyond which the reference
#: no longer shows the same stage of the crop calendar (double rice moves through a stage in
#: two to four weeks).
REFERENCE_SEASON_DAYS = 30


def _check_reference_date(reference: str, before: str, after: str) -> list[tuple[str, str, str]]:
    """The reference must precede the before date and should be the same season a year earlier."""
    r, b, a = (_dt.date.fromisoformat(str(d)[:10]) for d in (reference, before, after))
    if r >= b:
        return [("ERROR", "dates", f"reference date {r} is not earlier than before date {b}; "
                                   f"[imagery].reference is the same season a year earlier")]
    year_ago = a.replace(year=a.year - 1) if not (a.month == 2 and a.day == 29) else a - _dt.timedelta(days=365)
    off = (r - year_ago).days
    if abs(off) > REFERENCE_SEASON_DAYS:
        return [("WARN", "dates", f"reference date {r} is {abs(off)} days "
                                  f"{'after' if off > 0 else 'before'} {year_ago}, one year before the "
                                  f"after date: a crop stage lasts a few weeks, so fields may look "
                                  f"seasonal-changed against it; use imagery within "
                                  f"{REFERENCE_SEASON_DAYS} days of {year_ago}")]
    return [("OK", "dates", f"reference {r}, {abs(off)} days from one year before the after date")]


def _check_layer_cover(name: str, spec: dict, grid) -> tuple[str, str, str] | None:
    """A layer whose extent misses the imagery: an error for counties (every polygon would be
    outside every county), a warning for the others."""
    try:
        info = pyogrio.read_info(spec["path"], layer=spec.get("layer"), encoding=spec.get("encoding"),
                                 force_total_bounds=True)
        box = transform_bounds(CRS.from_user_input(info["crs"]), CRS.from_user_input(grid.crs),
                               *info["total_bounds"], densify_pts=21)
    except Exception:  # noqa: BLE001 - unreadable extents were reported by _check_layer already
        return None
    g = (grid.left, grid.top - grid.height * grid.res, grid.left + grid.width * grid.res, grid.top)
    if box[0] < g[2] and g[0] < box[2] and box[1] < g[3] and g[1] < box[3]:
        return None
    level = "ERROR" if name == "counties" else "WARN"
    return (level, f"layers.{name}", f"{spec['path']}: the layer's extent does not reach the imagery "
                                     f"(check the file and its CRS)")


def _check_registry(cfg: Config) -> list[tuple[str, str, str]]:
    from pipeline.registry import RegistryParams, read_registry, registry_path
    from pipeline.stats import Thresholds

    out = []
    try:
        params = RegistryParams.from_dict(cfg.registry)
        Thresholds.from_dict(cfg.stats)
    except TianyanError as exc:
        return [("ERROR", "config", f"{cfg.path}: {exc}")]
    path = registry_path(cfg.run["workdir"])
    if not params.enabled:
        out.append(("OK", "registry", "disabled ([registry].enabled = false)"))
    elif path.exists():
        try:
            reg = read_registry(path)
            out.append(("OK", "registry", f"{path}: {len(reg)} polygon(s) of "
                                          f"{reg['JCJD'].nunique()} quarter(s)"))
        except TianyanError as exc:
            out.append(("ERROR", "registry", str(exc)))
    else:
        out.append(("OK", "registry", f"{path} will be created by the first export"))
    return out


def _check_writable(cfg: Config) -> list[tuple[str, str, str]]:
    """The workdir and the Numba cache must be writable by the user the run runs as."""
    out = []
    workdir = Path(cfg.run["workdir"])
    probe = workdir if workdir.exists() else workdir.parent
    while not probe.exists():
        probe = probe.parent
    out.append(_writable("workdir", probe, str(workdir) if probe == workdir
                         else f"{workdir} (not yet created; its parent {probe})"))
    cache = os.environ.get("NUMBA_CACHE_DIR")
    if not cache:
        out.append(("WARN", "numba cache", "NUMBA_CACHE_DIR is not set: under cron or systemd the "
                                           "compiled kernels may not be cached (see configs/tianyan.service)"))
    else:
        path = Path(cache)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return out + [("ERROR", "numba cache", f"NUMBA_CACHE_DIR={cache} cannot be created ({exc})")]
        out.append(_writable("numba cache", path, f"NUMBA_CACHE_DIR={cache}"))
    return out


def _writable(what: str, path: Path, name: str) -> tuple[str, str, str]:
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return ("ERROR", what, f"{name} is not writable ({exc.strerror}); fix its owner or permissions")
    return ("OK", what, f"{name} is writable")
