"""Presence and wiring: births, Wills and input faults.

A birth marks the station online (a station_online notice if it was offline) unless its boot is
older than the newest birth's; the boot of the newest birth is the board's current session. A
Will counts only for that session (or, before any birth is known, for whatever boot it names): a
Will of any other boot (a late one, or a forged one) changes nothing, and a Will never moves the
session, so the next real birth always brings the station back. An offline station raises
station_offline, open until the next birth; with `offline_stops_line` it stops its line (cause
"offline"). Open calls keep their timers while the board is offline. A birth that says the
outbox is near full raises outbox_near_full, open until a birth says otherwise. A birth whose
last_error says the previous boot ended in a firmware fault raises board_fault, once (each of
that boot's births carries it). A supervised input's wiring fault, or an RFID reader that does
not answer, raises input_fault, open until the board reports it clear.

State used: `_stations`; alerts.
"""

from __future__ import annotations

from andon import contract
from andon.core.state import Station


class PresenceRules:
    def _on_birth(self, station: Station, birth: contract.Birth, at: int) -> None:
        if birth.boot < station.boot:
            return  # an older birth, delivered late
        station.boot = birth.boot
        where = f"{station.line}/{station.id}"
        if birth.last_error is not None:
            text = (
                f"board {birth.board} at {where} reset after a firmware fault: {birth.last_error}"
            )
            subject = f"board_fault:{where}/{birth.boot}"
            self._raise_alert("board_fault", subject, text, at, *_at(station), one_shot=True)
        if birth.outbox_near_full:
            text = f"board {birth.board} at {where}: outbox near full"
            self._raise_alert("outbox_near_full", f"outbox:{where}", text, at, *_at(station))
        else:
            self._clear_alert(f"outbox:{where}", at)
        if not station.online:
            station.online = True
            self._clear_alert(f"offline:{where}", at)
            text = f"board {birth.board} at {where} is back online"
            self._send("station_online", text, at, *_at(station))
            self._refresh(station, at)

    def _on_will(self, station: Station, will: contract.Will, at: int) -> None:
        if station.boot not in (0, will.boot) or not station.online:
            return  # not the current session's Will, or a repeat
        station.online = False
        where = f"{station.line}/{station.id}"
        text = f"board {will.board} at {where} went offline"
        self._raise_alert("station_offline", f"offline:{where}", text, at, *_at(station))
        self._refresh(station, at)

    def _on_input_fault(self, station: Station, event: contract.InputFault, at: int) -> None:
        where = f"{station.line}/{station.id}"
        subject = f"input:{where}/{event.input}"
        if event.fault == "clear":
            if event.input in station.faults:
                station.faults.remove(event.input)
            self._clear_alert(subject, at)
            return
        if event.input not in station.faults:
            station.faults.append(event.input)
            what = "not answering" if event.fault == "reader" else f"wiring {event.fault}"
            text = f"input {event.input} at {where}: {what}"
            self._raise_alert("input_fault", subject, text, at, *_at(station))

    def _on_events_lost(self, station: Station, gap: contract.EventsLost, at: int) -> None:
        """The gateway declared a board's events lost (intake: a gap that timed out, or a base
        past it): an alert with nothing to clear, so it closes by itself."""
        where = f"{station.line}/{station.id}"
        count = gap.last - gap.first + 1
        text = f"board {gap.board} at {where}: {count} event(s) lost (seq {gap.first}..{gap.last})"
        subject = f"lost:{where}:{gap.first}"
        extra = {"board": gap.board, "first": gap.first, "last": gap.last}
        self._raise_alert("events_lost", subject, text, at, *_at(station), one_shot=True, **extra)


def _at(station: Station) -> tuple[str, str]:
    return station.line, station.id
