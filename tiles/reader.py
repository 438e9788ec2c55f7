"""Aligned reads of one date onto a window of the processing grid.

Each scene is warped on the fly (``WarpedVRT``) onto the grid, so both dates land on the same
pixels whatever their own CRS: bilinear (configurable) for reflectance, nearest for masks.
Several scenes of one date are mosaicked: the first valid pixel wins, in sorted file order.
"""
from __future__ import annotations

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from tiles.errors import TileError
from tiles.grid import Grid
from tiles.imagery import DateImagery


def _vrt(src, grid: Grid, resampling: Resampling, nodata, transform: Affine | None = None,
         shape: tuple[int, int] | None = None) -> WarpedVRT:
    height, width = shape or (grid.height, grid.width)
    kwargs = dict(crs=grid.crs, transform=transform or grid.transform, width=width, height=height,
                  resampling=resampling)
    if nodata is not None:
        kwargs.update(src_nodata=nodata, nodata=nodata)
    return WarpedVRT(src, **kwargs)


def read_date(date: DateImagery, grid: Grid, window: Window, *, resampling: str = "bilinear",
              decimate: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Read one date's bands over ``window`` of ``grid``.

    Returns ``(data, valid)``: float32 ``(nroles, h, w)`` in the files' units and a bool ``(h, w)``
    mask of pixels with data. ``decimate`` > 1 samples every n-th pixel of the grid (nearest),
    which is how the scene-wide fit sees the whole date at a bounded cost.
    """
    transform, shape, win = _grid_view(grid, window, decimate)
    h, w = int(win.height), int(win.width)
    data = np.zeros((len(date.roles), h, w), dtype=np.float32)
    valid = np.zeros((h, w), dtype=bool)
    method = Resampling.nearest if decimate > 1 else Resampling[resampling]
    for path, nodata in zip(date.files, date.nodata):
        try:
            with rasterio.open(path) as src, _vrt(src, grid, method, nodata, transform, shape) as vrt:
                bands = vrt.read(list(date.indexes), window=win, out_dtype="float32")
                ok = vrt.read_masks(1, window=win) > 0
                if nodata is not None:
                    ok &= np.all(bands != nodata, axis=0)
        except RasterioError as exc:
            raise TileError(f"{path}: read failed in window {_describe(window)}: {exc}") from None
        fill = ok & ~valid
        data[:, fill] = bands[:, fill]
        valid |= fill
    return data, valid


def read_cloud(mask_files: list[str], grid: Grid, window: Window, *, decimate: int = 1) -> np.ndarray:
    """Bool ``(h, w)``: True where any cloud/shadow mask marks the pixel (value > 0, not nodata)."""
    transform, shape, win = _grid_view(grid, window, decimate)
    cloud = np.zeros((int(win.height), int(win.width)), dtype=bool)
    for path in mask_files:
        try:
            with rasterio.open(path) as src, _vrt(src, grid, Resampling.nearest, src.nodata,
                                                  transform, shape) as vrt:
                values = vrt.read(1, window=win)
                hit = values > 0
                if src.nodata is not None:
                    hit &= values != src.nodata
                cloud |= hit
        except RasterioError as exc:
            raise TileError(f"{path}: cloud mask read failed in window {_describe(window)}: {exc}") from None
    return cloud


def read_pair(before: DateImagery, after: DateImagery, grid: Grid, window: Window, *,
              resampling: str = "bilinear", decimate: int = 1):
    """Both dates over one window plus the combined mask: valid in both and cloud-free in both."""
    b, vb = read_date(before, grid, window, resampling=resampling, decimate=decimate)
    a, va = read_date(after, grid, window, resampling=resampling, decimate=decimate)
    valid = vb & va
    for masks in (before.cloud_masks, after.cloud_masks):
        if masks:
            valid &= ~read_cloud(masks, grid, window, decimate=decimate)
    return b, a, valid


def _grid_view(grid: Grid, window: Window, decimate: int):
    """Transform, shape and window of the (possibly decimated) virtual grid to read from."""
    if decimate <= 1:
        return grid.transform, (grid.height, grid.width), window
    transform = grid.transform @ Affine.scale(decimate)
    shape = (max(1, grid.height // decimate), max(1, grid.width // decimate))
    win = Window(window.col_off // decimate, window.row_off // decimate,
                 max(1, window.width // decimate), max(1, window.height // decimate))
    return transform, shape, win


def _describe(window: Window) -> str:
    return (f"col {int(window.col_off)} row {int(window.row_off)} "
            f"{int(window.width)}x{int(window.height)}")
