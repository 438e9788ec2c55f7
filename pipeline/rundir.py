"""The run directory of one quarter: manifest (run.json), structured log (log.jsonl), lock.

Layout (DESIGN.md): ``<workdir>/<quarter>/`` with run.json, log.jsonl, tiles/, changes.gpkg,
packages/, summary.json, report.html. The lock lives at ``<workdir>/.lock`` so one workdir has
one run at a time.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import time
from pathlib import Path

from pipeline.atomic import write_json
from tiles.errors import LockedError

log = logging.getLogger("tianyan")


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


class RunDir:
    """A quarter's run directory and its manifest."""

    def __init__(self, workdir: str | os.PathLike, quarter: str):
        self.workdir = Path(workdir)
        self.quarter = quarter
        self.path = self.workdir / quarter
        self.tiles = self.path / "tiles"
        self.packages = self.path / "packages"
        self.manifest_path = self.path / "run.json"
        self.log_path = self.path / "log.jsonl"

    def create(self) -> None:
        for p in (self.path, self.tiles, self.packages):
            p.mkdir(parents=True, exist_ok=True)

    # manifest -------------------------------------------------------------------------------
    def load(self) -> dict:
        if not self.manifest_path.exists():
            return {}
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def save(self, manifest: dict) -> None:
        write_json(self.manifest_path, manifest)

    # log ------------------------------------------------------------------------------------
    def event(self, event: str, **fields) -> None:
        """Append one JSON line to log.jsonl (small appends are atomic on POSIX)."""
        record = {"time": now_iso(), "event": event, **fields}
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")


class WorkdirLock:
    """An exclusive lock on a workdir: a file created with O_EXCL holding pid, host and start time.

    A lock whose process is gone (same host) is stale: it is taken over and the takeover logged.
    """

    def __init__(self, workdir: str | os.PathLike):
        self.path = Path(workdir) / ".lock"
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": now_iso()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder and self._alive(holder):
                    raise LockedError(f"{self.path}: another run holds the workdir lock (pid "
                                      f"{holder.get('pid')} on {holder.get('host')}, started "
                                      f"{holder.get('started')}); wait for it or stop it") from None
                log.warning("taking over stale lock %s from %s", self.path, holder)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(info, fh)
            self.held = True
            return
        raise LockedError(f"{self.path}: could not take the workdir lock")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            # Half-written by a process killed at that instant: treat as stale after a moment.
            time.sleep(0.2)
            try:
                return json.loads(self.path.read_text())
            except (OSError, ValueError):
                return {}

    @staticmethod
    def _alive(holder: dict) -> bool:
        if holder.get("host") != socket.gethostname():
            return True  # cannot check a process on another host: respect its lock
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        except (KeyError, ValueError, TypeError):
            return False
        return True

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
