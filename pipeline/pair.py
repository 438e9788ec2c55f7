"""Ad hoc detection on one pair of raster files (``tianyan detect``): no overlay, no run directory.

The after file (and the optional reference file, the same season a year earlier) is warped onto
the before file's grid when they differ. Output: one GeoPackage
layer ``changes`` with the detector attributes, and optionally the change probability as a
Cloud-Optimised GeoTIFF.
"""
from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.shutil

from detect.classify import classify
from detect.detector import HALO_PX, DetectParams
from detect.merge import apply_mmu, apply_reference, merge_seams
from detect.objects import empty_parts
from pipeline.atomic import atomic_path
from pipeline.stages import Reference, fit_scene_model, process_tile
from tiles.errors import InputFileError
from tiles.grid import make_grid, make_tiles
from tiles.imagery import check_pair, open_files

log = logging.getLogger("tianyan")


def detect_pair(before_path: str, after_path: str, out: str, *, bands: list[str] | None = None,
                min_area_m2: float | None = None, tile_size: int = 2048,
                probability: str | None = None, detect_options: dict | None = None,
                reference_path: str | None = None) -> gpd.GeoDataFrame:
    """Detect change between two raster files and write polygons (and the probability raster).

    ``reference_path``: an optional third file, the same season a year earlier, with the same
    bands; see ``detect.merge.apply_reference``.
    """
    for path in (before_path, after_path, reference_path):
        if path is not None and not Path(path).is_file():
            raise InputFileError(f"{path}: file not found")
    with rasterio.open(before_path) as src:
        if src.crs is None:
            raise InputFileError(f"{before_path}: has no CRS (assign one, e.g. gdal_edit.py -a_srs EPSG:4545)")
        crs, res, count = src.crs.to_string(), float(abs(src.res[0])), src.count
    if bands is None:
        if count != 4:
            raise InputFileError(f"{before_path}: has {count} bands; name their roles with --bands "
                                 f"(e.g. blue,green,red,nir,swir,-)")
        bands = ["blue", "green", "red", "nir"]
    before = open_files("before", [before_path], bands, require_date=False)
    after = open_files("after", [after_path], bands, require_date=False)
    options = dict(detect_options or {})
    if min_area_m2 is not None:
        options["min_area_m2"] = min_area_m2
    params = DetectParams.from_dict(options)
    grid = make_grid([before_path], [after_path], crs=crs, resolution=res)
    ref_date = None
    if reference_path is not None:
        ref_date = open_files("reference", [reference_path], bands, require_date=False)
        check_pair(ref_date, after)
    model, _, ref_model = fit_scene_model(before, after, grid, params, reference=ref_date)
    reference = Reference(ref_date, ref_model) if ref_date is not None else None
    tiles = make_tiles(grid, tile_size, HALO_PX)
    frames = []
    prob_tmp = None
    if probability:
        prob_tmp = Path(out).with_suffix(".probability.tmp.tif")
        profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=1, dtype="float32",
                       crs=grid.crs, transform=grid.transform, nodata=-1.0, tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate")
        prob_ds = rasterio.open(prob_tmp, "w", **profile)
    try:
        for tile in tiles:
            parts, layers, valid, _ = process_tile(grid, before, after, model, params, tile,
                                                   reference=reference)
            if len(parts):
                frames.append(parts)
            if probability:
                rs, cs = tile.core_in_halo
                p = np.full((int(tile.core.height), int(tile.core.width)), -1.0, dtype=np.float32)
                if layers is not None:
                    p = np.where(valid[rs, cs], layers.probability[rs, cs], -1.0).astype(np.float32)
                prob_ds.write(p, 1, window=tile.core)
    finally:
        if probability:
            prob_ds.close()
    if frames:
        merged = merge_seams(gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=grid.crs))
        left = apply_reference(merged, params.min_area_m2)[0] if reference is not None else merged
        result = classify(apply_mmu(left, params.min_area_m2, params.mmu_outline_px))
    else:
        result = classify(empty_parts(grid.crs))
    result["QSX"], result["HSX"] = before.date, after.date
    with atomic_path(out) as tmp:
        result.to_file(tmp, layer="changes", driver="GPKG", engine="pyogrio")
    if probability:
        with atomic_path(probability) as tmp:
            rasterio.shutil.copy(prob_tmp, tmp, driver="COG", compress="deflate")
        Path(prob_tmp).unlink(missing_ok=True)
    log.info("%d change polygon(s) written to %s", len(result), out)
    return result
