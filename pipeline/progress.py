"""Progress bars for the long stages, on stderr and only when stderr is a terminal.

A bar advances on the same events the run writes to log.jsonl (``tile`` / ``tile_failed`` in
detect, ``package`` / ``package_failed`` in export), so the stages need not know about it. Under
cron or systemd (stderr a file or a pipe) nothing is drawn. tqdm draws the bar when it is
installed; without it there are no bars, the log lines are unchanged.
"""
from __future__ import annotations

import sys
from typing import IO

# stage -> events that count one unit of work
UNIT_EVENTS = {"detect": ("tile", "tile_failed"), "export": ("package", "package_failed")}
LABELS = {"detect": "detect tiles", "export": "county packages"}


class Progress:
    """One bar per long stage.

    Parameters
    ----------
    stream : file, optional
        Where to draw (default ``sys.stderr``).
    enabled : bool, optional
        Force on or off; default: on when ``stream`` is a terminal and tqdm is importable.
    mininterval : float
        Seconds between redraws.
    """

    def __init__(self, stream: IO | None = None, enabled: bool | None = None, mininterval: float = 0.5):
        self.stream = stream if stream is not None else sys.stderr
        self.mininterval = mininterval
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._tqdm = _tqdm() if enabled else None
        self.enabled = self._tqdm is not None
        self._bar = None
        self._stage: str | None = None

    def start(self, stage: str, total: int | None = None) -> None:
        """Open the bar of ``stage`` (no bar for short stages); ``total`` units if known."""
        self.close()
        if not self.enabled or stage not in UNIT_EVENTS:
            return
        self._stage = stage
        self._bar = self._tqdm(total=total, desc=LABELS[stage], unit="", file=self.stream,
                               leave=False, dynamic_ncols=True, mininterval=self.mininterval)

    def on_event(self, event: str, fields: dict) -> None:
        if self._bar is not None and event in UNIT_EVENTS.get(self._stage, ()):
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._stage = None, None


def _tqdm():
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm
