"""Quarter arithmetic: '2026Q3' labels, the previous quarter, and 'auto' from a date."""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

from tiles.errors import ConfigError

_QUARTER_RE = re.compile(r"^(\d{4})Q([1-4])$")


@dataclass(frozen=True, order=True)
class Quarter:
    """A calendar quarter, e.g. ``Quarter(2026, 3)`` printed as ``2026Q3``."""

    year: int
    q: int

    @classmethod
    def parse(cls, text: str, *, today: _dt.date | None = None) -> "Quarter":
        """Parse ``YYYYQn`` or ``auto`` (the last quarter that has fully ended before ``today``)."""
        text = str(text).strip()
        if text.lower() == "auto":
            today = today or _dt.date.today()
            current = cls(today.year, (today.month - 1) // 3 + 1)
            return current.previous()
        m = _QUARTER_RE.match(text.upper())
        if not m:
            raise ConfigError(f"quarter {text!r} is not of the form 2026Q3 (or 'auto')")
        return cls(int(m.group(1)), int(m.group(2)))

    def previous(self) -> "Quarter":
        return Quarter(self.year - 1, 4) if self.q == 1 else Quarter(self.year, self.q - 1)

    @property
    def first_day(self) -> _dt.date:
        return _dt.date(self.year, 3 * self.q - 2, 1)

    @property
    def last_day(self) -> _dt.date:
        nxt = Quarter(self.year + 1, 1) if self.q == 4 else Quarter(self.year, self.q + 1)
        return nxt.first_day - _dt.timedelta(days=1)

    def __str__(self) -> str:
        return f"{self.year}Q{self.q}"
