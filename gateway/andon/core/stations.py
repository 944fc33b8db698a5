"""What a station and its line show, and the line stops.

A station shows the most severe of its open calls: a call that stopped the line ranks above an
unacknowledged one, which ranks above an acknowledged one; between calls in the same state the
cause's severity decides (cord 100, quality 80, maintenance 60, material 40 by default), then
the older call. An offline board shows "offline" whatever its calls. A line is stopped when
any station stops it (a call that stopped it, or an offline board where `offline_stops_line`),
called when any station has an open call, else running. Each line stop is a StopRecord booked
to the station and cause that stopped the line first; downtime per cause adds up closed stops.

State used: `_stations`, `_lines`, `_calls`, `_positions`, `_counters` (stops per line).
"""

from __future__ import annotations

from bisect import insort

from andon.core.effects import LineChanged, StationChanged, StopRecord
from andon.core.state import Call, Line, Station

_CALL_STATE_RANK = {"acknowledged": 1, "called": 2, "stopped": 3}


def call_state(call: Call) -> str:
    if call.stopped is not None:
        return "stopped"
    return "acknowledged" if call.acknowledged is not None else "called"


class StationRules:
    def _open_calls(self, station: Station) -> list[Call]:
        """The station's open calls, most severe first."""
        calls = [self._calls[i] for i in station.calls.values()]
        return sorted(calls, key=self._call_rank, reverse=True)

    def _call_rank(self, call: Call) -> tuple[int, int, int]:
        return (_CALL_STATE_RANK[call_state(call)], self._severity(call.cause), -call.opened)

    def _shown(self, station: Station) -> tuple[str, str | None]:
        """(state, cause) the station shows."""
        ids = station.calls
        if len(ids) == 1:  # the common case, on every event: no ranking
            top = self._calls[next(iter(ids.values()))]
        else:
            top = max((self._calls[i] for i in ids.values()), key=self._call_rank, default=None)
        if not station.online:
            return "offline", top.cause if top else None
        return (call_state(top), top.cause) if top else ("running", None)

    def _stops_line(self, station: Station) -> bool:
        if not station.online and self.config.gateway.offline_stops_line:
            return True
        return any(self._calls[i].stopped is not None for i in station.calls.values())

    def _refresh(self, station: Station, at: int) -> None:
        """Publish the station and its line, each only if what it shows has changed."""
        state, cause = self._shown(station)
        material = station.orders > 0
        shown = (station.state, station.cause, station.material)
        if shown != (state, cause, material):
            if (state, cause) != shown[:2]:
                station.since = max(at, station.since)
            station.state, station.cause, station.material = state, cause, material
            self._out.append(self._station_effect(station))
        # an offline station still stops its line when its call's deadline passes
        self._refresh_line(station, at)

    def _refresh_line(self, station: Station, at: int) -> None:
        """The station's line after the station changed. Every change to what a station
        contributes comes through here, so only this station can move in the line's lists."""
        line = self._lines[station.line]
        stops = self._stops_line(station)
        calls = bool(station.calls) and not stops
        if (station.id in line.stopped, station.id in line.called) == (stops, calls):
            return
        position = self._positions[line.id].__getitem__  # configuration order
        stopped, called = line.stopped, line.called  # changed in place: effects hold copies
        for ids, belongs in ((stopped, stops), (called, calls)):
            if station.id in ids and not belongs:
                ids.remove(station.id)
            elif belongs and station.id not in ids:
                insort(ids, station.id, key=position)
        state = "stopped" if stopped else "called" if called else "running"
        if state != line.state:
            at = max(at, line.since)
            if line.state == "stopped":
                self._end_stop(line, at)
            if state == "stopped":
                self._start_stop(line, at)
            line.since = at
        line.state = state
        self._out.append(self._line_effect(line))

    def _start_stop(self, line: Line, at: int) -> None:
        station, cause, call = self._first_stop(line)
        line.stop_id = self._next_id("D", line.id)
        line.stop_station, line.stop_cause, line.stop_call = station, cause, call
        self._emit_stop(line, at, None)

    def _end_stop(self, line: Line, at: int) -> None:
        downtime = line.downtime
        downtime[line.stop_cause] = downtime.get(line.stop_cause, 0) + at - line.since
        self._emit_stop(line, line.since, at)
        line.stop_id = line.stop_station = line.stop_cause = line.stop_call = None

    def _emit_stop(self, line: Line, started: int, ended: int | None) -> None:
        site = self.config.site
        record = StopRecord(
            site, line.stop_id, line.id, line.stop_station, line.stop_cause, line.stop_call,
            started, ended,
        )  # fmt: skip
        self._out.append(record)

    def _first_stop(self, line: Line) -> tuple[str, str, str | None]:
        """(station, cause, call) of the first stop among the stations stopping the line."""
        firsts = []
        for station_id in line.stopped:
            station = self._stations[line.id, station_id]
            stopped = [c for c in self._open_calls(station) if c.stopped is not None]
            if stopped:
                first = min(stopped, key=lambda c: c.stopped)
                firsts.append((first.stopped, station_id, first.cause, first.id))
            else:
                firsts.append((station.since, station_id, "offline", None))
        _, station_id, cause, call = min(firsts)
        return station_id, cause, call

    def _station_effect(self, s: Station) -> StationChanged:
        return StationChanged(self.config.site, s.line, s.id, s.state, s.cause, s.since, s.material)

    def _line_effect(self, ln: Line) -> LineChanged:
        site = self.config.site
        return LineChanged(site, ln.id, ln.state, tuple(ln.stopped), tuple(ln.called), ln.since)

    def _line_view(self, line_id: str) -> dict:
        line = self._lines[line_id]
        downtime = dict(line.downtime)
        if line.state == "stopped" and self.now is not None:
            downtime[line.stop_cause] = downtime.get(line.stop_cause, 0) + self.now - line.since
        return {
            "id": line_id,
            "name": self._line_config[line_id].name,
            "state": line.state,
            "stopped": list(line.stopped),
            "called": list(line.called),
            "since": line.since,
            "stop_cause": line.stop_cause,
            "downtime_ms": downtime,
            "takt": self._takt_view(line_id),
            "stations": [self._station_view(s) for s in self._line_stations[line_id]],
        }

    def _station_view(self, s: Station) -> dict:
        name = self.config.station(s.line, s.id).name
        return {
            "id": s.id,
            "name": name,
            "state": s.state,
            "call": s.cause,
            "calls": [c.id for c in self._open_calls(s)],
            "since": s.since,
            "material": s.material,
            "online": s.online,
            "boot": s.boot,
            "faults": list(s.faults),
            "cords_pulled": list(s.pulled),
        }
