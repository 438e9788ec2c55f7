"""The demo region: a seeded, synthetic but physically honest quarter of data near Beihai.

:func:`make_demo` writes three dates of 4-band 2 m imagery (EPSG:4545) with cloud masks, six
reference layers (EPSG:4490), the ground truth and a run configuration. The scene is built to
make a naive band-difference detector fail: ~40 % of the fields change with the crop season
(green-up, harvest, flooding of paddies), the after date has another gain/offset drifting
across the scene with the haze, noise, a sub-pixel misregistration, clouds with shadows, thin
haze outside the cloud mask, and terrain lit from another sun; the before scene has a nodata
edge. The ~70 true land-use changes (all TBLX types) sit where overlays and tiling are hard: on
basic farmland, in the red line, in a protected core zone, on approved land, across tile lines
and county borders, outside every county, and some right beside each other.

Appearances spread as they do in real scenes, not just between two tidy endmembers (a review
found the first version physically too easy): harvested fields from dark wet straw to bright
dry straw, many already ploughed; harvests in progress; flooded paddies from just flooded to
transplanted seedlings, clear to muddy; new roofs bright, blue, red or dark grey; new roads
concrete, asphalt or gravel; new ponds muddy, clear or green with algae; earthworks on sites
already bare. Every spread is a named constant in its module, with its physical reason.

The third date, the reference (``imagery/<quarter a year earlier>/``, six days before the after
date's anniversary), lets the pipeline tell phenology from land-use change: it shows the land use
of the before date (true changes happen between before and after) in the season of the after
date. It is not a copy of this year: static objects vary a little from year to year, and each
field's crop stage a year earlier equals this year's after stage only with a per-class
probability (paddy 0.7, irrigated 0.6, dry 0.5); otherwise the season ran a week or two earlier
or later (a neighbouring stage) or the field rotated. Every crop parameter (cover, flood
muddiness, straw brightness, soil moisture) is drawn afresh. It has its own sun, radiometry,
noise, misregistration, clouds (anywhere, change sites included) with shadows, haze and mask.
Its randomness comes from streams of its own, so before and after stay the same for a seed.

The pieces: :mod:`~pipeline.demo.scene` (grid, dates), :mod:`~pipeline.demo.landscape`
(vectors), :mod:`~pipeline.demo.changes` (truth), :mod:`~pipeline.demo.spectra` (reflectance),
:mod:`~pipeline.demo.clouds`, :mod:`~pipeline.demo.render` (DN), :mod:`~pipeline.demo.layers`
(writing layers and truth).
"""
from __future__ import annotations

import datetime as _dt
import logging
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.features import rasterize

from pipeline.atomic import atomic_path, write_text
from pipeline.demo.changes import place_changes
from pipeline.demo.clouds import make_clouds
from pipeline.demo.landscape import build_landscape
from pipeline.demo.layers import write_layers, write_truth
from pipeline.demo.render import (SUN_AFTER, SUN_BEFORE, SUN_REFERENCE, Radiometry, misregistration,
                                  object_ids, render_after, render_before, smooth_noise,
                                  terrain_factor)
from pipeline.demo.scene import CRS_PROC, Scene, quarter_dates, reference_dates
from pipeline.demo.spectra import (REFERENCE, crop_stories, fill_reference, object_table,
                                   reference_stages)
from tiles.errors import ConfigError

log = logging.getLogger(__name__)

BANDS = ("blue", "green", "red", "nir")
MIN_SIZE = 400      # px: below this the landscape (hill, counties, coast) does not fit
BLOCK = 256         # px, GeoTIFF tile size
RUN_NAME = "北海示范区 2026 年第三季度卫片"
REVISIT_DAYS = 4    # days between the scenes of the reference date (a GF-1/GF-2 revisit)


def make_demo(out_dir, *, width: int = 3000, height: int = 3000, tile_size: int = 1024,
              seed: int = 20260930, quarter: str = "2026Q3", reference_scenes: int = 1) -> dict:
    """Generate the demo region under ``out_dir`` (deterministic for a given seed).

    Parameters
    ----------
    out_dir : path-like
        Folder to write into (created; existing demo files are replaced).
    width, height : int
        Scene size in 2 m pixels (default 6 x 6 km); at least 400.
    tile_size : int
        Processing tile size in pixels written to ``demo.toml``; tile lines (multiples of it)
        are where some true changes are placed across tiles.
    seed : int
        Seed of every random choice; the same seed gives identical arrays and layers.
    quarter : str
        After quarter, e.g. ``"2026Q3"``; the before date lies in the previous quarter, the
        reference date in the same quarter a year earlier.
    reference_scenes : int
        Scenes of the reference date (1 or more). Each further one is taken
        :data:`REVISIT_DAYS` days after the one before, of the same land and season under its
        own clouds, radiometry and misregistration, and ``demo.toml`` then gives each scene its
        own cloud mask (``{scene}``), so the mosaic fills one scene's clouds from the next.

    Returns
    -------
    dict
        ``Path`` of each file written: ``before``, ``after``, ``cloud_after``, ``reference``,
        ``cloud_reference`` (imagery; the reference is the same season a year earlier; further
        reference scenes as ``reference_2``, ``cloud_reference_2``, ...),
        ``counties``, ``dltb``, ``yjjbnt``, ``sthx``, ``zrbhd``, ``pzyd`` (layers),
        ``truth`` (truth.gpkg, layers ``truth`` and ``seasonal``) and ``config`` (demo.toml).

    Examples
    --------
    >>> paths = make_demo("demo", width=600, height=600, tile_size=256)  # doctest: +SKIP
    >>> sorted(paths)[:3]                                                # doctest: +SKIP
    ['after', 'before', 'cloud_after']
    """
    for key, value in (("width", width), ("height", height)):
        if not isinstance(value, (int, np.integer)) or value < MIN_SIZE:
            raise ConfigError(f"demo {key}={value!r}: give an integer number of pixels >= {MIN_SIZE}")
    if not isinstance(tile_size, (int, np.integer)) or tile_size < 64:
        raise ConfigError(f"demo tile_size={tile_size!r}: give an integer number of pixels >= 64")
    if not isinstance(reference_scenes, (int, np.integer)) or reference_scenes < 1:
        raise ConfigError(f"demo reference_scenes={reference_scenes!r}: give 1 or more scenes")
    q, prev, d_before, d_after = quarter_dates(quarter)
    q_ref, d_ref = reference_dates(quarter)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scene = Scene.near_beihai(width, height, tile_size)
    # New streams go at the end: spawn children are per index, so the others stay the same.
    names = ("land", "changes", "spectra", "clouds", "radiometry", "texture", "before", "after",
             "layers", "geometry", "ref_spectra", "ref_clouds", "ref_radiometry", "ref_geometry",
             "reference")
    rng = dict(zip(names, (np.random.default_rng(s)
                           for s in np.random.SeedSequence(seed).spawn(len(names)))))
    # further reference scenes draw from children of their own, so the first stays the same
    extra = np.random.SeedSequence([seed, 2]).spawn(4 * (reference_scenes - 1))

    land = build_landscape(scene, rng["land"], year=q.year)
    truth, parts = place_changes(land, rng["changes"])
    stories = crop_stories(land.land, rng["spectra"])
    table = object_table(land.land, land.buildings, stories, parts, rng["spectra"])
    stages = reference_stages(land.land, stories, rng["ref_spectra"])
    fill_reference(table, land.land, land.buildings, stories, stages, rng["ref_spectra"])
    patches = [s.patch for s in stories if s.patch is not None]
    ids_before, ids_after = object_ids(scene, land.land, land.buildings, patches, parts)
    changed = rasterize(((g, 1) for g in truth.geometry), out_shape=(scene.height, scene.width),
                        transform=scene.transform, fill=0, all_touched=True, dtype="uint8") > 0
    clouds = make_clouds(scene, changed, rng["clouds"], sun_elevation=SUN_AFTER[0],
                         sun_azimuth=SUN_AFTER[1])
    shape = (scene.height, scene.width)
    tex_f = smooth_noise(shape, rng["texture"], 1.5)
    tex_b = smooth_noise(shape, rng["texture"], 0.7)
    hill = (land.hill_center, land.hill_radius, land.hill_height)
    nodata = rasterize([(land.nodata, 1)], out_shape=shape, transform=scene.transform, fill=0,
                       dtype="uint8") > 0
    stamp_b, stamp_a = (d.strftime("%Y%m%d") for d in (d_before, d_after))
    paths = {
        "before": out / "imagery" / str(prev) / f"GF2_{stamp_b}_MS.tif",
        "after": out / "imagery" / str(q) / f"GF2_{stamp_a}_MS.tif",
        "cloud_after": out / "imagery" / str(q) / f"GF2_{stamp_a}_cloud.tif",
    }
    image = render_before(scene, ids_before, table, tex_f, tex_b,
                          terrain_factor(scene, *hill, SUN_BEFORE), nodata, rng["before"])
    _write_image(paths["before"], image, scene, d_before, BANDS, nodata=0, sun=SUN_BEFORE)
    del image
    image = render_after(scene, ids_after, table, tex_f, tex_b,
                         terrain_factor(scene, *hill, SUN_AFTER), clouds,
                         Radiometry.draw(rng["radiometry"]), misregistration(rng["geometry"]),
                         rng["after"])
    _write_image(paths["after"], image, scene, d_after, BANDS, nodata=0, sun=SUN_AFTER)
    del image, ids_after
    _write_image(paths["cloud_after"], clouds.mask[None], scene, d_after, ("cloud_or_shadow",),
                 nodata=None, sun=SUN_AFTER)
    after_cloud = float(clouds.mask.mean())
    # The reference: land use of the before date (ids_before), season of the after date.
    ref_cloud = []
    for k in range(reference_scenes):
        streams = ([rng[n] for n in ("ref_clouds", "ref_radiometry", "ref_geometry", "reference")]
                   if k == 0 else [np.random.default_rng(c) for c in extra[4 * k - 4:4 * k]])
        day = d_ref + _dt.timedelta(days=REVISIT_DAYS * k)
        suffix = "" if k == 0 else f"_{k + 1}"
        ref_path = out / "imagery" / str(q_ref) / f"GF2_{day.strftime('%Y%m%d')}_MS.tif"
        paths["reference" + suffix] = ref_path
        paths["cloud_reference" + suffix] = ref_path.with_name(ref_path.name[:-6] + "cloud.tif")
        clouds = make_clouds(scene, np.zeros(shape, bool), streams[0],
                             sun_elevation=SUN_REFERENCE[0], sun_azimuth=SUN_REFERENCE[1])
        image = render_after(scene, ids_before, table, tex_f, tex_b,
                             terrain_factor(scene, *hill, SUN_REFERENCE), clouds,
                             Radiometry.draw(streams[1]), misregistration(streams[2]),
                             streams[3], date=REFERENCE)
        _write_image(ref_path, image, scene, day, BANDS, nodata=0, sun=SUN_REFERENCE)
        del image
        _write_image(paths["cloud_reference" + suffix], clouds.mask[None], scene, day,
                     ("cloud_or_shadow",), nodata=None, sun=SUN_REFERENCE)
        ref_cloud.append(clouds.mask)
    del ids_before
    paths.update(write_layers(land, out, rng["layers"]))
    paths["truth"] = out / "truth.gpkg"
    write_truth(truth, _seasonal(land, stories, stages), paths["truth"])
    paths["config"] = out / "demo.toml"
    write_text(paths["config"], demo_toml(tile_size, reference_scenes))
    log.info("demo: %d true changes, %.1f %% cloud mask (reference %.1f %%, %.1f %% in all its "
             "scenes), written to %s", len(truth), 100 * after_cloud, 100 * ref_cloud[0].mean(),
             100 * np.logical_and.reduce(ref_cloud).mean(), out)
    return paths


def _seasonal(land, stories, stages) -> gpd.GeoDataFrame:
    """Farmland parcels with their crop story, EPSG:4545.

    KIND flood / harvest / green_up / none; BEFORE / AFTER the crop states; REFERENCE the state
    a year earlier on the reference date (the whole parcel); SHARE the part of the parcel that
    changed (below 1 for a harvest in progress).
    """
    idx = [s.land for s in stories]
    sub = land.land.iloc[idx]
    return gpd.GeoDataFrame({"LAND": np.asarray(idx, np.int64), "DLBM": sub.DLBM.to_numpy(),
                             "KIND": [s.kind for s in stories], "BEFORE": [s.before for s in stories],
                             "AFTER": [s.after for s in stories], "REFERENCE": list(stages),
                             "SHARE": np.array([s.share for s in stories], np.float64)},
                            geometry=sub.geometry.to_numpy(), crs=CRS_PROC)


def _write_image(path: Path, data: np.ndarray, scene: Scene, date: _dt.date, descriptions,
                 *, nodata, sun) -> None:
    """Write a tiled (256 x 256) DEFLATE GeoTIFF in EPSG:4545 with date tags, atomically."""
    profile = {"driver": "GTiff", "width": scene.width, "height": scene.height, "count": data.shape[0],
               "dtype": data.dtype.name, "crs": CRS_PROC, "transform": scene.transform,
               "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate",
               "predictor": 2, "interleave": "pixel", "nodata": nodata}
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            for i, name in enumerate(descriptions, start=1):
                dst.set_band_description(i, name)
            dst.update_tags(ACQUISITION_DATE=date.isoformat(),
                            TIFFTAG_DATETIME=date.strftime("%Y:%m:%d") + " 10:30:00",
                            SATELLITE="GF2", SENSOR="PMS (synthetic Tianyan demo)",
                            SUN_ELEVATION=f"{sun[0]:.1f}", SUN_AZIMUTH=f"{sun[1]:.1f}")
            if data.dtype == np.uint16:
                dst.update_tags(REFLECTANCE_SCALE="10000")
            else:
                dst.update_tags(VALUES="1 = cloud or cloud shadow (with margin), 0 = clear")


def _toml(value) -> str:
    """A TOML literal for a str, bool, int, float or list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML has no literal for {value!r}")
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {type(value).__name__}")


def demo_config(tile_size: int, reference_scenes: int = 1) -> dict:
    """The demo's run configuration as nested dicts (paths relative to ``demo.toml``).

    With several reference scenes, each has its own cloud mask, named by ``{scene}``.
    """
    ref = "{scene}" if reference_scenes > 1 else "*"
    return {
        "run": {"name": RUN_NAME, "workdir": "runs", "crs": CRS_PROC, "resolution": 2.0,
                "tile_size": int(tile_size), "workers": 2},
        "imagery": {"before": "imagery/{prev_quarter}/*_MS.tif", "after": "imagery/{quarter}/*_MS.tif",
                    "bands": list(BANDS), "cloud_mask_after": "imagery/{quarter}/*_cloud.tif",
                    "reference": f"imagery/{{last_year_quarter}}/{ref}_MS.tif",
                    "cloud_mask_reference": f"imagery/{{last_year_quarter}}/{ref}_cloud.tif"},
        "detect": {"min_area_m2": 200, "significance": 0.01},
        "layers.counties": {"path": "layers/counties.gpkg", "layer": "XZQ", "code_field": "XZQDM",
                            "name_field": "XZQMC"},
        "layers.farmland": {"path": "layers/dltb.gpkg", "layer": "DLTB", "code_field": "DLBM",
                            "codes": ["0101", "0102", "0103"]},
        "layers.basic_farmland": {"path": "layers/yjjbnt.gpkg", "layer": "YJJBNTTB"},
        "layers.ecological_redline": {"path": "layers/sthx.shp", "encoding": "GBK"},
        "layers.protected_areas": {"path": "layers/zrbhd.gpkg", "zone_field": "GNFQ",
                                   "core_values": ["核心保护区"]},
        "layers.approved": {"path": "layers/pzyd.gpkg"},
        "batches": {"max_per_batch": 25, "max_span_km": 20},
        "export": {"formats": ["gpkg", "shp", "kmz", "xlsx", "chips", "html", "qgis"]},
    }


def demo_toml(tile_size: int, reference_scenes: int = 1) -> str:
    """``demo.toml`` text: :func:`demo_config` hand-formatted as TOML (no TOML writer needed)."""
    lines = ["# Tianyan demo region (synthetic, near Beihai): written by `tianyan demo`.",
             "# Paths are relative to this file. Ground truth: truth.gpkg (layers truth, seasonal)."]
    for table, keys in demo_config(tile_size, reference_scenes).items():
        lines += ["", f"[{table}]"] + [f"{k} = {_toml(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"
