"""Progress of the tasks on a Dask cluster, as seen by the client.

On a terminal the run's own bar (``pipeline.progress``) advances on every ``tile`` event, which
the detect stage writes as each task's result reaches the client, so nothing more is drawn here.
Otherwise (cron, a log file) a log line at every tenth of the tasks shows the run is alive
without one line per tile.
"""
from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("tianyan")


class TaskProgress:
    """Count finished and failed tasks; log every tenth when stderr is not a terminal.

    Parameters
    ----------
    total : int
        Tasks submitted.
    label : str
        What the tasks are, e.g. ``detect_one_tile``.
    quiet : bool, optional
        Log nothing; default: whether stderr is a terminal (where the run's bar shows progress).
    """

    def __init__(self, total: int, label: str = "tasks", quiet: bool | None = None):
        self.total, self.label = total, label
        self.quiet = sys.stderr.isatty() if quiet is None else quiet
        self.done = self.failed = 0
        self.start = time.monotonic()
        self._tenth = 0

    def text(self) -> str:
        """E.g. ``dask detect_one_tile: 5/10 done (1 failed), 12 s``."""
        failed = f" ({self.failed} failed)" if self.failed else ""
        return (f"dask {self.label}: {self.done}/{self.total} done{failed}, "
                f"{time.monotonic() - self.start:.0f} s")

    def update(self, failed: bool = False) -> None:
        """One more task finished (``failed``: with an error)."""
        self.done += 1
        self.failed += int(failed)
        tenth = (10 * self.done) // max(1, self.total)
        if tenth > self._tenth:
            self._tenth = tenth
            if not self.quiet:
                log.info("%s", self.text())
