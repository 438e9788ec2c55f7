"""One county's verification package (a zip the county opens without help).

:func:`write_county_package` (in :mod:`pipeline.package.build`) stages and zips the parts:
fields (schema and Chinese headers), issue_frame (the table as issued), shapefile, kmz, ledger
(XLSX 台账), chips and chip_reader (before/after PNGs), overview_map, batch_layer, report (HTML),
qgis (project file) and readme.
"""
from pipeline.package.build import (FIELDS_ZH, package_name, safe_name, verify_manifest,
                                    write_county_package)

__all__ = ["write_county_package", "verify_manifest", "package_name", "safe_name", "FIELDS_ZH"]
