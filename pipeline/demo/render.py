"""Rendering the demo's dates: object ids -> reflectance -> sensor DN (uint16, x 10000).

Ground reflectance comes from :mod:`pipeline.demo.spectra`; on top of it the renderer applies
what makes a naive band difference fail: terrain illumination under each date's sun, a sensor
blur, and on the after date a sub-pixel misregistration, cloud shadows and clouds, thin haze
that no cloud mask catches, a per-band gain and offset (haze adds most in blue) that drifts
across the scene, and a higher noise level. The reference date (the same season a year
earlier) is rendered like the after date with its own sun, radiometry, shift, clouds and
noise. Everything is vectorised NumPy on the full grid;
objects are burnt with ``rasterio.features.rasterize``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from rasterio.features import rasterize
from scipy import ndimage

from pipeline.demo.clouds import Clouds
from pipeline.demo.scene import Scene
from pipeline.demo.spectra import EM, PATTERN_PANELS, PATTERN_ROWS, ObjectTable

#: Sun (elevation, azimuth clockwise from north), degrees, ~10:30 CST at 21.6N on each date.
SUN_BEFORE = (62.0, 95.0)
SUN_AFTER = (58.0, 112.0)
#: Reference date six days before the after date's anniversary: the sun stands a little higher
#: (declination ~13.5 vs ~11.3 deg) and a little further east at the same local time.
SUN_REFERENCE = (59.0, 109.0)
#: Share of reflectance left in full cloud shadow (diffuse skylight, bluer than direct sun).
SHADOW_DIFFUSE = np.array([0.45, 0.38, 0.33, 0.30], np.float32)
#: px, Gaussian sensor blur before / after. A 2 m pan-sharpened product (GF-1 PMS 2 m pan) has an
#: MTF at Nyquist of ~0.15: exp(-2 pi^2 sigma^2 / 4) = 0.15 gives sigma ~0.6 px; the after date
#: is imaged more off-nadir, so its ground sample and blur are larger; so is the reference.
PSF_SIGMA = (0.6, 0.7, 0.7)
NOISE_DN = (35.0, 60.0, 60.0)  # per-pixel noise (DN) before / after / reference
#: px, range of the after image's shift against the before image (random direction): 0.5-1.2 m,
#: the relative orthorectification error of two off-nadir scenes on the same DEM and control.
MISREGISTRATION_PX = (0.25, 0.6)
#: Relative change of the path radiance (haze) across the scene, and of the direct
#: transmittance: aerosol load drifts over a few km (a coastal or industrial haze plume).
HAZE_DRIFT = (0.1, 0.4)
TRANSMITTANCE_DRIFT = (0.0, 0.03)


@dataclass
class Radiometry:
    """After- or reference-date sensor response, per band: DN_after = gain * t(x) * DN_true + offset * (1 + s * r(x)).

    ``r(x)`` is a linear ramp from -1 to 1 across the scene along ``angle`` (radians from east);
    the path radiance ``offset`` (haze, most in blue) drifts by ``drift`` (s) along it and the
    transmittance t(x) = 1 - ``t_drift`` * r(x) falls where the haze is thicker.
    """

    gain: np.ndarray
    offset: np.ndarray
    drift: float = 0.0
    t_drift: float = 0.0
    angle: float = 0.0

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Radiometry":
        gain = rng.uniform(0.85, 1.15, 4)
        # Path radiance (haze) adds most at short wavelengths.
        offset = np.array([rng.uniform(250, 400), rng.uniform(150, 300), rng.uniform(80, 200),
                           rng.uniform(0, 100)])
        return cls(gain.astype(np.float32), offset.astype(np.float32), drift=rng.uniform(*HAZE_DRIFT),
                   t_drift=rng.uniform(*TRANSMITTANCE_DRIFT), angle=rng.uniform(0, 2 * np.pi))

    def ramp(self, scene: Scene) -> np.ndarray:
        """r(x): -1 .. 1 across the scene along ``angle``, float32 (H, W)."""
        cols, rows = scene.pixel_centres()
        u = (cols[None, :] - 0.5 * scene.wm) * np.float32(math.cos(self.angle)) \
            - (rows[:, None] - 0.5 * scene.hm) * np.float32(math.sin(self.angle))
        return (u / (np.abs(u).max() or 1.0)).astype(np.float32)


def misregistration(rng: np.random.Generator) -> tuple[float, float]:
    """(rows, cols) px the after (or reference) image is shifted by against the before grid:
    random direction, size in MISREGISTRATION_PX."""
    size, direction = rng.uniform(*MISREGISTRATION_PX), rng.uniform(0, 2 * np.pi)
    return float(size * math.sin(direction)), float(size * math.cos(direction))


def object_ids(scene: Scene, land, buildings, patches, parts) -> tuple[np.ndarray, np.ndarray]:
    """Object id rasters (int32) of the before and after dates, ids as in ``object_table``.

    ``patches``: polygons of parcels' parts that changed on their own (harvest in progress),
    drawn on the after date under the change ``parts``. A change part is drawn on the date its
    WHEN column names (``after``: the change; ``before``: how its site looked before, when that
    differs from the parcel around it).
    """
    shape, tr = (scene.height, scene.width), scene.transform
    ids = rasterize(((g, i) for i, g in enumerate(land.geometry, start=1)), out_shape=shape,
                    transform=tr, fill=0, dtype="int32")
    base = 1 + len(land)
    if len(buildings):
        rasterize(((g, base + j) for j, g in enumerate(buildings.geometry)), out=ids, transform=tr)
    before = ids.copy()
    base += len(buildings)
    if len(patches):
        rasterize(((g, base + j) for j, g in enumerate(patches)), out=ids, transform=tr)
    base += len(patches)
    when = parts.WHEN.to_numpy() if len(parts) else np.array([])
    for date, out in (("before", before), ("after", ids)):
        sel = [(g, base + j) for j, g in enumerate(parts.geometry) if when[j] == date]
        if sel:
            rasterize(sel, out=out, transform=tr)
    return before, ids


def smooth_noise(shape, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Spatially correlated noise with unit standard deviation (float32)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return field / (field.std() or 1.0)


def terrain_factor(scene: Scene, center, radius: float, height: float, sun) -> np.ndarray:
    """Illumination factor cos(i) / cos(z) of a Gaussian hill (flat land: 1), float32 (H, W)."""
    factor = np.ones((scene.height, scene.width), np.float32)
    win = scene.pixel_slices(shapely.Point(center).buffer(2.5 * radius))
    if win is None:
        return factor
    rows = (np.arange(win[0].start, win[0].stop) + 0.5) * scene.res
    cols = (np.arange(win[1].start, win[1].stop) + 0.5) * scene.res
    dx = cols[None, :] - (center[0] - scene.x0)
    dy = (scene.y0 - center[1]) - rows[:, None]          # metres north of the centre
    z = height * np.exp(-0.5 * (dx ** 2 + dy ** 2) / (0.5 * radius) ** 2)
    dz_dy, dz_dx = np.gradient(z, scene.res)
    dz_dnorth = -dz_dy                                    # rows grow southwards
    zen, az = math.radians(90 - sun[0]), math.radians(sun[1])
    sx, sy, sz = math.sin(az) * math.sin(zen), math.cos(az) * math.sin(zen), math.cos(zen)
    cos_i = (-dz_dx * sx - dz_dnorth * sy + sz) / np.sqrt(dz_dx ** 2 + dz_dnorth ** 2 + 1)
    factor[win] = np.clip(cos_i / sz, 0.3, 1.6)
    return factor


def _cover_and_brightness(scene, ids, table: ObjectTable, d: int, tex_f, tex_b):
    """Per-pixel foreground fraction and brightness of date ``d`` (float32 (H, W) each)."""
    f = table.f[d][ids] * (1.0 + table.tex[ids] * tex_f)
    pat = table.pattern[ids]
    sel = np.nonzero(pat)
    if sel[0].size:
        oid = ids[sel]
        x = (sel[1] + 0.5).astype(np.float32) * scene.res
        y = -(sel[0] + 0.5).astype(np.float32) * scene.res
        ang = table.angle[oid]
        phase = (-x * np.sin(ang) + y * np.cos(ang)) / table.period[oid]
        rows = table.f[d][oid] * (0.35 + 0.65 * (0.5 + 0.5 * np.cos(2 * np.pi * phase)))
        panels = table.f[d][oid] * ((phase - np.floor(phase)) < table.duty[oid])
        f[sel] = np.where(pat[sel] == PATTERN_ROWS, rows, np.where(pat[sel] == PATTERN_PANELS, panels, f[sel]))
    np.clip(f, 0.0, 1.0, out=f)
    bright = table.bright[d][ids] * (1.0 + 0.04 * tex_b)
    return f, bright


def render_before(scene, ids, table, tex_f, tex_b, terrain, nodata, rng) -> np.ndarray:
    """Before-date DN, uint16 (4, H, W), 0 where ``nodata`` (bool (H, W)) is set."""
    f, bright = _cover_and_brightness(scene, ids, table, 0, tex_f, tex_b)
    out = np.empty((4, scene.height, scene.width), np.uint16)
    for b in range(4):
        refl = ((1 - f) * table.A[0, :, b][ids] + f * table.V[0, :, b][ids]) * bright * terrain
        refl = ndimage.gaussian_filter(refl, PSF_SIGMA[0])
        dn = refl * 10000 + rng.standard_normal(refl.shape, dtype=np.float32) * NOISE_DN[0]
        out[b] = np.clip(np.rint(dn), 1, 65535)
        out[b][nodata] = 0
    return out


def render_after(scene, ids, table, tex_f, tex_b, terrain, clouds: Clouds, radiometry: Radiometry,
                 shift, rng, date: int = 1) -> np.ndarray:
    """DN of a later date, uint16 (4, H, W): misregistered by ``shift`` (rows, cols px), shadowed,
    hazy, clouded, re-calibrated with a drift across the scene, noisier.

    ``date`` is the table's date index: 1 the after date (``ids`` of the after date), 2 the
    reference date (``ids`` of the before date: the land use a year earlier).
    """
    f, bright = _cover_and_brightness(scene, ids, table, date, tex_f, tex_b)
    cloud_tex = 1.0 + 0.06 * tex_f
    ramp = radiometry.ramp(scene)
    transmit = 1.0 - radiometry.t_drift * ramp
    path = 1.0 + radiometry.drift * ramp
    out = np.empty((4, scene.height, scene.width), np.uint16)
    for b in range(4):
        refl = ((1 - f) * table.A[date, :, b][ids] + f * table.V[date, :, b][ids]) * bright * terrain
        refl = ndimage.gaussian_filter(refl, PSF_SIGMA[date])
        refl = ndimage.shift(refl, shift, order=1, mode="nearest")
        refl *= 1.0 - clouds.shadow * (1.0 - SHADOW_DIFFUSE[b])
        refl = (1.0 - clouds.thin) * refl + clouds.thin * EM["cloud"][b]
        refl = (1.0 - clouds.alpha) * refl + clouds.alpha * EM["cloud"][b] * cloud_tex
        dn = radiometry.gain[b] * transmit * refl * 10000 + radiometry.offset[b] * path
        dn += rng.standard_normal(refl.shape, dtype=np.float32) * NOISE_DN[date]
        out[b] = np.clip(np.rint(dn), 1, 65535)
    return out
