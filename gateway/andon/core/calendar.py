"""A line's calendar: the shift occurrence a moment falls in, its working time, takt and plan.

Rules (docs/calendar.md explains them with timelines):
- Shift and break times are wall-clock times in the site's timezone, holidays are local dates.
  Instants come from zoneinfo, so a 22:00-06:00 shift lasts 7 h or 9 h on the nights the clocks
  change. A wall-clock time the spring change skips is read with the offset before the change,
  one the autumn change repeats as its first occurrence (fold=0).
- An occurrence belongs to the local date it starts on: it runs when that date's weekday is one
  of the shift's `days` and the date is not a holiday of the line or of the plant.
- Working time is the occurrence minus its breaks. A moment in a break is in the window (it
  belongs to the shift) but is not working time: takt cycles, the fixed-position stop grid and
  the plan advance only in working time.
- Takt = working time of the demand period / units demanded in it. The period is the occurrence
  itself (a shift's own `demand`, or the line's `per = "shift"`), its start date (`per = "day"`)
  or the Monday-to-Sunday week of that date (`per = "week"`), counting every occurrence of every
  shift of the line that runs in it. Cycle n ends once ceil(n x takt) of working time has
  passed: the exact ratio, so a period holds exactly its units, whatever the rounding of takt.
- Outside every shift, a fixed-position stop comes one takt of the line's next occurrence after
  the call (`fixed_position_stop`).

Times are ms since the Unix epoch, as everywhere in the core. Pure: no I/O, no wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from andon.config import WEEKDAYS, LineConfig, Shift, clock_s

_DAY = timedelta(days=1)
_DAY_S = 86_400

Span = tuple[int, int]  # [start, end) in ms


@dataclass(frozen=True)
class ShiftWindow:
    """One occurrence of a shift, its breaks, and the demand period it belongs to."""

    shift: Shift
    start: int
    end: int
    breaks: tuple[Span, ...]  # sorted, inside [start, end)
    period_ms: int  # working time of the demand period
    period_units: int  # units demanded over the period

    @property
    def name(self) -> str:
        return self.shift.name

    @property
    def working_ms(self) -> int:
        return _working_ms(self.start, self.end, self.breaks)

    @property
    def takt_ms(self) -> int:
        """Takt time rounded down to the ms; the grid and the plan use the exact ratio."""
        return self.period_ms // self.period_units

    @property
    def demand(self) -> int:
        """Units planned over the whole occurrence (its share of the period, rounded down)."""
        return self.working_ms * self.period_units // self.period_ms

    def covers(self, t: int) -> bool:
        return self.start <= t < self.end

    def worked(self, t: int) -> int:
        """Working time from the start to `t` (clamped to the occurrence)."""
        t = min(max(t, self.start), self.end)
        return t - self.start - sum(max(0, min(t, end) - start) for start, end in self.breaks)

    def at_worked(self, worked: int) -> int:
        """The moment `worked` ms of working time have passed since the start."""
        t = self.start + worked
        for start, end in self.breaks:
            if start < t:  # reached only after this break
                t += end - start
        return t

    def cycle_end(self, t: int) -> int:
        """The end of the takt cycle `t` falls in, counted in working time from the start: a
        cycle that spans a break ends later by the break's length, one in a break after it.
        The last cycle ends with the shift at the latest."""
        cycle = self.worked(t) * self.period_units // self.period_ms
        boundary = -(-(cycle + 1) * self.period_ms // self.period_units)  # ceil
        return min(self.at_worked(boundary), self.end)

    def plan(self, now: int) -> int:
        """Units planned by `now`: the takt cycles of working time completed."""
        return self.worked(now) * self.period_units // self.period_ms


def window_at(line: LineConfig, zone: ZoneInfo, t: int) -> ShiftWindow | None:
    """The occurrence of one of the line's shifts that `t` falls in (breaks included), or None
    between shifts, on a day the shift does not run and on holidays. Shifts are tried in the
    configured order, each as started on `t`'s local date and on the day before."""
    today = _local_date(t, zone)
    for shift in line.shifts:
        for day in (today, today - _DAY):
            if _runs(line, shift, day):
                start, end, _ = _occurrence(shift, day, zone)
                if start <= t < end:
                    return _window(line, shift, day, zone)
    return None


def next_window(line: LineConfig, zone: ZoneInfo, t: int) -> ShiftWindow | None:
    """The first occurrence of one of the line's shifts that starts after `t`. None only for a
    line without shifts: the search runs far enough ahead to pass every holiday."""
    first = _local_date(t, zone) - _DAY
    for offset in range((len(line.days_off) + 2) * 7):
        day = first + timedelta(days=offset)
        starts = [
            (_occurrence(shift, day, zone)[0], i)
            for i, shift in enumerate(line.shifts)
            if _runs(line, shift, day)
        ]
        later = [(start, i) for start, i in starts if start > t]
        if later:
            return _window(line, line.shifts[min(later)[1]], day, zone)
    return None


def fixed_position_stop(line: LineConfig, zone: ZoneInfo, opened: int) -> int:
    """When a call opened at `opened` and still open stops the line (stop mode "takt").

    In a shift: the end of the takt cycle it was opened in, counted in working time, so a pull
    during a break stops the line at the end of that cycle, after the break. Outside every
    shift: one takt of the line's next occurrence after the call."""
    window = window_at(line, zone, opened)
    if window is not None:
        return window.cycle_end(opened)
    upcoming = next_window(line, zone, opened)
    if upcoming is None:  # the plant file refuses stop mode "takt" without shifts
        raise ValueError(f"line {line.id} has no shifts")
    return opened + upcoming.takt_ms


def _runs(line: LineConfig, shift: Shift, day: date) -> bool:
    return WEEKDAYS[day.weekday()] in shift.days and day not in line.days_off


def _window(line: LineConfig, shift: Shift, day: date, zone: ZoneInfo) -> ShiftWindow:
    start, end, breaks = _occurrence(shift, day, zone)
    if line.demand is None or line.demand.per == "shift":
        units = shift.demand or line.demand.units
        return ShiftWindow(shift, start, end, breaks, _working_ms(start, end, breaks), units)
    first, days = (day, 1) if line.demand.per == "day" else (day - day.weekday() * _DAY, 7)
    period = [first + i * _DAY for i in range(days)]
    period_ms = sum(
        _working_ms(*_occurrence(other, d, zone))
        for d in period
        for other in line.shifts
        if _runs(line, other, d)
    )
    return ShiftWindow(shift, start, end, breaks, period_ms, line.demand.units)


def _occurrence(shift: Shift, day: date, zone: ZoneInfo) -> tuple[int, int, tuple[Span, ...]]:
    """The shift as started on local `day`: start, end and breaks in ms."""
    begin_s = clock_s(shift.start)
    start = _instant(day, begin_s, zone)
    end = _instant(day, begin_s + shift.length_s, zone)
    breaks = []
    for offsets in sorted(shift.break_offsets):
        pause = [min(max(_instant(day, begin_s + s, zone), start), end) for s in offsets]
        if pause[0] < pause[1]:  # a break the spring change skips entirely is no break
            breaks.append((pause[0], pause[1]))
    return start, end, tuple(breaks)


def _working_ms(start: int, end: int, breaks: tuple[Span, ...]) -> int:
    return end - start - sum(b_end - b_start for b_start, b_end in breaks)


def _instant(day: date, seconds: int, zone: ZoneInfo) -> int:
    """The wall-clock time `seconds` after the start of local `day` (past midnight: the next
    day's), in ms."""
    days, s = divmod(seconds, _DAY_S)
    clock = time(s // 3600, s // 60 % 60, s % 60)
    local = datetime.combine(day + days * _DAY, clock, tzinfo=zone)
    return round(local.timestamp() * 1000)


def _local_date(t: int, zone: ZoneInfo) -> date:
    return datetime.fromtimestamp(t / 1000, zone).date()
