"""A STAC ItemCollection (JSON file) as the scenes of one date.

Each item is a scene. A band role is found in the item's assets by the common name of its
bands (``eo:bands[].common_name``, or STAC 1.1 ``bands[].eo:common_name``): blue, green, red,
nir (else nir08) and swir (swir16). Assets whose roles mark them as previews (visual, overview,
thumbnail) are never read. Relative hrefs are relative to the JSON file; http(s) and s3 hrefs
are read through GDAL's /vsicurl/ and /vsis3/. The acquisition date is the item's datetime
(or start_datetime), UTC.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tiles.errors import InputFileError

COMMON_NAMES = {"blue": ("blue",), "green": ("green",), "red": ("red",), "nir": ("nir", "nir08"),
                "swir": ("swir16", "swir1")}
PREVIEW_ROLES = {"visual", "overview", "thumbnail", "metadata"}


@dataclass
class StacScene:
    """One item: per role ``(href, 1-based band, nodata or None, add)``, its date and id.

    ``add`` (DN) puts the asset's pixels on its product's scale from zero: ``offset / scale`` of
    its ``raster:bands`` (Sentinel-2 L2A since processing baseline 04.00: -0.1 / 0.0001 = -1000),
    0 when it has no offset. Reflectance is then DN x scale, which ``[detect]
    reflectance_scale`` names."""

    id: str
    date: str
    sources: dict[str, tuple[str, int, float | None, float]]


def is_stac(path: str) -> bool:
    """True for a pattern naming a JSON file (an ItemCollection)."""
    return path.lower().endswith((".json", ".geojson"))


def read_item_collection(path: str, roles: list[str]) -> list[StacScene]:
    """Scenes of the ItemCollection at ``path`` with the asset of each role.

    Raises InputFileError naming the file (and item) when it is not an ItemCollection, an item
    has no datetime, or no asset carries a role.
    """
    import pystac  # noqa: PLC0415 - only STAC inputs need it

    try:
        collection = pystac.ItemCollection.from_file(path)
    except FileNotFoundError:
        raise InputFileError(f"{path}: STAC ItemCollection not found") from None
    except Exception as exc:  # noqa: BLE001 - JSON or STAC errors of any kind
        raise InputFileError(f"{path}: not a STAC ItemCollection ({type(exc).__name__}: {exc})") from None
    base = Path(path).resolve().parent
    scenes = []
    for item in collection.items:
        when = item.datetime or item.common_metadata.start_datetime
        if when is None:
            raise InputFileError(f"{path}: item {item.id!r} has no datetime or start_datetime")
        sources = {}
        for role in roles:
            found = _find_asset(item, role)
            if found is None:
                names = "/".join(COMMON_NAMES[role])
                raise InputFileError(f"{path}: item {item.id!r} has no asset with a band of common name "
                                     f"{names} for role {role!r} (add eo:bands to the asset or drop the "
                                     f"role from [imagery].bands)")
            asset, band, nodata, add = found
            sources[role] = (_local_href(asset.href, base), band, nodata, add)
        scenes.append(StacScene(id=item.id, date=when.date().isoformat(), sources=sources))
    if not scenes:
        raise InputFileError(f"{path}: the ItemCollection holds no item")
    return scenes


def _bands(asset) -> list[dict]:
    return asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []


def _find_asset(item, role: str):
    """First data asset holding a band of the role's common name (in the order of COMMON_NAMES)."""
    for name in COMMON_NAMES[role]:
        for asset in item.assets.values():
            if PREVIEW_ROLES & set(asset.roles or []):
                continue
            for i, band in enumerate(_bands(asset)):
                if (band.get("common_name") or band.get("eo:common_name")) == name:
                    raster = asset.extra_fields.get("raster:bands") or []
                    info = raster[i] if i < len(raster) else band
                    nodata = info.get("nodata")
                    scale, offset = float(info.get("scale") or 1.0), float(info.get("offset") or 0.0)
                    return (asset, i + 1, (float(nodata) if nodata is not None else None),
                            offset / scale)
    return None


def _local_href(href: str, base: Path) -> str:
    """A path GDAL can open: relative hrefs against the JSON's folder, URLs through /vsi."""
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    if href.startswith("s3://"):
        return "/vsis3/" + href[5:]
    if href.startswith("file://"):
        href = href[7:]
    return href if os.path.isabs(href) else str((base / href).resolve())
