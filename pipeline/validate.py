"""Check every input of a run before it starts: imagery, dates, overlap, layers, fields, disk."""
from __future__ import annotations

import shutil
from pathlib import Path

from overlay.layers import layer_info
from pipeline.config import Config
from pipeline.quarter import Quarter
from tiles.errors import TianyanError
from tiles.grid import make_grid
from tiles.imagery import open_date

FREE_DISK_MB = 2048


def validate_inputs(cfg: Config, quarter: Quarter) -> list[tuple[str, str, str]]:
    """Return findings ``(level, what, message)``; level is OK, WARN or ERROR (blocking)."""
    out: list[tuple[str, str, str]] = []
    im, dates = cfg.imagery, {}
    for label in ("before", "after"):
        try:
            d = open_date(label, im[label], im["bands"], quarter=str(quarter),
                          prev_quarter=str(quarter.previous()), date_override=im[f"{label}_date"],
                          nodata_override=im["nodata"], cloud_pattern=im[f"cloud_mask_{label}"])
            dates[label] = d
            out.append(("OK", f"imagery.{label}", f"{len(d.files)} file(s), date {d.date}, "
                                                  f"bands {','.join(d.roles)}"))
        except TianyanError as exc:
            out.append(("ERROR", f"imagery.{label}", str(exc)))
    if len(dates) == 2:
        try:
            grid = make_grid(dates["before"].files, dates["after"].files, crs=cfg.run["crs"],
                             resolution=cfg.run["resolution"])
            out.append(("OK", "grid", f"{grid.width} x {grid.height} px at {grid.res} m in {grid.crs}"))
            if dates["before"].date >= dates["after"].date:
                out.append(("ERROR", "dates", f"after date {dates['after'].date} is not later than "
                                              f"before date {dates['before'].date}"))
        except TianyanError as exc:
            out.append(("ERROR", "grid", str(exc)))
    for name, spec in cfg.layers.items():
        out.append(_check_layer(name, spec))
    workdir = Path(cfg.run["workdir"])
    probe = workdir if workdir.exists() else workdir.parent
    while not probe.exists():
        probe = probe.parent
    free_mb = shutil.disk_usage(probe).free // 2**20
    out.append(("OK" if free_mb >= FREE_DISK_MB else "ERROR", "disk",
                f"{free_mb} MB free under {probe} (need {FREE_DISK_MB} MB)"))
    return out


def _check_layer(name: str, spec: dict) -> tuple[str, str, str]:
    what = f"layers.{name}"
    try:
        info = layer_info(spec)
    except TianyanError as exc:
        return ("ERROR", what, str(exc))
    except Exception as exc:  # noqa: BLE001 - any driver error is a finding
        return ("ERROR", what, f"{spec['path']}: cannot be read ({exc})")
    count = f"{info['features']} features" if info["features"] >= 0 else "features not counted"
    return ("OK", what, f"layer {info['layer']!r}, {count}, {info['crs'].to_string()}")
