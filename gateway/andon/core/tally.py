"""Takt: cycles counted per line and shift, plan versus actual, and where a takt cycle ends.

Cycle events are counted per line and shift occurrence (by the event's time); a line's actual
output is the count at its most downstream station (configuration order) that reports cycles.
The plan and the takt grid come from the line's calendar (`andon.core.calendar`,
docs/calendar.md): both advance in working time only, so breaks freeze them, and a shift's
tally records its real working time (7 h or 9 h on a DST night).

State used: `_lines` (their recent shift tallies), `_windows` (a cache).
"""

from __future__ import annotations

from andon import contract
from andon.core.calendar import ShiftWindow, fixed_position_stop, window_at
from andon.core.state import Line, ShiftTally, Station

SHIFT_HISTORY = 9  # shift tallies kept per line (three days of three shifts)


class TaktRules:
    def _init_tally(self) -> None:
        self._windows: dict[str, ShiftWindow] = {}  # each line's last shift window

    def _window(self, line_id: str, t: int) -> ShiftWindow | None:
        cached = self._windows.get(line_id)
        if cached is not None and cached.covers(t):
            return cached
        window = window_at(self._line_config[line_id], self.config.zone, t)
        if window is not None:
            self._windows[line_id] = window
        return window

    def _cycle_end(self, line_id: str, t: int) -> int:
        """The fixed position a call opened at `t` stops at: the end of its takt cycle in
        working time, or one takt into the next shift when it comes outside every shift."""
        window = self._window(line_id, t)
        if window is not None:
            return window.cycle_end(t)
        return fixed_position_stop(self._line_config[line_id], self.config.zone, t)

    def _on_cycle(self, station: Station, event: contract.Cycle, at: int) -> None:
        line = self._lines[station.line]
        window = self._window(station.line, at)
        if window is None:
            line.off_shift_cycles += 1
            return
        tally = self._tally(line, window)
        tally.counts[station.id] = tally.counts.get(station.id, 0) + 1

    def _tally(self, line: Line, window: ShiftWindow) -> ShiftTally:
        for tally in reversed(line.shifts):
            if tally.start == window.start:
                return tally
        tally = ShiftTally(window.name, window.start, window.end, window.demand, window.working_ms)
        line.shifts.append(tally)
        line.shifts.sort(key=lambda s: s.start)
        del line.shifts[:-SHIFT_HISTORY]
        return tally

    def _takt_view(self, line_id: str) -> dict:
        line = self._lines[line_id]
        order = [s.id for s in reversed(self._line_stations[line_id])]
        window = self._window(line_id, self.now) if self.now is not None else None
        shifts = []
        for tally in line.shifts:
            current = window is not None and window.start == tally.start
            shifts.append(
                {
                    "shift": tally.shift,
                    "start": tally.start,
                    "end": tally.end,
                    "current": current,
                    "plan": window.plan(self.now) if current else tally.demand,
                    "actual": next((tally.counts[s] for s in order if s in tally.counts), 0),
                    "demand": tally.demand,
                    "working_ms": tally.working_ms,
                }
            )
        if window is not None and not any(s["current"] for s in shifts):
            shifts.append(
                {
                    "shift": window.name,
                    "start": window.start,
                    "end": window.end,
                    "current": True,
                    "plan": window.plan(self.now),
                    "actual": 0,
                    "demand": window.demand,
                    "working_ms": window.working_ms,
                }
            )
        takt = window.takt_ms if window else None
        return {"takt_ms": takt, "shifts": shifts, "off_shift_cycles": line.off_shift_cycles}
