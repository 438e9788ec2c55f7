"""The run directory of one quarter: manifest (run.json), structured log (log.jsonl), lock.

Layout (DESIGN.md): ``<workdir>/<quarter>/`` with run.json, log.jsonl, tiles/, changes.gpkg,
packages/, summary.json, report.html. The lock lives at ``<workdir>/.lock`` so one workdir has
one run at a time.
"""
from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

from pipeline.atomic import write_json
from tiles.errors import LockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

log = logging.getLogger("tianyan")


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


class RunDir:
    """A quarter's run directory and its manifest.

    ``progress`` (a :class:`pipeline.progress.Progress` or None) sees every logged event, so
    progress bars advance on the same events that log.jsonl records.
    """

    def __init__(self, workdir: str | os.PathLike, quarter: str):
        self.workdir = Path(workdir)
        self.quarter = quarter
        self.path = self.workdir / quarter
        self.tiles = self.path / "tiles"
        self.packages = self.path / "packages"
        self.manifest_path = self.path / "run.json"
        self.log_path = self.path / "log.jsonl"
        self.progress = None

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
        if self.progress is not None:
            self.progress.on_event(event, fields)

    # leftovers of a killed run --------------------------------------------------------------
    def clean_leftovers(self) -> list[str]:
        """Remove what a killed process left half-written; return the removed paths.

        Every output is written under a hidden temporary name and renamed into place
        (``pipeline.atomic``; package zips and their staging folders; ingest staging), so
        a hidden ``.*.tmp*`` file or a hidden folder under packages/ or returned/ is never a
        finished output. Call only while holding the workdir lock.
        """
        removed = []
        if not self.path.exists():
            return removed
        for p in sorted(self.path.rglob(".*")):
            if not p.exists():
                continue  # inside a folder removed a moment ago
            if p.is_dir() and not p.is_symlink() and p.parent.name in ("packages", "returned"):
                shutil.rmtree(p, ignore_errors=True)
            elif (p.is_file() or p.is_symlink()) and ".tmp" in p.name:
                p.unlink(missing_ok=True)
            else:
                continue
            removed.append(str(p.relative_to(self.path)))
        return removed


class WorkdirLock:
    """An exclusive lock on a workdir (``<workdir>/.lock``), held while a run or ingest works.

    The kernel holds the lock (``flock`` on the file), so it ends with its process however that
    process ends, SIGKILL included. The file itself records the holder (pid, host, start time)
    for the message a second run prints. A lock file whose process is gone is stale: the next
    run takes it over and logs the takeover (``took_over`` holds the previous holder). On a file
    system without ``flock`` the file's existence is the lock, and a holder on this host whose
    pid is gone (or was reused by a later process) is stale.

    Parameters
    ----------
    workdir : path-like
        The folder holding the quarters' run directories.
    name : str
        Lock file name; ``.lock`` for runs, another name for a shorter-lived lock.
    wait : float
        Seconds to keep trying before giving up (0: fail at once).
    """

    def __init__(self, workdir: str | os.PathLike, name: str = ".lock", wait: float = 0.0):
        self.path = Path(workdir) / name
        self.wait = float(wait)
        self.held = False
        self.took_over: dict | None = None
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                self._acquire_once()
                return
            except LockedError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def _acquire_once(self) -> None:
        if fcntl is not None:
            try:
                self._acquire_flock()
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                log.debug("flock unsupported on %s (%s): falling back to a pid lock", self.path, exc)
        self._acquire_pidfile()

    # flock: the normal case -----------------------------------------------------------------
    def _acquire_flock(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _parse(_read_fd(fd))
                os.close(fd)
                raise self._locked(holder) from None
            except OSError:
                # No flock here: an empty file is ours (a pid lock is never empty), remove it
                # so the pid-file fallback can create the lock.
                if os.fstat(fd).st_size == 0:
                    self.path.unlink(missing_ok=True)
                os.close(fd)
                raise
            except BaseException:
                os.close(fd)
                raise
            # The holder before us may have unlinked the file between our open and our lock:
            # then we locked an orphan inode and must start again on the file now at the path.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _parse(_read_fd(fd))
        if previous or os.fstat(fd).st_size:
            self.took_over = previous or {"content": "unreadable"}
            log.warning("took over the stale lock %s from %s", self.path, _describe(self.took_over))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_me()).encode("utf-8"), 0)
        self._fd = fd
        self.held = True

    # pid file: file systems without flock ---------------------------------------------------
    def _acquire_pidfile(self) -> None:
        for _ in range(3):
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(_me()), encoding="utf-8")
            try:
                os.link(tmp, self.path)  # atomic: the lock never exists half-written
            except FileExistsError:
                holder = _parse(_read_path(self.path))
                if self._alive(holder):
                    raise self._locked(holder) from None
                self.took_over = holder or {"content": "unreadable"}
                log.warning("took over the stale lock %s from %s", self.path, _describe(self.took_over))
                self.path.unlink(missing_ok=True)
                continue
            finally:
                tmp.unlink(missing_ok=True)
            self.held = True
            return
        raise LockedError(f"{self.path}: could not take the workdir lock; remove the file if no run "
                          "is active")

    def _alive(self, holder: dict) -> bool:
        if not holder:
            # Unreadable: stale once it is older than any write of a few bytes could take.
            try:
                return time.time() - self.path.stat().st_mtime < 10
            except FileNotFoundError:
                return False
        if holder.get("host") != socket.gethostname():
            return True  # cannot check a process on another host: respect its lock
        try:
            pid = int(holder["pid"])
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        except (KeyError, ValueError, TypeError):
            return False
        started = holder.get("pid_start")
        return started is None or started == _pid_start(pid)  # a reused pid is another process

    def _locked(self, holder: dict) -> LockedError:
        return LockedError(f"{self.path}: another run holds the workdir lock ({_describe(holder)}); "
                           "wait for it to finish or stop it")

    def release(self) -> None:
        if not self.held:
            return
        if self._fd is not None:
            # Unlink before unlocking: a waiter that opened the old inode sees it is orphaned.
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
        else:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": now_iso(),
            "pid_start": _pid_start(os.getpid())}


def _pid_start(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _describe(holder: dict) -> str:
    if not holder or "pid" not in holder:
        return "holder unknown: the lock file is empty or unreadable"
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"


def _read_fd(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        return ""


def _read_path(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _parse(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
