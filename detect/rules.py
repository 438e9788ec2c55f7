"""Decision rules: the thresholds that turn the chi-square test and the index changes
into a land-use change decision, packed into the vector the Numba kernel reads.

With ``landuse_rules = false`` the decision is the chi-square test alone (any
spectral change, e.g. to compare with research change labels); otherwise:

A pixel is changed when (1) its IR-MAD statistic is significant, (2) it is not a
vegetation gain, (3) it is not a seasonal crop cycle: a green crop (NDVI >=
``veg_ndvi``) harvested to stubble or ploughed soil (NDVI still >= ``residue_ndvi``,
the soil line, and red-tinted: (red - blue) / (red + blue) >= ``soil_redness``, as
laterite and straw are, while solar panels, asphalt, concrete, blue steel and
water are grey or blue; without a blue band the tint cannot be read and the test
passes), or a crop or soil
field (NDVI >= ``farm_ndvi``) flooded to a paddy (NDWI > ``wet_ndwi`` while the
NDVI of the local mean spectrum stays above ``flood_ndvi``: shallow water over mud
is brighter in red and NIR than a deep new pond); neither applies when the visible brightness rose by
``crop_bright_max`` or more, and
(4) with ``require_evidence``, its index changes show a land-use signature:
brightening to a non-vegetated surface (built, hardened, bare), vegetation loss
to a non-vegetated surface, water appearing, visible darkening to a dry surface
that is no canopy (solar panels with ground between the rows, asphalt) or, with
SWIR, a rising NDBI. Strong evidence
(thresholds times ``strong_factor``) is the second, independent signal that
confidence level 高 needs. Index thresholds are in reflectance / index units;
the brightness thresholds are raised to ``noise_k`` times the scene's no-change
noise of the brightness difference when that is larger.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import chi2

from detect import kernels


def rule_vector(params, dof, noise_bright=0.0):
    """Threshold vector for :func:`detect.kernels.change_pixels`.

    Parameters
    ----------
    params : detect.detector.DetectParams
    dof : int
        Degrees of freedom of the chi-square statistic (bands of the statistic).
    noise_bright : float
        Scene no-change standard deviation of the brightness difference (reflectance).

    Returns
    -------
    numpy.ndarray
        float64 (``kernels.N_RULE``,).
    """
    r = np.zeros(kernels.N_RULE)
    r[kernels.R_ZCRIT] = chi2.isf(params.significance, dof)
    r[kernels.R_VEG_NDVI] = params.veg_ndvi
    r[kernels.R_VEG_GAIN] = params.veg_gain
    r[kernels.R_VEG_LOSS] = params.veg_loss
    r[kernels.R_BRIGHT_GAIN] = max(params.bright_gain, params.noise_k * noise_bright)
    r[kernels.R_DARK_DROP] = max(params.dark_drop, params.noise_k * noise_bright)
    r[kernels.R_WATER_NDWI] = params.water_ndwi
    r[kernels.R_NDWI_GAIN] = params.ndwi_gain
    r[kernels.R_RESIDUE_NDVI] = params.residue_ndvi
    r[kernels.R_FLOOD_NDVI] = params.flood_ndvi
    r[kernels.R_CROP_BRIGHT_MAX] = params.crop_bright_max
    r[kernels.R_STRONG_FACTOR] = params.strong_factor
    r[kernels.R_NDBI_GAIN] = params.ndbi_gain
    r[kernels.R_REQUIRE_EVIDENCE] = 1.0 if params.require_evidence else 0.0
    r[kernels.R_BARE_NDVI] = params.bare_ndvi
    r[kernels.R_WET_NDWI] = params.wet_ndwi
    r[kernels.R_FARM_NDVI] = params.farm_ndvi
    r[kernels.R_LANDUSE] = 1.0 if params.landuse_rules else 0.0
    r[kernels.R_SOIL_REDNESS] = params.soil_redness
    return r
