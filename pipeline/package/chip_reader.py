"""The ``read_chip`` a run gives to the county packages: both dates over a small window.

Reads through :func:`tiles.reader.read_date` on the run's processing grid, so chips show
exactly the pixels the detector saw (same warp, same mosaic order). Only the scenes whose
footprint meets the chip are opened, so a province mosaic of a thousand scenes costs a
few file opens per chip, not a thousand.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from affine import Affine
from rasterio.windows import Window

from pipeline.package.chips import ChipReader
from tiles.errors import ConfigError, TileError
from tiles.grid import Grid, footprint
from tiles.imagery import DateImagery
from tiles.reader import read_date

RGB = ("red", "green", "blue")


def grid_chip_reader(before: DateImagery, after: DateImagery, grid: Grid, *,
                     resampling: str = "bilinear") -> ChipReader:
    """A ``read_chip(bounds)`` for :func:`pipeline.package.write_county_package`.

    Parameters
    ----------
    before, after : DateImagery
        The run's two dates (``plan.json``), with red, green and blue among their roles.
    grid : Grid
        The run's processing grid; chip bounds are in its CRS (metres).
    resampling : str
        As for the detector's reads.

    Returns
    -------
    callable
        ``read_chip((minx, miny, maxx, maxy)) -> (before, after, transform)``: masked float32
        arrays ``(3, rows, cols)`` in red, green, blue order (masked where a date has no
        data) over the grid window covering the bounds (clipped to the grid), and the
        window's affine transform. Raises TileError when the bounds miss the grid.
    """
    for date in (before, after):
        missing = [r for r in RGB if r not in date.roles]
        if missing:
            raise ConfigError(f"[imagery].bands has no {', '.join(missing)} for the {date.label} date; "
                              "image chips need red, green and blue (drop \"chips\" from [export].formats)")
    idx_b = [before.roles.index(r) for r in RGB]
    idx_a = [after.roles.index(r) for r in RGB]
    feet_b = [footprint([f], grid.crs) for f in before.files]
    feet_a = [footprint([f], grid.crs) for f in after.files]

    def read_chip(bounds: tuple[float, float, float, float]):
        window = _window(grid, bounds)
        b = _read(before, feet_b, idx_b, grid, window, bounds, resampling)
        a = _read(after, feet_a, idx_a, grid, window, bounds, resampling)
        return b, a, grid.window_transform(window)

    return read_chip


def _read(date: DateImagery, feet, idx, grid: Grid, window: Window, bounds, resampling):
    minx, miny, maxx, maxy = bounds
    keep = [i for i, (x0, y0, x1, y1) in enumerate(feet)
            if x0 < maxx and x1 > minx and y0 < maxy and y1 > miny]
    rows, cols = int(window.height), int(window.width)
    if not keep:
        data = np.zeros((3, rows, cols), dtype=np.float32)
        return np.ma.masked_array(data, mask=np.ones(data.shape, dtype=bool))
    sub = dataclasses.replace(date, files=[date.files[i] for i in keep],
                              nodata=[date.nodata[i] for i in keep], crs=[date.crs[i] for i in keep])
    data, valid = read_date(sub, grid, window, resampling=resampling)
    rgb = data[idx]
    return np.ma.masked_array(rgb, mask=np.broadcast_to(~valid, rgb.shape).copy())


def _window(grid: Grid, bounds: tuple[float, float, float, float]) -> Window:
    """Whole grid pixels covering ``bounds``, clipped to the grid."""
    minx, miny, maxx, maxy = bounds
    inv: Affine = ~grid.transform
    c0, r0 = inv * (minx, maxy)
    c1, r1 = inv * (maxx, miny)
    c0, r0 = max(0, math.floor(c0 + 1e-9)), max(0, math.floor(r0 + 1e-9))
    c1, r1 = min(grid.width, math.ceil(c1 - 1e-9)), min(grid.height, math.ceil(r1 - 1e-9))
    if c1 <= c0 or r1 <= r0:
        raise TileError(f"chip window {tuple(round(v) for v in bounds)} lies outside the imagery grid")
    return Window(c0, r0, c1 - c0, r1 - r0)
