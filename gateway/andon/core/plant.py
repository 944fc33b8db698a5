"""The plant's state machines: pure, deterministic, replayable. No I/O, no wall clock.

`Plant.apply(record)` takes one accepted input and returns the effects it causes; timers (the
fixed-position stop, escalation tiers, overdue and lost cards, one-shot alerts closing) come
due through `advance(now)`, and their effects carry the timer's deadline, so the state never
depends on how often the caller advances. The same records always give the same state and the
same effects.

The rules live with their family, each module readable on its own (docs/rules.md says them in
plain words): `calls` (calls per cause, stops, escalation, responses), `stations` (what a
station and its line show, line stops), `presence` (births, Wills, input faults), `kanban`
(cards, orders, sizing), `tally` (takt: cycles per shift, plan versus actual) and `alerts`
(open alerts and notices). This module holds them together: the records, the clock and
timers, snapshots and the views.

Times: an event is dated by `date_event`; a deadline already past when it is set gets the grace
of `timers.LATE_GRACE_MS`.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from andon import contract
from andon.config import PlantConfig
from andon.core.alerts import AlertRules
from andon.core.calls import CallRules
from andon.core.effects import Effect
from andon.core.kanban import KanbanRules
from andon.core.presence import PresenceRules
from andon.core.state import (
    Call,
    Card,
    Line,
    LoopStats,
    OpenAlert,
    Order,
    Station,
    dump,
    load_line,
)
from andon.core.stations import StationRules
from andon.core.tally import TaktRules
from andon.core.timers import ALERT_CLOSE, ESCALATE, LATE_GRACE_MS, LOST, OVERDUE, STOP

SNAPSHOT_VERSION = 2  # 2: calls per cause, open alerts, stop records (version 1 is rebuilt)


class UnknownStation(ValueError):
    """A record for a station the plant configuration does not have."""


@dataclass(frozen=True)
class Record:
    """One accepted input, as the event log stores it. An operator's action names the call's
    station when it has one, else empty strings."""

    received: int  # gateway clock (ms) when accepted; non-decreasing along the log
    line: str
    station: str
    message: (
        contract.Event | contract.Birth | contract.Will | contract.Operator | contract.EventsLost
    )
    at: int  # when it happened, see date_event

    @classmethod
    def dated(
        cls,
        received: int,
        line: str,
        station: str,
        message: contract.Event | contract.Birth | contract.Will | contract.Operator,
    ) -> Record:
        return cls(received, line, station, message, date_event(message, received))


def date_event(message: object, received: int) -> int:
    """When an input happened: the board's ts, else received - age, else received.

    Never after `received`: a board's clock running ahead cannot date an event in the future.
    """
    ts = getattr(message, "ts", None)
    if ts is not None:
        return min(ts, received)
    age = getattr(message, "age", None)
    return max(received - age, 0) if age is not None else received


class Plant(CallRules, StationRules, PresenceRules, KanbanRules, TaktRules, AlertRules):
    """The whole plant's state, fed by records; see the rule modules for the rules."""

    def __init__(self, config: PlantConfig) -> None:
        self.config = config
        self.now: int | None = None  # the core's clock: the last record's or advance's time
        self.started: int | None = None
        self._counters: dict[str, int] = {}  # "call:L1" -> the line's calls so far
        self._stations = {(ln.id, st.id): Station(ln.id, st.id) for ln, st in config.stations()}
        self._lines = {ln.id: Line(ln.id) for ln in config.lines}
        self._line_stations = {
            ln.id: [self._stations[ln.id, st.id] for st in ln.stations] for ln in config.lines
        }
        # config.line() reads pydantic private attributes: too slow for every event
        self._line_config = {ln.id: ln for ln in config.lines}
        self._positions = {
            ln.id: {st.id: i for i, st in enumerate(ln.stations)} for ln in config.lines
        }
        self._calls: dict[str, Call] = {}
        self._orders: dict[str, Order] = {}
        self._cards = {uid: Card(uid, k.part) for k in config.kanban for uid in k.cards}
        self._loops = {k.part: LoopStats(k.part) for k in config.kanban}
        self._alerts: dict[str, OpenAlert] = {}
        self._alert_subjects: dict[str, str] = {}  # subject -> open alert id
        self._timers: list[tuple[int, int, str]] = []  # (deadline, kind, key), a heap
        self._out: list[Effect] = []
        self._init_calls()
        self._init_tally()
        self._on_event = {
            "cord_pulled": self._on_cord_pulled,
            "cord_reset": self._on_cord_reset,
            "call": self._on_call,
            "ack": self._on_ack,
            "cycle": self._on_cycle,
            "scan": self._on_scan,
            "input_fault": self._on_input_fault,
        }

    # --- the interface --------------------------------------------------------------------

    def apply(self, record: Record) -> list[Effect]:
        """Advance the timers to the record's arrival, then apply it."""
        message = record.message
        station = self._stations.get((record.line, record.station))
        is_operator = isinstance(message, contract.Operator)
        if station is None and not is_operator:
            raise UnknownStation(f"no station {record.line}/{record.station} in the plant")
        if self.now is None:
            self._start(record.received)
        out = self.advance(record.received)
        self._out = out
        if is_operator:
            self._on_operator(message, record.at)
        elif isinstance(message, contract.Birth):
            self._on_birth(station, message, record.at)
        elif isinstance(message, contract.Will):
            self._on_will(station, message, record.at)
        elif isinstance(message, contract.EventsLost):  # the gateway's record of a gap
            self._on_events_lost(station, message, record.at)
        else:
            self._on_event[message.kind](station, message, record.at)
        return out

    def advance(self, now: int) -> list[Effect]:
        """Fire every timer due up to `now`, each at its own deadline."""
        self._out = out = []
        if self.now is None:
            return out  # the clock starts with the first record, so replay starts there too
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            _, kind, key = heapq.heappop(self._timers)
            self.now = max(self.now, deadline)
            self._fire(kind, key, deadline)
        self.now = max(self.now, now)
        return out

    def next_deadline(self) -> int | None:
        """The earliest live timer. Timers are never removed from the heap: a stale one (its
        call or order closed, its card seen since) is dropped or re-armed here."""
        timers = self._timers
        while timers:
            deadline, kind, key = timers[0]
            due = self._pending(kind, key)
            if due == deadline:
                return deadline
            heapq.heappop(timers)
            if due is not None and due > deadline:
                self._arm(due, kind, key)
        return None

    def snapshot(self) -> dict:
        """The complete state as JSON types; `Plant.restore` turns it back into a Plant."""
        return {
            "version": SNAPSHOT_VERSION,
            "site": self.config.site,
            "now": self.now,
            "started": self.started,
            "counters": dict(self._counters),
            "stations": [dump(s) for s in self._stations.values()],
            "lines": [dump(ln) for ln in self._lines.values()],
            "calls": [dump(c) for c in self._calls.values()],
            "orders": [dump(o) for o in self._orders.values()],
            "cards": [dump(c) for c in self._cards.values()],
            "loops": [dump(k) for k in self._loops.values()],
            "alerts": [dump(a) for a in self._alerts.values()],
        }

    @classmethod
    def restore(cls, config: PlantConfig, snapshot: dict) -> Plant:
        """A Plant equal to the one that took `snapshot`, for this same configuration.

        Raises ValueError when the snapshot is of another version or the configuration no
        longer matches it (stations or cards changed): rebuild from the event log instead.
        """
        plant = cls(config)
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {snapshot.get('version')!r} is not supported")
        stations = {(s["line"], s["id"]): Station(**s) for s in snapshot["stations"]}
        cards = {c["uid"]: Card(**c) for c in snapshot["cards"]}
        if stations.keys() != plant._stations.keys() or cards.keys() != plant._cards.keys():
            raise ValueError("the plant configuration changed since this snapshot")
        plant.now, plant.started = snapshot["now"], snapshot["started"]
        plant._counters = dict(snapshot["counters"])
        for key, station in stations.items():  # keep the line lists pointing at the same objects
            plant._stations[key] = station
        plant._line_stations = {
            ln.id: [stations[ln.id, st.id] for st in ln.stations] for ln in config.lines
        }
        plant._lines = {ln["id"]: load_line(ln) for ln in snapshot["lines"]}
        plant._calls = {c["id"]: Call(**c) for c in snapshot["calls"]}
        plant._orders = {o["id"]: Order(**o) for o in snapshot["orders"]}
        plant._cards = cards
        plant._loops = {k["part"]: LoopStats(**k) for k in snapshot["loops"]}
        plant._alerts = {a["id"]: OpenAlert(**a) for a in snapshot["alerts"]}
        plant._alert_subjects = {a.subject: a.id for a in plant._alerts.values()}
        plant._rearm()
        return plant

    def states(self) -> list[Effect]:
        """Every station's and line's state as shown now: what to publish (retained) at start."""
        stations = [self._station_effect(s) for s in self._stations.values()]
        return [*stations, *(self._line_effect(ln) for ln in self._lines.values())]

    def view(self) -> dict:
        """The plant now, for `andon status`, the API and the board. JSON types only."""
        return {
            "site": self.config.site,
            "timezone": self.config.timezone,
            "now": self.now,
            "lines": [self._line_view(ln.id) for ln in self.config.lines],
            "calls": [self._call_view(c) for c in self._calls.values()],
            "orders": [dump(o) for o in self._orders.values()],
            "kanban": [self._loop_view(k.part) for k in self.config.kanban],
            "alerts": [self._alert_view(a) for a in self._alerts.values()],
        }

    # --- clock and timers -----------------------------------------------------------------

    def _next_id(self, prefix: str, line: str) -> str:
        """C-L1-000001: calls, orders (K), alerts (A) and stops (D) are numbered per line, so a
        line's ids are the same whichever gateway (of several) replays its log."""
        key = f"{prefix}:{line}"
        self._counters[key] = number = self._counters.get(key, 0) + 1
        return f"{prefix}-{line}-{number:06d}"

    def _numbered(self, call_id: str) -> bool:
        """Was this id given? (C-L1-000001)"""
        prefix, _, rest = call_id.partition("-")
        line, _, number = rest.rpartition("-")
        return int(number) <= self._counters.get(f"{prefix}:{line}", 0)

    def _start(self, now: int) -> None:
        """The first record's arrival: every state starts here, every card counts as seen."""
        self.now = self.started = now
        for item in (*self._stations.values(), *self._lines.values()):
            item.since = now
        for card in self._cards.values():
            self._seen(card, now)

    def _due(self, deadline: int) -> int:
        return deadline if deadline > self.now else self.now + LATE_GRACE_MS

    def _arm(self, deadline: int, kind: int, key: str) -> int:
        heapq.heappush(self._timers, (deadline, kind, key))
        return deadline

    def _rearm(self) -> None:
        """Rebuild the timer heap from the state (after a restore)."""
        self._timers = []
        for call in self._calls.values():
            for due, kind in ((call.stop_due, STOP), (call.escalate_due, ESCALATE)):
                if due is not None:
                    self._arm(due, kind, call.id)
        for order in self._orders.values():
            if order.overdue_due is not None:
                self._arm(order.overdue_due, OVERDUE, order.id)
        for card in self._cards.values():
            if card.lost_due is not None:
                self._arm(card.lost_due, LOST, card.uid)
        for alert in self._alerts.values():
            if alert.close_due is not None:
                self._arm(alert.close_due, ALERT_CLOSE, alert.id)

    def _pending(self, kind: int, key: str) -> int | None:
        """The deadline the state holds now for this timer, or None if it is off."""
        if kind == LOST:
            return self._cards[key].lost_due
        if kind == OVERDUE:
            order = self._orders.get(key)
            return order.overdue_due if order else None
        if kind == ALERT_CLOSE:
            alert = self._alerts.get(key)
            return alert.close_due if alert else None
        call = self._calls.get(key)
        if call is None:
            return None
        return call.stop_due if kind == STOP else call.escalate_due

    def _fire(self, kind: int, key: str, deadline: int) -> None:
        if kind == LOST:
            self._card_lost(self._cards[key], deadline)
        elif kind == OVERDUE:
            self._order_overdue(self._orders[key], deadline)
        elif kind == ALERT_CLOSE:
            self._close_alert(self._alerts[key], deadline)
        elif kind == STOP:
            self._stop_line(self._calls[key], deadline)
        else:
            self._escalate(self._calls[key], deadline)
