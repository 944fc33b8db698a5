"""Shifts and takt: which shift a moment falls in, where its takt cycles end, what was planned.

Shift times are wall-clock times in the site's timezone; a shift whose end is before its start
runs past midnight. Times are ms since the Unix epoch, as everywhere in the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from andon.config import LineConfig, Shift


@dataclass(frozen=True)
class ShiftWindow:
    """One occurrence of a shift: [start, end) in ms."""

    shift: Shift
    start: int
    end: int

    def covers(self, t: int) -> bool:
        return self.start <= t < self.end

    def cycle_end(self, t: int) -> int:
        """The end of the takt cycle `t` falls in: the next multiple of takt since the start."""
        takt = self.shift.takt_ms
        return self.start + ((t - self.start) // takt + 1) * takt

    def plan(self, now: int) -> int:
        """Units planned by `now`: the shift's demand spread evenly over the shift."""
        elapsed = min(max(now - self.start, 0), self.end - self.start)
        return self.shift.demand * elapsed // (self.end - self.start)


def window_at(line: LineConfig, zone: ZoneInfo, t: int) -> ShiftWindow | None:
    """The occurrence of one of the line's shifts that `t` falls in, or None between shifts."""
    today = datetime.fromtimestamp(t / 1000, zone).date()
    for shift in line.shifts:
        for day in (today, today - timedelta(days=1)):
            start = int(datetime.combine(day, shift.start, tzinfo=zone).timestamp() * 1000)
            window = ShiftWindow(shift, start, start + shift.length_s * 1000)
            if window.covers(t):
                return window
    return None
