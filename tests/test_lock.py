"""The workdir lock: exit 75 naming the holder, stale takeover (logged), mutual exclusion, the
pid-file fallback, and the example crontab / systemd units that start runs unattended."""
import configparser
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import pipeline.rundir as rundir
from cli import main
from pipeline.rundir import WorkdirLock
from tiles.errors import LockedError

REPO = Path(__file__).resolve().parents[1]
HOLD = textwrap.dedent("""
    import sys, time
    from pipeline.rundir import WorkdirLock
    lock = WorkdirLock(sys.argv[1])
    lock.acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def _holder(workdir: Path) -> subprocess.Popen:
    """Another process that takes the workdir lock and keeps it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], cwd=REPO, stdout=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[imagery]\nbefore = "img/{prev_quarter}/*.tif"\nafter = "img/{quarter}/*.tif"\n'
                   '[layers.counties]\npath = "x.gpkg"\n', encoding="utf-8")
    return cfg


def test_second_run_exits_75_naming_the_holder(tmp_path):
    workdir = tmp_path / "w"
    holder = _holder(workdir)
    try:
        r = CliRunner().invoke(main, ["run", "--config", str(_config(tmp_path)), "--quarter", "2026Q3",
                                      "--workdir", str(workdir)])
    finally:
        holder.kill()
        holder.wait()
    assert r.exit_code == 75, r.output
    assert f"pid {holder.pid}" in r.output and socket.gethostname() in r.output
    assert re.search(r"started \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", r.output)
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_lock_of_a_killed_run_is_taken_over_and_logged(tmp_path):
    workdir = tmp_path / "w"
    holder = _holder(workdir)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (workdir / ".lock").exists()           # SIGKILL leaves the file behind
    r = CliRunner().invoke(main, ["run", "--config", str(_config(tmp_path)), "--quarter", "2026Q3",
                                  "--workdir", str(workdir)])
    assert r.exit_code == 2                        # the imagery is missing: the run got that far
    events = [json.loads(l) for l in (workdir / "2026Q3" / "log.jsonl").read_text().splitlines()]
    takeover = [e for e in events if e["event"] == "lock_takeover"]
    assert takeover and takeover[0]["previous"]["pid"] == holder.pid
    assert not (workdir / ".lock").exists()        # released although the run failed


MUTEX = textwrap.dedent("""
    import os, sys, time
    from pipeline.rundir import WorkdirLock
    workdir, log = sys.argv[1], sys.argv[2]
    for _ in range(15):
        with WorkdirLock(workdir, wait=30):
            with open(log, "a") as fh:
                fh.write(f"in {os.getpid()}\\n")
            time.sleep(0.005)
            with open(log, "a") as fh:
                fh.write(f"out {os.getpid()}\\n")
""")


def test_only_one_process_holds_the_lock_at_a_time(tmp_path):
    log = tmp_path / "log.txt"
    procs = [subprocess.Popen([sys.executable, "-c", MUTEX, str(tmp_path / "w"), str(log)], cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=str(REPO))) for _ in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lines = log.read_text().split()
    pairs = [lines[i:i + 4] for i in range(0, len(lines), 4)]
    assert len(pairs) == 60
    for state_in, pid_in, state_out, pid_out in pairs:       # strictly in / out of the same pid
        assert (state_in, state_out) == ("in", "out") and pid_in == pid_out


def test_registry_lock_waits_for_its_holder(tmp_path):
    first = WorkdirLock(tmp_path, name=".registry.lock")
    first.acquire()
    with pytest.raises(LockedError):
        WorkdirLock(tmp_path, name=".registry.lock", wait=0.3).acquire()
    first.release()
    with WorkdirLock(tmp_path, name=".registry.lock", wait=0.3):
        pass


# ---------------------------------------------------------------------------------------------
# file systems without flock: the lock file's existence is the lock
@pytest.fixture
def no_flock(monkeypatch):
    monkeypatch.setattr(rundir, "fcntl", None)


def _write_lock(workdir: Path, **holder):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / ".lock").write_text(json.dumps(holder))


def _dead_pid() -> int:
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(p.stdout)


def test_pidfile_dead_holder_is_stale(tmp_path, no_flock):
    _write_lock(tmp_path, pid=_dead_pid(), host=socket.gethostname(), started="2026-01-01T00:00:00")
    lock = WorkdirLock(tmp_path)
    lock.acquire()
    assert lock.took_over["started"] == "2026-01-01T00:00:00"
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / ".lock").exists()


def test_pidfile_live_holder_and_other_host_are_respected(tmp_path, no_flock):
    _write_lock(tmp_path, pid=os.getppid(), host=socket.gethostname(), started="x",
                pid_start=rundir._pid_start(os.getppid()))
    with pytest.raises(LockedError, match=f"pid {os.getppid()}"):
        WorkdirLock(tmp_path).acquire()
    _write_lock(tmp_path, pid=_dead_pid(), host="another-host", started="x")
    with pytest.raises(LockedError, match="another-host"):
        WorkdirLock(tmp_path).acquire()


def test_pidfile_reused_pid_is_stale(tmp_path, no_flock):
    """The pid is alive but belongs to a process started at another time than the holder."""
    if rundir._pid_start(os.getppid()) is None:
        pytest.skip("no /proc: process start times unknown")
    _write_lock(tmp_path, pid=os.getppid(), host=socket.gethostname(), started="x", pid_start="1")
    lock = WorkdirLock(tmp_path)
    lock.acquire()
    assert lock.took_over["pid"] == os.getppid()
    lock.release()


def test_pidfile_empty_lock_is_stale_only_when_old(tmp_path, no_flock):
    (tmp_path / ".lock").write_text("")
    with pytest.raises(LockedError, match="empty or unreadable"):
        WorkdirLock(tmp_path).acquire()               # may be a holder writing it right now
    old = time.time() - 60
    os.utime(tmp_path / ".lock", (old, old))
    lock = WorkdirLock(tmp_path)
    lock.acquire()
    assert lock.took_over == {"content": "unreadable"}
    lock.release()


# ---------------------------------------------------------------------------------------------
# unattended starts: crontab line and systemd units
def _crontab_job() -> tuple[dict, list[str], str]:
    env, job = {}, None
    for line in (REPO / "configs" / "tianyan.crontab").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.match(r"^([A-Z_]+)=(.*)$", line)
        if m:
            env[m.group(1)] = m.group(2)
        else:
            assert job is None, "one job line expected"
            job = line
    fields = job.split(None, 5)
    return env, fields[:5], fields[5]


def test_crontab_line_is_absolute_sets_the_numba_cache_and_needs_no_activation():
    env, schedule, command = _crontab_job()
    assert re.fullmatch(r"\d+ \d+ [*\d,/-]+ [*\d,/-]+ [*\d,/-]+", " ".join(schedule))
    assert Path(env["NUMBA_CACHE_DIR"]).is_absolute()
    words = shlex.split(command.split(">>")[0])
    assert words[0].startswith("/") and words[0].endswith("/.venv/bin/tianyan")
    assert words[1:3] == ["run", "--config"] and Path(words[3]).is_absolute()
    assert words[words.index("--quarter") + 1] == "auto"
    assert Path(command.split(">>")[1].split()[0]).is_absolute()
    assert not re.search(r"\b(activate|source|conda|cd)\b", command)


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str
    parser.read_string((REPO / "configs" / name).read_text(encoding="utf-8"))
    return parser


def test_systemd_units_are_absolute_and_set_the_numba_cache():
    service, timer = _unit("tianyan.service"), _unit("tianyan.timer")
    exec_start = shlex.split(service["Service"]["ExecStart"])
    assert exec_start[0].startswith("/") and exec_start[0].endswith("/.venv/bin/tianyan")
    assert "auto" == exec_start[exec_start.index("--quarter") + 1]
    assert Path(exec_start[exec_start.index("--config") + 1]).is_absolute()
    text = (REPO / "configs" / "tianyan.service").read_text(encoding="utf-8")
    cache = re.search(r"^Environment=NUMBA_CACHE_DIR=(\S+)$", text, re.M).group(1)
    assert Path(cache).is_absolute()
    assert "75" in service["Service"]["SuccessExitStatus"].split()     # "locked" is not a failure
    assert service["Service"]["Type"] == "oneshot"
    assert timer["Timer"]["Unit"] == "tianyan.service" and timer["Install"]["WantedBy"] == "timers.target"
    if shutil.which("systemd-analyze"):
        r = subprocess.run(["systemd-analyze", "calendar", timer["Timer"]["OnCalendar"]],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_the_entry_point_runs_with_an_empty_environment(tmp_path):
    """What cron gives: no PATH to a virtualenv, no VIRTUAL_ENV, only the variables of the file."""
    script = Path(sys.executable).with_name("tianyan")
    cmd = [str(script)] if script.exists() else [sys.executable, str(REPO / "cli.py")]
    r = subprocess.run(["/usr/bin/env", "-i", f"NUMBA_CACHE_DIR={tmp_path / 'numba'}", *cmd, "--version"],
                       capture_output=True, text=True, cwd="/", timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Tianyan") and "Numba" in r.stdout


def test_without_flock_support_the_pid_lock_takes_over(tmp_path, monkeypatch):
    """flock failing with ENOLCK (some network file systems): the pid lock is used instead."""
    import errno

    class NoLock:
        LOCK_EX, LOCK_NB = 2, 4

        @staticmethod
        def flock(fd, op):
            raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(rundir, "fcntl", NoLock)
    with WorkdirLock(tmp_path) as lock:
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid() and lock._fd is None
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            WorkdirLock(tmp_path).acquire()
    assert not (tmp_path / ".lock").exists()
