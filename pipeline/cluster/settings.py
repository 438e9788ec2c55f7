"""The ``[dask]`` table of the run configuration: its keys, defaults and checks.

``DASK_DEFAULTS`` is the single source of the defaults; ``configs/default.toml`` documents the
same keys (a test keeps them equal). Which executor a run uses is decided by :func:`choose_executor`:
``--executor`` wins; without it a ``[dask].scheduler`` address selects Dask; otherwise local.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config_types import check_type
from tiles.errors import ConfigError

DASK_DEFAULTS: dict[str, Any] = {
    "scheduler": "",          # "tcp://host:8786" or a scheduler file (.json); "": a LocalCluster
    "numba_threads": 0,       # per worker process; 0: cores of its machine / worker processes there
    "gdal_cachemax_mb": 256,  # GDAL block cache per worker process, MB
    "retries": 1,             # extra attempts of a task that raised an exception
    "allowed_failures": 3,    # LocalCluster: worker deaths one task may cause before it fails
    "memory_limit": "auto",   # LocalCluster memory per worker, e.g. "6GiB"; "auto": RAM / workers
    "dashboard": ":8787",     # LocalCluster dashboard address; "" turns the dashboard off
    "connect_timeout_s": 30.0,  # seconds to wait for the scheduler and for a first worker
    "env": {},                # extra environment variables for every worker process
}

EXECUTORS = ("local", "dask")
_ADDRESS_RE = re.compile(r"^(tcp|tls|inproc|ucx|ws|wss)://[^\s/]+$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class DaskSettings:
    """Checked ``[dask]`` settings; ``scheduler`` empty means: start a LocalCluster."""

    scheduler: str = ""
    numba_threads: int = 0
    gdal_cachemax_mb: int = 256
    retries: int = 1
    allowed_failures: int = 3
    memory_limit: str = "auto"
    dashboard: str = ":8787"
    connect_timeout_s: float = 30.0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def scheduler_file(self) -> str | None:
        """The scheduler file (dask-jobqueue, ``dask scheduler --scheduler-file``), if one is given."""
        return self.scheduler if self.scheduler.endswith(".json") else None


def dask_settings(table: dict | None, source: str | Path = "configuration",
                  scheduler: str | None = None) -> DaskSettings:
    """Check a ``[dask]`` table and return :class:`DaskSettings`.

    Parameters
    ----------
    table : dict or None
        The raw ``[dask]`` table of the configuration (missing keys take ``DASK_DEFAULTS``).
    source : str or Path
        The configuration file, named in error messages.
    scheduler : str, optional
        ``--scheduler`` from the command line; overrides ``[dask].scheduler``.

    Raises
    ------
    ConfigError
        An unknown key, a value of the wrong type or out of range, naming the file and key.
    """
    table = dict(table or {})
    merged = copy.deepcopy(DASK_DEFAULTS)
    for key, value in table.items():
        if key not in DASK_DEFAULTS:
            raise ConfigError(f"{source}: unknown key [dask].{key} (known: {', '.join(sorted(DASK_DEFAULTS))})")
        merged[key] = check_type(value, DASK_DEFAULTS[key], f"[dask].{key}", source)
    if scheduler:
        merged["scheduler"] = scheduler
    where = "--scheduler" if scheduler else f"{source}: [dask].scheduler"
    addr = merged["scheduler"].strip()
    if addr and not addr.endswith(".json") and not _ADDRESS_RE.match(addr):
        raise ConfigError(f"{where} = {addr!r} is not a scheduler address (use tcp://HOST:PORT, "
                          f"or the path of a scheduler file ending in .json)")
    merged["scheduler"] = addr
    for key in ("numba_threads", "retries", "allowed_failures"):
        if merged[key] < 0:
            raise ConfigError(f"{source}: [dask].{key} = {merged[key]} must be 0 or more")
    if merged["gdal_cachemax_mb"] < 1:
        raise ConfigError(f"{source}: [dask].gdal_cachemax_mb = {merged['gdal_cachemax_mb']} must be 1 or more")
    if merged["connect_timeout_s"] <= 0:
        raise ConfigError(f"{source}: [dask].connect_timeout_s = {merged['connect_timeout_s']} must be > 0")
    for name, value in merged["env"].items():
        if not _ENV_NAME_RE.match(name) or not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{source}: [dask].env.{name} = {value!r}: names are letters, digits and _, "
                              f"values text or numbers")
    merged["env"] = {k: str(v) for k, v in merged["env"].items()}
    return DaskSettings(**merged)


def choose_executor(executor: str | None, scheduler: str | None, table: dict | None) -> str:
    """``local`` or ``dask``: ``--executor`` if given; else ``dask`` when ``--scheduler`` or
    ``[dask].scheduler`` names a cluster; else ``local``."""
    if executor:
        if executor not in EXECUTORS:
            raise ConfigError(f"--executor {executor!r}: unknown executor (one of {', '.join(EXECUTORS)})")
        return executor
    if scheduler or str((table or {}).get("scheduler", "")).strip():
        return "dask"
    return "local"
