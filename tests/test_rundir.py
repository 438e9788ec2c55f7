"""Run directory: lock, manifest, atomic writes."""
import json
import os
import socket
import subprocess
import sys

import pytest

from pipeline.atomic import atomic_path, write_json
from pipeline.rundir import RunDir, WorkdirLock
from tiles.errors import LockedError


def test_second_lock_names_the_holder(tmp_path):
    with WorkdirLock(tmp_path):
        with pytest.raises(LockedError) as info:
            WorkdirLock(tmp_path).acquire()
        msg = str(info.value)
        assert f"pid {os.getpid()}" in msg and socket.gethostname() in msg
    assert not (tmp_path / ".lock").exists()


def test_stale_lock_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / ".lock").write_text(json.dumps({"pid": int(dead), "host": socket.gethostname(),
                                                "started": "2026-01-01T00:00:00"}))
    lock = WorkdirLock(tmp_path)
    lock.acquire()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_log_lines_are_json(tmp_path):
    rd = RunDir(tmp_path, "2026Q3")
    rd.event("tile", tile="0_0", objects=3)
    rd.event("stage", stage="detect")
    lines = [json.loads(l) for l in rd.log_path.read_text().splitlines()]
    assert [l["event"] for l in lines] == ["tile", "stage"] and lines[0]["objects"] == 3
