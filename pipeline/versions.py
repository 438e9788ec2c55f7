"""Versions of Tianyan and the libraries whose behaviour the results depend on."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def tianyan_version() -> str:
    try:
        return version("tianyan")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def versions() -> dict[str, str]:
    import numba
    import pyproj
    import rasterio
    import shapely

    return {"tianyan": tianyan_version(), "gdal": rasterio.__gdal_version__,
            "proj": pyproj.proj_version_str, "rasterio": rasterio.__version__,
            "numba": numba.__version__, "shapely": shapely.__version__}
