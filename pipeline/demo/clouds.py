"""Cumulus clouds and their shadows on a later date, and the cloud mask that covers both.

Clouds are soft-edged blobs (a few Gaussian puffs with a turbulent texture), cover about
``cover`` of the scene, and each casts a shadow displaced away from the sun by
``height / tan(elevation)``. The mask is 1 where cloud opacity or shadow exceeds 2 %, grown by
a margin. Clouds are kept off the pixels in ``avoid`` (the true changes): nothing to detect is
ever hidden on the after date (the reference date passes an empty ``avoid``: a year earlier its
clouds may hide a change site, and the pipeline falls back to two dates there).

Thin haze and cirrus are not in the mask: real masks (thresholds on brightness, GF products'
own cloud masks) miss veils that add only a few per cent of reflectance. They lie anywhere,
true changes included, with an opacity of at most a few per cent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pipeline.demo.scene import Scene


@dataclass
class Clouds:
    """Cloud opacity and shadow strength (0-1, float32), the uint8 mask and the unmasked thin haze
    opacity (0-1, float32), on the after grid."""

    alpha: np.ndarray
    shadow: np.ndarray
    mask: np.ndarray
    thin: np.ndarray   # opacity of thin haze / cirrus, not in the mask


#: Share of the scene under unmasked thin haze, and the range of its peak opacity: 0.03-0.08 of
#: cloud reflectance adds 0.02-0.05 to visible reflectance, below what a brightness mask flags.
THIN_COVER = 0.08
THIN_PEAK = (0.03, 0.08)


def thin_haze(shape, rng: np.random.Generator) -> np.ndarray:
    """Opacity (0-1, float32) of smooth thin haze banks over about THIN_COVER of the scene."""
    h, w = shape
    k = max(min(h, w) // 24, 1)      # haze banks are ~1/10 of the scene wide
    coarse = ndimage.gaussian_filter(rng.standard_normal((h // k + 3, w // k + 3)).astype(np.float32), 1.5)
    field = ndimage.zoom(coarse, k, order=1)[:h, :w]
    field = (field - field.mean()) / (field.std() or 1.0)
    thr = np.quantile(field, 1.0 - THIN_COVER)
    return (rng.uniform(*THIN_PEAK) * np.clip(field - thr, 0.0, 1.0)).astype(np.float32)


def _puff_cloud(radius: float, rng: np.random.Generator) -> np.ndarray:
    """Opacity (0-1) of one cloud on a square of side ~4 * radius pixels."""
    half = int(math.ceil(2 * radius))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    raw = np.zeros_like(xx)
    for _ in range(int(rng.integers(3, 7))):
        cy, cx = rng.normal(0, 0.35 * radius, 2)
        s = rng.uniform(0.35, 0.6) * radius
        raw += rng.uniform(0.7, 1.2) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
    # Turbulence: white noise on a grid ~radius/8 coarser, smoothed and interpolated up.
    k = max(int(radius // 8), 1)
    coarse = ndimage.gaussian_filter(
        rng.standard_normal((xx.shape[0] // k + 2, xx.shape[1] // k + 2)).astype(np.float32), 1.0)
    turb = ndimage.zoom(coarse, k, order=1)[:xx.shape[0], :xx.shape[1]]
    turb /= turb.std() or 1.0
    raw *= 1.0 + 0.3 * turb
    return np.clip((raw - 0.25) / 0.6, 0.0, 1.0)


def _paste(dst, src, r0, c0):
    """Max-combine ``src`` into ``dst`` with its upper-left at (r0, c0), clipped to ``dst``."""
    h, w = dst.shape
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + src.shape[0], h), min(c0 + src.shape[1], w)
    if rs < re and cs < ce:
        dst[rs:re, cs:ce] = np.maximum(dst[rs:re, cs:ce], src[rs - r0:re - r0, cs - c0:ce - c0])


def _overlaps(guard, foot, r0, c0) -> bool:
    """True if ``foot`` placed at (r0, c0) touches a True pixel of ``guard``."""
    h, w = guard.shape
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + foot.shape[0], h), min(c0 + foot.shape[1], w)
    if rs >= re or cs >= ce:
        return False
    return bool((guard[rs:re, cs:ce] & foot[rs - r0:re - r0, cs - c0:ce - c0]).any())


def make_clouds(scene: Scene, avoid: np.ndarray, rng: np.random.Generator, *, cover: float = 0.05,
                sun_elevation: float = 58.0, sun_azimuth: float = 112.0, margin: int = 3) -> Clouds:
    """Clouds covering about ``cover`` of the scene (opacity > 0.1), none over ``avoid``.

    ``sun_azimuth`` is in degrees clockwise from north; shadows fall on the opposite side.
    """
    h, w = scene.height, scene.width
    alpha = np.zeros((h, w), np.float32)
    shadow = np.zeros((h, w), np.float32)
    guard = _dilate(avoid, margin + 4)
    az = math.radians(sun_azimuth)
    target = cover * h * w
    for _ in range(200):
        if (alpha > 0.1).sum() >= target:
            break
        radius = rng.uniform(0.035, 0.07) * min(h, w)
        dist = rng.uniform(300, 450) / math.tan(math.radians(sun_elevation)) / scene.res   # px
        drow, dcol = int(round(dist * math.cos(az))), int(round(-dist * math.sin(az)))
        side = 2 * int(math.ceil(2 * radius)) + 1
        r0 = int(rng.integers(-side // 3, h - 2 * side // 3))
        c0 = int(rng.integers(-side // 3, w - 2 * side // 3))
        core = _disc(side, radius)       # cheap early rejection before drawing the cloud
        if any(_overlaps(guard, core, rr, cc) for rr, cc in ((r0, c0), (r0 + drow, c0 + dcol))):
            continue
        a = _puff_cloud(radius, rng)
        foot = a > 0.01
        if any(_overlaps(guard, foot, rr, cc) for rr, cc in ((r0, c0), (r0 + drow, c0 + dcol))):
            continue
        _paste(alpha, a, r0, c0)
        _paste(shadow, a, r0 + drow, c0 + dcol)
    mask = _dilate((alpha > 0.02) | (shadow > 0.02), margin)
    return Clouds(alpha=alpha, shadow=shadow, mask=mask.astype(np.uint8), thin=thin_haze((h, w), rng))


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Dilation of a boolean mask by a (2r+1)-pixel square (separable maximum filter)."""
    return ndimage.maximum_filter(mask.view(np.uint8), size=2 * r + 1) > 0


def _disc(side: int, radius: float) -> np.ndarray:
    """A boolean disc of ``radius`` px centred in a ``side`` x ``side`` square."""
    yy, xx = np.ogrid[:side, :side]
    c = (side - 1) / 2
    return (yy - c) ** 2 + (xx - c) ** 2 <= radius ** 2
