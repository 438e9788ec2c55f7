"""The change detector's wrapper: parameters, the scene-wide model, and one tile.

The pipeline fits one :class:`ChangeModel` per scene pair with :func:`fit_model`
(on a decimated read of the whole scene: ``[run].decimation``, about 4 Mpx by default), then calls
:func:`detect_tile` on each tile read with a halo of :data:`HALO_PX` pixels.
Because every tile uses the same model and the neighbourhood operations only
reach ``DetectParams.reach_px`` <= HALO_PX pixels, the decision inside a tile's
core does not depend on where the tile edges lie.

Arrays: ``before``/``after`` (nbands, h, w) float32 in DN units as read (for
uint16 products DN = reflectance x 10000); ``valid`` (h, w) bool = valid in
both dates and not cloud; ``bands`` the role of each band in array order
(blue, green, red, nir, swir, or ``"-"`` to ignore a band).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from detect import kernels, normalize, rules, statistic
from detect.indices import ROLES, role_index, used_bands
from tiles.errors import ConfigError, InputError

HALO_PX: int = 8
"""Halo (pixels) the pipeline reads around each tile; must cover DetectParams.reach_px."""


@dataclass(frozen=True)
class DetectParams:
    """Parameters of the detector: the ``[detect]`` table of the configuration.

    Statistic
        significance: chi-square test level of the IR-MAD statistic (per pixel).
        max_iter, tol: IR-MAD stops when max |delta rho| < tol or after max_iter.
        ridge: diagonal loading of the covariances, fraction of the mean variance.
        robust_scale: test with robust MAD scales (1.4826 x median absolute
            deviation over the fit sample) instead of IR-MAD's weighted sqrt(2 (1 -
            rho)), which is biased low, so that ``significance`` holds on real scenes.
        invariant_p: no-change probability above which a pixel is invariant and
            used for the radiometric normalisation.
    Objects
        min_area_m2: minimum mapping unit, m², applied after the seam merge.
        mmu_outline_px: the MMU test adds this many pixels along each object's outline
            to its pixel area (edge pixels are mixed and mostly fail the test; 0 = pixels only).
        open_px: side (pixels) of the square opening that removes speckle and
            1-pixel lines (2 keeps 2-pixel-wide roads); 1 disables it.
        close_px: side (pixels) of the square closing that fills pinholes; 1 disables.
    Index rules (reflectance = DN * reflectance_scale; see ``detect.rules``)
        veg_ndvi: NDVI of green vegetation; veg_gain / veg_loss: NDVI rise / drop;
        bright_gain / dark_drop: visible brightness rise / drop (reflectance);
        water_ndwi: NDWI above which a pixel is water; ndwi_gain: NDWI rise;
        residue_ndvi: NDVI that stubble and ploughed soil keep (the soil line);
        soil_redness: (red - blue) / (red + blue) of field soil and straw after a harvest
        (iron oxides, dry straw; panels, asphalt, concrete, blue steel and water are
        greyer or bluer; without a blue band the tint reads 1 and always passes);
        farm_ndvi: NDVI of
        crop or soil that can be flooded; wet_ndwi / flood_ndvi: a flooded paddy
        is wet (NDWI above wet_ndwi) with NDVI above deep open water (flood_ndvi); crop_bright_max: brightening
        above which a crop-like change is no longer seasonal; crop_smooth_px:
        radius r of the (2 r + 1)² window whose mean after spectrum over its wet
        pixels gives the NDVI that tells a flooded paddy from a deep pond (dark
        water pixels are noisy; 0 = the pixel itself); crop_vote_px: seasonal crop change is
        suppressed where most pixels of the (2 r + 1)² window look seasonal
        (0 = per pixel); bare_ndvi: NDVI
        below which a surface is bare; ndbi_gain: NDBI rise (SWIR only);
        strong_factor: strong-evidence thresholds = factor x weak ones;
        noise_k: brightness thresholds are at least noise_k x the scene's
        no-change noise; require_evidence: the decision needs an index signature;
        landuse_rules: false = decide on the chi-square test alone (any change).
    """

    significance: float = 0.01
    min_area_m2: float = 200.0
    mmu_outline_px: float = 0.5
    max_iter: int = 30
    tol: float = 0.001
    ridge: float = 1e-6
    robust_scale: bool = True
    invariant_p: float = 0.9
    open_px: int = 2
    close_px: int = 3
    reflectance_scale: float = 1e-4
    veg_ndvi: float = 0.3
    veg_gain: float = 0.15
    veg_loss: float = 0.2
    bright_gain: float = 0.04
    dark_drop: float = 0.03
    water_ndwi: float = 0.1
    ndwi_gain: float = 0.2
    residue_ndvi: float = 0.1
    soil_redness: float = 0.17
    farm_ndvi: float = 0.1
    wet_ndwi: float = 0.0
    flood_ndvi: float = -0.3
    crop_bright_max: float = 0.12
    crop_smooth_px: int = 1
    crop_vote_px: int = 1
    bare_ndvi: float = 0.2
    ndbi_gain: float = 0.1
    strong_factor: float = 2.0
    noise_k: float = 3.0
    require_evidence: bool = True
    landuse_rules: bool = True

    def __post_init__(self):
        def bad(key, why):
            raise ConfigError(f"[detect] {key} = {getattr(self, key)!r}: {why}")

        if not 0.0 < self.significance < 1.0:
            bad("significance", "must be between 0 and 1, e.g. 0.01")
        if not self.min_area_m2 >= 0.0:
            bad("min_area_m2", "must be >= 0 m²")
        if not 0.0 <= self.mmu_outline_px <= 1.0:
            bad("mmu_outline_px", "must be between 0 and 1 pixel, e.g. 0.5")
        if self.max_iter < 1:
            bad("max_iter", "must be >= 1")
        if not self.tol > 0.0:
            bad("tol", "must be > 0, e.g. 0.001")
        if not self.ridge >= 0.0:
            bad("ridge", "must be >= 0, e.g. 1e-6")
        if not 0.0 < self.invariant_p < 1.0:
            bad("invariant_p", "must be between 0 and 1, e.g. 0.9")
        if self.open_px < 1 or self.close_px < 1:
            bad("open_px" if self.open_px < 1 else "close_px", "must be >= 1 (1 disables)")
        for key in ("crop_smooth_px", "crop_vote_px"):
            if getattr(self, key) < 0:
                bad(key, "must be >= 0 (0 disables)")
        if self.reach_px > HALO_PX:
            bad("close_px", f"max(crop_smooth_px, crop_vote_px) + open_px + close_px - 2 "
                f"must be <= HALO_PX = {HALO_PX}")
        if not self.reflectance_scale > 0.0:
            bad("reflectance_scale", "must be > 0, e.g. 1e-4 for uint16 x 10000 products")
        if not self.strong_factor >= 1.0:
            bad("strong_factor", "must be >= 1")

    @property
    def reach_px(self) -> int:
        """How far (pixels) a core pixel's decision looks into the halo."""
        return (max(self.crop_smooth_px, self.crop_vote_px)
                + (self.open_px - 1) + (self.close_px - 1))

    @classmethod
    def from_dict(cls, d) -> "DetectParams":
        """Build from the ``[detect]`` TOML table; unknown keys and bad types raise ConfigError."""
        d = dict(d or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kw = {}
        for key, value in d.items():
            if key not in fields:
                raise ConfigError(f"[detect] has an unknown key {key!r}: known keys are "
                                  f"{', '.join(sorted(fields))}")
            default = fields[key].default
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"[detect] {key} = {value!r} must be true or false")
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ConfigError(f"[detect] {key} = {value!r} must be an integer")
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"[detect] {key} = {value!r} must be a number")
                value = float(value)
            kw[key] = value
        return cls(**kw)

    def to_dict(self) -> dict:
        """Plain dict of every parameter (for run.json)."""
        return dataclasses.asdict(self)


@dataclass
class ChangeModel:
    """Scene-wide fitted parameters, shared by every tile of one scene pair.

    IR-MAD transform (bands ``idx`` of the arrays): means, canonical vectors
    ``a``/``b`` (columns, ascending canonical correlation ``rho``), MAD standard
    deviations ``sigma`` used by the test (robust, see DetectParams.robust_scale)
    and ``sigma_irmad`` = sqrt(2 (1 - rho)); ``iterations`` over the whole sample after
    ``coarse_iterations`` on a regular subsample of it (``statistic.fit_irmad``).
    Radiometric normalisation per array band: ``after_norm = gain * after + offset`` (DN;
    gain 1, offset 0 for skipped bands). ``noise``: no-change standard deviation of d_ndvi,
    d_ndwi, d_bright.
    """

    bands: tuple
    idx: tuple
    mean_before: list
    mean_after: list
    a: list
    b: list
    rho: list
    sigma: list
    gain: list
    offset: list
    noise: dict = field(default_factory=dict)
    sigma_irmad: list = field(default_factory=list)
    iterations: int = 0
    converged: bool = False
    coarse_iterations: int = 0
    n_pixels: int = 0
    n_invariant: int = 0
    scale: float = 1e-4

    def to_dict(self) -> dict:
        """JSON-safe dict (lists and floats only)."""
        d = dataclasses.asdict(self)
        d["bands"] = list(self.bands)
        d["idx"] = [int(i) for i in self.idx]
        return d

    @classmethod
    def from_dict(cls, d) -> "ChangeModel":
        """Inverse of :meth:`to_dict`; a missing key raises ConfigError."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names[:10] if n not in d]
        if missing:
            raise ConfigError(f"change model lacks {', '.join(missing)}: refit it with fit_model")
        kw = {k: d[k] for k in names if k in d}
        kw["bands"] = tuple(kw["bands"])
        kw["idx"] = tuple(int(i) for i in kw["idx"])
        return cls(**kw)

    def arrays(self):
        """The model as float64 / int64 arrays in kernel argument order."""
        return (np.asarray(self.idx, np.int64), np.asarray(self.mean_before, np.float64),
                np.asarray(self.mean_after, np.float64), np.asarray(self.a, np.float64),
                np.asarray(self.b, np.float64), 1.0 / np.asarray(self.sigma, np.float64),
                np.asarray(self.gain, np.float64), np.asarray(self.offset, np.float64))


@dataclass
class ChangeLayers:
    """Per-pixel output of :func:`detect_tile` on the halo arrays, all (h, w).

    changed: bool, the decision after morphology; flags: uint8 ``kernels.FLAG_*``
    bits; evidence / strong (read from the flags): bool, land-use index signature
    at weak / strong thresholds. The float32 layers are computed on first access
    (the decision needs none of them; objects sum them over their own pixels with
    :meth:`object_sums`): probability, 0-1, chi-square CDF of the IR-MAD
    statistic; d_ndvi, d_ndwi: index change after - before; d_bright: brightness
    change (reflectance); ndvi_after, ndwi_after, bright_after, soil_after ((red
    - blue) / (red + blue)): the normalised after date. Floats are NaN where
    invalid. They are computed from the pair ``detect_tile`` was given, which is
    kept by reference: do not modify it in place while the layers are in use.
    """

    changed: np.ndarray
    flags: np.ndarray
    pixel_args: tuple = field(repr=False)
    """Arguments of ``kernels.detect_pixels`` (the pair, the model, the rules)."""
    reference_seen: np.ndarray | None = None
    """With a reference date: (h, w) bool, the reference is clear there (and so are both
    dates); else None."""
    reference_new: np.ndarray | None = None
    """With a reference date: (h, w) bool, seen and changed by a land-use change since the
    reference too (:func:`reference_masks`); else None. ``changed`` stays the two dates'
    decision: the reference judges whole objects (``detect.merge.apply_reference``)."""
    _floats: tuple | None = field(default=None, init=False, repr=False)

    def _layer(self, k):
        if self._floats is None:
            self._floats = kernels.detect_pixels(*self.pixel_args)[:8]
        return self._floats[k]

    evidence = property(lambda self: (self.flags & kernels.FLAG_EVIDENCE) > 0,
                        doc="bool land-use signature at the weak thresholds (FLAG_EVIDENCE).")
    strong = property(lambda self: (self.flags & kernels.FLAG_STRONG) > 0,
                      doc="bool land-use signature at the strong thresholds (FLAG_STRONG).")
    probability = property(lambda self: self._layer(0), doc="float32 chi-square CDF of Z.")
    d_ndvi = property(lambda self: self._layer(1), doc="float32 NDVI after - before.")
    d_ndwi = property(lambda self: self._layer(2), doc="float32 NDWI after - before.")
    d_bright = property(lambda self: self._layer(3), doc="float32 brightness change.")
    ndvi_after = property(lambda self: self._layer(4), doc="float32 NDVI after.")
    ndwi_after = property(lambda self: self._layer(5), doc="float32 NDWI after.")
    bright_after = property(lambda self: self._layer(6), doc="float32 brightness after.")
    soil_after = property(lambda self: self._layer(7), doc="float32 soil tint after.")

    def object_sums(self, lab, n, r0=0, c0=0):
        """Pixel count and sums of the layers over each label, from the pair.

        lab (hc, wc) int32 labels 1..n of the window whose first pixel is (r0, c0)
        of the halo arrays. Returns ``kernels.object_sums`` of the layers ((n,
        kernels.N_SUMS) float64), computed for the labelled pixels only.
        """
        x, y, _, *model, _, _ = self.pixel_args
        return kernels.object_sums_pair(np.ascontiguousarray(lab, np.int32), int(n), int(r0),
                                        int(c0), x, y, self.flags, *model)


def _check_arrays(before, after, valid, bands):
    before = np.asarray(before)
    after = np.asarray(after)
    valid = np.asarray(valid)
    if before.ndim != 3 or before.shape != after.shape:
        raise InputError(f"before {before.shape} and after {after.shape} must be (nbands, h, w) "
                         "arrays on one grid: resample the after date onto the before grid")
    if valid.shape != before.shape[1:]:
        raise InputError(f"valid mask {valid.shape} does not match the image {before.shape[1:]}")
    if len(bands) != before.shape[0]:
        raise ConfigError(f"bands={list(bands)} names {len(bands)} bands but the image has "
                          f"{before.shape[0]}: give one role per band ('-' to skip)")
    x = np.ascontiguousarray(before, dtype=np.float32)
    y = np.ascontiguousarray(after, dtype=np.float32)
    v = np.ascontiguousarray(valid, dtype=np.bool_)
    return x, y, v


def fit_model(before, after, valid, bands, params) -> ChangeModel:
    """Fit the scene-wide IR-MAD transform, normalisation and noise scales.

    Parameters
    ----------
    before, after : numpy.ndarray
        (nbands, h, w) DN, e.g. a decimated read of the whole scene.
    valid : numpy.ndarray
        (h, w) bool.
    bands : sequence of str
        Role per band.
    params : DetectParams

    Returns
    -------
    ChangeModel

    Raises
    ------
    InputError
        Too few valid pixels, a constant band, or duplicate bands.
    """
    bands = tuple(bands)
    x, y, v = _check_arrays(before, after, valid, bands)
    roles = role_index(bands)
    idx = used_bands(bands)
    p = idx.size
    n = int(v.sum())
    if n < max(50, 10 * p):
        raise InputError(f"only {n} valid pixels to fit the change model: the scene overlap is "
                         "empty or clouded; check the nodata values and cloud masks")
    names = [bands[i] for i in idx]
    fit = statistic.fit_irmad(x, y, idx, v, names, params.max_iter, params.tol, params.ridge)
    sigma = fit.sigma
    if params.robust_scale:
        rs = statistic.robust_sigma(x, y, idx, v, fit.mean_x, fit.mean_y, fit.a, fit.b)
        sigma = np.where(np.isfinite(rs) & (rs > 0), rs, fit.sigma)

    inv = fit.weights > params.invariant_p
    if inv.sum() < max(20, 5 * p):  # too few quiet pixels: take the quietest tenth
        inv = fit.weights >= np.quantile(fit.weights[v], 0.9)
    _, mean, cov = statistic.moments(x, y, idx, inv.astype(np.float32), np.concatenate(
        [fit.mean_x, fit.mean_y]))
    g, o = normalize.normalisation_from_moments(mean, cov, p)
    gain = np.ones(x.shape[0])
    offset = np.zeros(x.shape[0])
    gain[idx] = g
    offset[idx] = o

    noise = _index_noise(x, y, v, fit.weights, roles, gain, offset, params.reflectance_scale)
    return ChangeModel(
        bands=bands, idx=tuple(int(i) for i in idx),
        mean_before=fit.mean_x.tolist(), mean_after=fit.mean_y.tolist(),
        a=fit.a.tolist(), b=fit.b.tolist(), rho=fit.rho.tolist(), sigma=sigma.tolist(),
        sigma_irmad=fit.sigma.tolist(),
        gain=gain.tolist(), offset=offset.tolist(), noise=noise,
        iterations=int(fit.iterations), converged=bool(fit.converged),
        coarse_iterations=int(fit.coarse_iterations),
        n_pixels=n, n_invariant=int(inv.sum()), scale=float(params.reflectance_scale))


VISIBLE_REFLECTANCE: tuple = (0.02, 0.8)
"""The median visible reflectance a date can have over its valid pixels, from a scene mostly of
water to one of bright bare land: outside it, DN x reflectance_scale is not reflectance."""


def reflectance_warning(data, valid, bands, scale) -> str | None:
    """Why ``data`` x ``scale`` does not look like reflectance, or None.

    The rules' brightness thresholds are reflectance (DN x ``reflectance_scale``): reflectance
    0-1 or 8-bit DN read with the uint16 x 10000 default look 10-10,000 times too dark, and the
    brightness rules then fail without a sign. ``data`` (nbands, h, w) DN, e.g. the scene-wide
    sample; the test is the median over ``valid`` pixels of the mean visible band. None
    without a visible band or a valid pixel.
    """
    vis = [i for i, role in enumerate(bands) if role in ("blue", "green", "red")]
    at = np.flatnonzero(np.asarray(valid, bool))
    if not vis or not at.size:
        return None
    at = at[::max(1, at.size // 250_000)]  # a median: a quarter of a million pixels tell it
    flat = np.asarray(data).reshape(len(bands), -1)
    dn = float(np.median(flat[np.ix_(vis, at)].mean(axis=0)))
    lo, hi = VISIBLE_REFLECTANCE
    if lo <= dn * scale <= hi:
        return None
    return (f"the median visible DN {dn:.4g} x reflectance_scale {scale:g} = {dn * scale:.3g} is "
            f"not the reflectance of a scene ({lo:g}-{hi:g}); set reflectance_scale so that DN x "
            f"scale is reflectance 0-1: 1 for reflectance, 1e-4 for reflectance x 10000, "
            f"{1 / 255:.4f} for 8-bit DN")


def _index_noise(x, y, v, weights, roles, gain, offset, scale):
    """No-change-weighted standard deviation of the index differences (dict of floats)."""
    _, _, sd = kernels.index_noise(x, y, v, np.ascontiguousarray(weights, np.float32), roles,
                                   np.asarray(gain, np.float64), np.asarray(offset, np.float64),
                                   float(scale))
    return {name: float(sd[k]) for k, name in enumerate(("d_ndvi", "d_ndwi", "d_bright"))}


def detect_tile(before, after, valid, bands, model, params, *, reference=None,
                reference_valid=None, reference_model=None) -> ChangeLayers:
    """Per-pixel change decision and morphology on one tile read with its halo.

    With a reference date (the same season a year earlier), the layers also carry where the
    reference is clear and where the after date is new since it (:func:`reference_masks`); the
    objects count both, and ``detect.merge.apply_reference`` drops the objects the reference
    explains as seasonal once the seams are merged.

    Parameters
    ----------
    before, after : numpy.ndarray
        (nbands, h, w) DN of the tile plus halo.
    valid : numpy.ndarray
        (h, w) bool.
    bands : sequence of str
        Role per band; must equal the bands the model was fitted with.
    model : ChangeModel
        From :func:`fit_model` on the whole scene.
    params : DetectParams
    reference : numpy.ndarray, optional
        (nbands, h, w) DN of the reference date on the same grid, same bands.
    reference_valid : numpy.ndarray, optional
        (h, w) bool: the reference has data and is cloud-free there.
    reference_model : ChangeModel, optional
        From :func:`fit_model` on (reference, after); needed with ``reference``.

    Returns
    -------
    ChangeLayers
        On the halo grid; the caller keeps the core.
    """
    bands = tuple(bands)
    if bands != tuple(model.bands):
        raise ConfigError(f"bands={list(bands)} differ from the change model's "
                          f"{list(model.bands)}: refit the model with the same bands")
    x, y, v = _check_arrays(before, after, valid, bands)
    roles = role_index(bands)
    idx, mx, my, a, b, inv_sigma, gain, offset = model.arrays()
    noise_b = model.noise.get("d_bright", 0.0)
    rule = rules.rule_vector(params, idx.size, noise_b if np.isfinite(noise_b) else 0.0)
    # one pass per pixel (statistic, indices, rules; the flood rule's smoothing only
    # where it is read), then one for the crop vote and the morphology
    # (the float32 layers only on demand: ChangeLayers)
    args = (x, y, v, idx, mx, my, a, b, inv_sigma, gain, offset, roles, float(model.scale), rule,
            params.crop_smooth_px)
    flags = kernels.pixel_flags(*args)
    vote = params.landuse_rules and params.crop_vote_px > 0
    changed = kernels.clean_decision(
        flags, v, params.crop_vote_px, params.require_evidence, vote, params.open_px,
        params.close_px)
    seen = new = None
    if reference is not None:
        seen, new = reference_masks(y, v, reference, reference_valid, bands, reference_model,
                                    params)
    return ChangeLayers(changed=changed, flags=flags, pixel_args=args, reference_seen=seen,
                        reference_new=new)


def reference_masks(after, valid, reference, reference_valid, bands, model, params):
    """Where the reference date is clear, and where the after date is new since it.

    The reference is the same season a year earlier. The after date is new since the reference
    where it differs from it by a land-use change: the chi-square test of ``model`` (fitted on
    reference and after) is significant and the index changes from the reference show a
    land-use signature that is not a vegetation gain (the decision's own terms; without
    ``landuse_rules`` the test alone). Where they do not, the after state was already there at
    this time last year: a paddy flooded or a field harvested as every year. A new building,
    road or pond on a field that was cropped a year ago is new from both dates. The
    seasonal-crop rules are not applied on this pair: whether a change is a harvest was the
    two-date decision's question, and their brightness cap depends on the pair's
    normalisation, so a new earthwork can read as a harvest against a hazier reference. The
    same opening and closing as the decision follow, so a core pixel still depends only on
    pixels within ``params.reach_px``. Returns ``(seen, new)``, (h, w) bool, new within seen.
    """
    if model is None or reference_valid is None:
        raise ConfigError("a reference date needs its reference_valid mask and a change model "
                          "fitted on (reference, after): fit_model(reference, after, ...)")
    if tuple(bands) != tuple(model.bands):
        raise ConfigError(f"bands={list(bands)} differ from the reference model's "
                          f"{list(model.bands)}: refit it with the same bands")
    r, y, both = _check_arrays(reference, after, np.asarray(reference_valid, bool) & valid, bands)
    idx, mr, my, a, b, inv_sigma, gain, offset = model.arrays()
    noise_b = model.noise.get("d_bright", 0.0)
    rule = rules.rule_vector(params, idx.size, noise_b if np.isfinite(noise_b) else 0.0)
    # radius 0: the flood rule's window only decides FLAG_CROP, which is not read here
    flags = kernels.pixel_flags(r, y, both, idx, mr, my, a, b, inv_sigma, gain, offset,
                                role_index(bands), float(model.scale), rule, 0)
    new = (flags & kernels.FLAG_SIG) > 0
    if params.landuse_rules:
        new &= (flags & kernels.FLAG_VEG_GAIN) == 0
        if params.require_evidence:
            new &= (flags & kernels.FLAG_EVIDENCE) > 0
    # opening and closing by the fused kernel, which reads new as FLAG_CHANGED
    new_flags = new.view(np.uint8) * np.uint8(kernels.FLAG_CHANGED)
    return both, kernels.clean_decision(new_flags, both, 0, False, False, params.open_px,
                                        params.close_px)


def decide(flags, valid, params):
    """The per-pixel decision from the kernel's flags, with the crop vote.

    A pixel counts as seasonal crop change when it carries FLAG_CROP and so do
    more than half of the valid pixels of its (2 crop_vote_px + 1)² window: a
    harvest or a flooding covers a whole parcel, whereas single noisy pixels of a
    pond or a panel field that look crop-like must not punch holes into a true
    change.
    With crop_vote_px = 0 this is the kernel's own FLAG_CHANGED. (``detect_tile``
    runs it fused with the morphology in ``kernels.clean_decision``.)
    """
    if not params.landuse_rules or params.crop_vote_px == 0:
        return (flags & kernels.FLAG_CHANGED) > 0
    return kernels.vote_decide(flags, valid, params.crop_vote_px, params.require_evidence)


__all__ = ["HALO_PX", "DetectParams", "ChangeModel", "ChangeLayers", "fit_model",
           "detect_tile", "reference_masks", "reflectance_warning", "ROLES"]
