"""Aligned reads of one date onto a window of the processing grid.

Each scene is warped on the fly (``WarpedVRT``) onto the grid, so both dates land on the same
pixels whatever their own CRS: bilinear (configurable) for reflectance, nearest for masks. A file
already on the grid (same CRS, pixel size and pixel corners) is read directly, with identical
values and less work. Several scenes of one date are mosaicked: the first valid pixel wins, in
sorted scene order. Only scenes whose footprint meets the window are opened; a failed read
raises :class:`~tiles.errors.TileError` naming the file and the window.
"""
from __future__ import annotations

import math

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from tiles.errors import TileError
from tiles.footprint import covered, scenes_meeting, window_box
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
              decimate: int = 1, scene_valid: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one date's bands over ``window`` of ``grid``.

    Returns ``(data, valid)``: float32 ``(nroles, h, w)`` in the files' units and a bool ``(h, w)``
    mask of pixels with data. ``decimate`` > 1 samples every n-th pixel of the grid (nearest),
    which is how the scene-wide fit sees the whole date at a bounded cost. When ``scene_valid``
    is a dict, each scene read stores its own valid mask there under ``(date.label, scene)``.
    """
    transform, shape, win = grid_view(grid, window, decimate)
    h, w = int(win.height), int(win.width)
    data = np.zeros((len(date.roles), h, w), dtype=np.float32)
    valid = np.zeros((h, w), dtype=bool)
    first = True
    method = Resampling.nearest if decimate > 1 else Resampling[resampling]
    for i in scenes_meeting(date.footprints, date.files, window_box(grid, window)):
        scene, nodata = date.files[i], date.nodata[i]
        reads = date.scene_reads(scene, nodata)
        bands = None
        ok = np.ones((h, w), dtype=bool)
        for path, positions, indexes, nd in reads:
            try:
                with rasterio.open(path) as src:
                    if _on_grid(src, grid):
                        values, good = _read_direct(src, grid, win, indexes, nd, decimate)
                    else:
                        with _vrt(src, grid, method, nd, transform, shape) as vrt:
                            values = vrt.read(indexes, window=win, out_dtype="float32")
                            good = vrt.read_masks(indexes[0], window=win) > 0
                        good &= ~_is_nodata(values, nd)
            except RasterioError as exc:
                cause = exc.__cause__ or exc
                raise TileError(f"{path}: read failed in window {describe(window)} of the grid: "
                                f"{cause}") from None
            if len(reads) == 1:
                bands = values                      # one file holds every role, in order
            else:
                if bands is None:
                    bands = np.empty((len(date.roles), h, w), dtype=np.float32)
                for k, pos in enumerate(positions):
                    bands[pos] = values[k]
            ok &= good
        if scene_valid is not None:
            scene_valid[(date.label, scene)] = ok.copy()
        if first:                                   # take the scene's array as it is
            data, valid, first = bands, ok, False
            if not ok.all():
                np.copyto(data, 0, where=~ok)
            continue
        fill = ok & ~valid
        np.copyto(data, bands, where=fill)          # first valid pixel wins
        valid |= fill
    return data, valid


def _is_nodata(values: np.ndarray, nodata) -> np.ndarray:
    """(h, w): True where any band holds ``nodata`` (NaN-aware)."""
    if nodata is None:
        return np.zeros(values.shape[1:], dtype=bool)
    out = np.zeros(values.shape[1:], dtype=bool)
    nan = isinstance(nodata, float) and math.isnan(nodata)
    for band in values:                             # band by band: no (n, h, w) temporary
        out |= np.isnan(band) if nan else (band == np.float32(nodata))
    return out


def _on_grid(src, grid: Grid) -> bool:
    """True when the file's pixels are grid pixels: same CRS, pixel size, corners on the grid."""
    t = src.transform
    if t.b or t.d or abs(t.a - grid.res) > 1e-9 * grid.res or abs(t.e + grid.res) > 1e-9 * grid.res:
        return False
    col, row = (t.c - grid.left) / grid.res, (grid.top - t.f) / grid.res
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return False
    return src.crs is not None and src.crs == rasterio.crs.CRS.from_user_input(grid.crs)


def _read_direct(src, grid: Grid, win: Window, indexes: list[int], nodata, decimate: int = 1):
    """Read a window of the (decimated) grid from a file on the grid: no resampling; the part
    inside the file is read, the rest is invalid. A decimated read takes the pixel under each
    coarse pixel's centre, as the warper's nearest neighbour does."""
    d = max(1, int(decimate))
    h, w = int(win.height), int(win.width)
    values = np.zeros((len(indexes), h, w), dtype=np.float32)
    good = np.zeros((h, w), dtype=bool)
    col0 = round((src.transform.c - grid.left) / grid.res)
    row0 = round((grid.top - src.transform.f) / grid.res)
    # file pixel of each output row / column, and the output rows / columns inside the file
    rows = (int(win.row_off) + np.arange(h)) * d + d // 2 - row0
    cols = (int(win.col_off) + np.arange(w)) * d + d // 2 - col0
    rin = np.nonzero((rows >= 0) & (rows < src.height))[0]
    cin = np.nonzero((cols >= 0) & (cols < src.width))[0]
    if not rin.size or not cin.size:
        return values, good
    r0, r1, c0, c1 = rows[rin[0]], rows[rin[-1]] + 1, cols[cin[0]], cols[cin[-1]] + 1
    part = Window(int(c0), int(r0), int(c1 - c0), int(r1 - r0))
    rs, cs = slice(rin[0], rin[-1] + 1), slice(cin[0], cin[-1] + 1)
    if d == 1 and (part.height, part.width) == (h, w):
        src.read(indexes, window=part, out=values)  # the whole window: decode straight into it
    else:
        values[:, rs, cs] = src.read(indexes, window=part)[:, ::d, ::d]
    if nodata is not None and nodata != src.nodata:
        inside = True                               # nodata given by the config: tested below
    else:
        flags = src.mask_flag_enums[indexes[0] - 1]
        if MaskFlags.all_valid in flags or MaskFlags.nodata in flags:
            inside = True                           # the file's nodata: tested below
        else:                                       # an internal mask or alpha band
            inside = src.read_masks(indexes[0], window=part)[::d, ::d] > 0
    good[rs, cs] = inside & ~_is_nodata(values[:, rs, cs], nodata)
    return values, good


def read_cloud(mask_files: list[str], grid: Grid, window: Window, *, decimate: int = 1) -> np.ndarray:
    """Bool ``(h, w)``: True where any cloud/shadow mask marks the pixel (value > 0, not nodata)."""
    transform, shape, win = grid_view(grid, window, decimate)
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
            cause = exc.__cause__ or exc
            raise TileError(f"{path}: cloud mask read failed in window {describe(window)} of the grid: "
                            f"{cause}") from None
    return cloud


def read_pair(before: DateImagery, after: DateImagery, grid: Grid, window: Window, *,
              resampling: str = "bilinear", decimate: int = 1, scene_valid: dict | None = None):
    """Both dates over one window plus the combined mask: valid in both and cloud-free in both.

    When the footprints show no common data in the window nothing is read (all invalid).
    """
    if not has_common_data(before, after, grid, window):
        _, _, win = grid_view(grid, window, decimate)
        shape = (int(win.height), int(win.width))
        empty = np.zeros((len(before.roles), *shape), np.float32)
        return empty, np.zeros((len(after.roles), *shape), np.float32), np.zeros(shape, bool)
    b, vb = read_date(before, grid, window, resampling=resampling, decimate=decimate, scene_valid=scene_valid)
    a, va = read_date(after, grid, window, resampling=resampling, decimate=decimate, scene_valid=scene_valid)
    valid = vb & va
    for masks in (before.cloud_masks, after.cloud_masks):
        if masks and valid.any():
            valid &= ~read_cloud(masks, grid, window, decimate=decimate)
    return b, a, valid


def has_common_data(before: DateImagery, after: DateImagery, grid: Grid, window: Window) -> bool:
    """False when the footprints prove that no pixel of ``window`` has data in both dates."""
    area = window_box(grid, window)
    common = covered(before.footprints, before.files, area)
    if common.area <= 0:
        return False
    return covered(after.footprints, after.files, common).area > 0


def grid_view(grid: Grid, window: Window, decimate: int):
    """Transform, shape and window of the (possibly decimated) virtual grid to read from."""
    if decimate <= 1:
        return grid.transform, (grid.height, grid.width), window
    transform = grid.transform @ Affine.scale(decimate)
    shape = (max(1, grid.height // decimate), max(1, grid.width // decimate))
    win = Window(window.col_off // decimate, window.row_off // decimate,
                 max(1, window.width // decimate), max(1, window.height // decimate))
    return transform, shape, win


def describe(window: Window) -> str:
    """``col C row R WxH`` of a grid window, for messages."""
    return (f"col {int(window.col_off)} row {int(window.row_off)} "
            f"{int(window.width)}x{int(window.height)}")
