"""The processing grid and its tiles.

The grid is north-up in the processing CRS, with square pixels of ``resolution`` metres. Its
pixel corners are those of the after date's first file when that file is north-up in the
processing CRS at the grid resolution (so it is read without resampling), else multiples of the
resolution. Tiles are whole-pixel windows of ``tile_size``; each carries a halo window (the tile
grown by ``halo`` pixels, clipped to the grid) for the detector's neighbourhood operations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from tiles.errors import InputFileError


@dataclass(frozen=True)
class Grid:
    """North-up pixel grid: ``crs`` string, ``left``/``top`` corner, ``res`` metres, size in pixels."""

    crs: str
    left: float
    top: float
    res: float
    width: int
    height: int

    @property
    def transform(self) -> Affine:
        return Affine(self.res, 0.0, self.left, 0.0, -self.res, self.top)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.left, self.top - self.height * self.res, self.left + self.width * self.res, self.top)

    def window_transform(self, window: Window) -> Affine:
        return rasterio.windows.transform(window, self.transform)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        return cls(**d)


@dataclass(frozen=True)
class Tile:
    """A tile: its own pixels (``core``) and the halo window read around them."""

    row: int
    col: int
    core: Window
    halo: Window

    @property
    def id(self) -> str:
        return f"{self.row}_{self.col}"

    @property
    def core_in_halo(self) -> tuple[slice, slice]:
        """Slices of the core pixels inside arrays read for the halo window."""
        r0 = int(self.core.row_off - self.halo.row_off)
        c0 = int(self.core.col_off - self.halo.col_off)
        return slice(r0, r0 + int(self.core.height)), slice(c0, c0 + int(self.core.width))


def footprint(files: list[str], crs: str) -> tuple[float, float, float, float]:
    """Union of the files' bounds, transformed to ``crs`` (densified edges)."""
    boxes = []
    for f in files:
        with rasterio.open(f) as src:
            boxes.append(transform_bounds(src.crs, CRS.from_user_input(crs), *src.bounds, densify_pts=21))
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))


def make_grid(before_files: list[str], after_files: list[str], *, crs: str = "",
              resolution: float = 0.0) -> Grid:
    """Grid over the overlap of both dates.

    The CRS defaults to the first after file's, the resolution to the finest pixel size among
    the after files in that CRS (so 10 m and 20 m band files give a 10 m grid).
    """
    with rasterio.open(after_files[0]) as src:
        crs = crs or src.crs.to_string()
    if not resolution:
        target = CRS.from_user_input(crs)
        sizes = []
        for f in after_files:
            with rasterio.open(f) as src:
                if src.crs == target:
                    sizes.append(float(min(abs(src.res[0]), abs(src.res[1]))))
        if not sizes:
            raise InputFileError(f"{after_files[0]}: [run].crs differs from the imagery's CRS, "
                                 f"so set [run].resolution (metres) as well")
        resolution = min(sizes)
    if not CRS.from_user_input(crs).is_projected:
        raise InputFileError(f"processing CRS {crs} is geographic: use a projected CRS in metres "
                             f"such as EPSG:4545 ([run].crs)")
    b = footprint(before_files, crs)
    a = footprint(after_files, crs)
    left, bottom = max(a[0], b[0]), max(a[1], b[1])
    right, top = min(a[2], b[2]), min(a[3], b[3])
    if right <= left or top <= bottom:
        raise InputFileError(f"{before_files[0]} and {after_files[0]}: the two dates do not overlap "
                             f"(check [imagery].before / after and their CRS)")
    # Snap outward to whole pixels of the after file's lattice (read without resampling), or of a
    # lattice anchored at multiples of the resolution when that file is in another CRS or size.
    ox, oy = _lattice(after_files[0], crs, resolution)
    left = ox + math.floor(round((left - ox) / resolution, 6)) * resolution
    top = oy + math.ceil(round((top - oy) / resolution, 6)) * resolution
    width = int(math.ceil(round((right - left) / resolution, 6)))
    height = int(math.ceil(round((top - bottom) / resolution, 6)))
    return Grid(crs=crs, left=left, top=top, res=float(resolution), width=width, height=height)


def _lattice(path: str, crs: str, resolution: float) -> tuple[float, float]:
    """Offsets (x, y) of the file's pixel corners from multiples of ``resolution`` when the file is
    north-up in ``crs`` at that resolution, else (0, 0)."""
    with rasterio.open(path) as src:
        t = src.transform
        same = (src.crs == CRS.from_user_input(crs) and not t.b and not t.d
                and abs(t.a - resolution) <= 1e-9 * resolution and abs(t.e + resolution) <= 1e-9 * resolution)
    if not same:
        return 0.0, 0.0
    return math.fmod(t.c, resolution), math.fmod(t.f, resolution)


def make_tiles(grid: Grid, tile_size: int, halo: int) -> list[Tile]:
    """Row-major tiles covering the grid; edge tiles are smaller, halos are clipped to the grid."""
    tiles = []
    for row, r0 in enumerate(range(0, grid.height, tile_size)):
        for col, c0 in enumerate(range(0, grid.width, tile_size)):
            h = min(tile_size, grid.height - r0)
            w = min(tile_size, grid.width - c0)
            hr0, hc0 = max(0, r0 - halo), max(0, c0 - halo)
            hr1, hc1 = min(grid.height, r0 + h + halo), min(grid.width, c0 + w + halo)
            tiles.append(Tile(row, col, Window(c0, r0, w, h), Window(hc0, hr0, hc1 - hc0, hr1 - hr0)))
    return tiles
