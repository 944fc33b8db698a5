"""The plant's state machines: pure, deterministic, replayable. No I/O, no wall clock.

`Plant.apply(record)` takes one accepted input and returns the effects it causes; timers (the
fixed-position stop, escalation tiers, overdue and lost cards) come due through `advance(now)`,
and their effects carry the timer's deadline, so the state never depends on how often the
caller advances. The same records always give the same state and the same effects.

Rules (issue 4; where the issue leaves a choice, the choice is written here):

Calls. A station has at most one open call. A cord pull opens a `cord` call, a call button a
`maintenance`/`quality`/`material` call; any pull or press while a call is open is a repeat of
it (counted on the call), not a new call. The first ack button press or known badge tap at the
station acknowledges it (the time is when the responder was there: the event's own time). A cord
call is resolved only by `cord_reset` (before or after the acknowledgement), because the cord
must be physically reset; a button call is resolved by the second ack press or badge tap.
A call still open at its stop deadline stops the line: mode "seconds" N s after it was opened;
mode "takt" at the end of the takt cycle it was opened in (the next multiple of takt time since
the shift's start; outside every shift, one takt of the line's first shift after the call).
Escalation: tier k alerts `tiers[k].to` once the call has been unacknowledged for
`tiers[k].after_s`; escalation alerts carry the configured webhook.

Presence. A Will marks the station offline (alert station_offline) unless its boot is older
than the newest birth's; a Birth marks it online again (alert station_online). With
`offline_stops_line`, an offline station stops its line (cause "offline"). Open calls keep
their timers while the board is offline.

Line. Stopped when any station stops it (a stopped call, or offline when that stops the line),
called when any station has an open call, else running. Each stop is booked, when it ends, to
the cause of the station that stopped the line first.

Kanban. A card is `in_use` until it is posted, then `ordered` (the replenishment trigger goes out
with the post: there is no approval step between posted and ordered) until a receive scan
returns it to `in_use`, recording the lead time. A card posted again while ordered is the same
order. A known card posted at any post reader is accepted (the order is booked to where it was
posted). Unknown tags on post or receive readers, and unknown badges, raise unknown_tag.
An order not received by posted + lead time x overdue_factor raises overdue_card once; a card
not scanned for lost_after_s raises lost_card once (until it is seen again); cards count as
seen when the core's clock starts. Recommended cards per loop: the classic kanban formula
N = D x L x (1 + safety) / C with D the measured demand in units (posts in the demand window x
bin quantity, per ms), L the mean measured lead time (the configured one until an order has been
received) and C the bin quantity; at least 1.

Takt. Cycle events are counted per line and shift (by the event's time); a line's actual output
is the count at its most downstream station (configuration order) that reports cycles. The plan
by time t is the shift's demand spread evenly over the shift.

Times: an event is dated by `date_event`. A deadline that is already past when it is set (an
event delivered late from a board's outbox) is moved to LATE_GRACE_MS after the gateway's now,
so the rest of a replayed outbox (the reset that followed the pull) can arrive first.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right, insort
from dataclasses import dataclass
from functools import cache
from operator import attrgetter

from andon import contract
from andon.config import PlantConfig
from andon.core.effects import (
    Alert,
    CallRecord,
    Effect,
    LineChanged,
    OrderRecord,
    Replenish,
    StationChanged,
)
from andon.core.state import (
    Call,
    Card,
    Line,
    LoopStats,
    Order,
    ShiftTally,
    Station,
    dump,
    field_names,
    load_line,
)
from andon.core.takt import ShiftWindow, window_at

LATE_GRACE_MS = 2_000
SHIFT_HISTORY = 9  # shift tallies kept per line (three days of three shifts)
SNAPSHOT_VERSION = 1
_DAY_MS = 86_400_000

# Timer kinds, in the order timers due at the same moment fire.
_STOP, _ESCALATE, _OVERDUE, _LOST = range(4)


class UnknownStation(ValueError):
    """A record for a station the plant configuration does not have."""


@dataclass(frozen=True)
class Record:
    """One accepted input, as the event log stores it."""

    received: int  # gateway clock (ms) when accepted; non-decreasing along the log
    line: str
    station: str
    message: contract.Event | contract.Birth | contract.Will
    at: int  # when it happened, see date_event

    @classmethod
    def dated(
        cls,
        received: int,
        line: str,
        station: str,
        message: contract.Event | contract.Birth | contract.Will,
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


class Plant:
    """The whole plant's state, fed by records; see the module docstring for the rules."""

    def __init__(self, config: PlantConfig) -> None:
        self.config = config
        self.now: int | None = None  # the core's clock: the last record's or advance's time
        self.started: int | None = None
        self._counters = {"call": 0, "order": 0}
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
        self._timers: list[tuple[int, int, str]] = []  # (deadline, kind, key), a heap
        self._windows: dict[str, ShiftWindow] = {}  # cache: each line's last shift window
        self._out: list[Effect] = []
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
        station = self._stations.get((record.line, record.station))
        if station is None:
            raise UnknownStation(f"no station {record.line}/{record.station} in the plant")
        if self.now is None:
            self._start(record.received)
        out = self.advance(record.received)
        self._out = out
        message = record.message
        if isinstance(message, contract.Birth):
            self._on_birth(station, message, record.at)
        elif isinstance(message, contract.Will):
            self._on_will(station, message, record.at)
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
        }

    @classmethod
    def restore(cls, config: PlantConfig, snapshot: dict) -> Plant:
        """A Plant equal to the one that took `snapshot`, for this same configuration.

        Raises ValueError when the configuration no longer matches the snapshot (stations or
        cards changed): rebuild from the event log instead.
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
        plant._rearm()
        return plant

    def states(self) -> list[Effect]:
        """Every station's and line's state as shown now: what to publish (retained) at start."""
        stations = [self._station_effect(s) for s in self._stations.values()]
        return [*stations, *(self._line_effect(ln) for ln in self._lines.values())]

    def view(self) -> dict:
        """The plant now, for `andon status` and the live board. JSON types only."""
        return {
            "site": self.config.site,
            "now": self.now,
            "lines": [self._line_view(ln.id) for ln in self.config.lines],
            "calls": [self._call_view(c) for c in self._calls.values()],
            "orders": [dump(o) for o in self._orders.values()],
            "kanban": [self._loop_view(k.part) for k in self.config.kanban],
        }

    # --- clock and timers -----------------------------------------------------------------

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
            for due, kind in ((call.stop_due, _STOP), (call.escalate_due, _ESCALATE)):
                if due is not None:
                    self._arm(due, kind, call.id)
        for order in self._orders.values():
            if order.overdue_due is not None:
                self._arm(order.overdue_due, _OVERDUE, order.id)
        for card in self._cards.values():
            if card.lost_due is not None:
                self._arm(card.lost_due, _LOST, card.uid)

    def _pending(self, kind: int, key: str) -> int | None:
        """The deadline the state holds now for this timer, or None if it is off."""
        if kind == _LOST:
            return self._cards[key].lost_due
        if kind == _OVERDUE:
            order = self._orders.get(key)
            return order.overdue_due if order else None
        call = self._calls.get(key)
        if call is None:
            return None
        return call.stop_due if kind == _STOP else call.escalate_due

    def _fire(self, kind: int, key: str, deadline: int) -> None:
        if kind == _LOST:
            self._card_lost(self._cards[key], deadline)
        elif kind == _OVERDUE:
            self._order_overdue(self._orders[key], deadline)
        elif kind == _STOP:
            self._stop_line(self._calls[key], deadline)
        else:
            self._escalate(self._calls[key], deadline)

    # --- calls ----------------------------------------------------------------------------

    def _on_cord_pulled(self, station: Station, event: contract.CordPulled, at: int) -> None:
        self._open_call(station, "cord", at)

    def _on_call(self, station: Station, event: contract.Call, at: int) -> None:
        self._open_call(station, event.reason, at)

    def _on_cord_reset(self, station: Station, event: contract.CordReset, at: int) -> None:
        call = self._calls.get(station.call) if station.call else None
        if call is not None and call.cause == "cord":
            self._resolve(call, at, None, "cord_reset")

    def _on_ack(self, station: Station, event: contract.AckPressed, at: int) -> None:
        self._respond(station, at, None, "ack_button")

    def _open_call(self, station: Station, cause: str, at: int) -> None:
        if station.call is not None:
            self._calls[station.call].repeats += 1
            return
        self._counters["call"] += 1
        call = Call(f"C-{self._counters['call']:06d}", station.line, station.id, cause, at)
        deadline = self._stop_deadline(station.line, at)
        # A stop configured as immediate (0 s) comes with the call, unless the call itself
        # arrives late from an outbox replay: then it gets the grace like any past deadline.
        immediate = deadline <= at and self.now - at < LATE_GRACE_MS
        if not immediate:
            call.stop_due = self._arm(self._due(deadline), _STOP, call.id)
        tiers = self.config.escalation.tiers
        if tiers:
            call.escalate_due = self._arm(
                self._due(at + tiers[0].after_s * 1000), _ESCALATE, call.id
            )
        self._calls[call.id] = call
        station.call = call.id
        if immediate:
            self._stop_line(call, at)
            return
        self._emit_call(call)
        self._refresh(station, at)

    def _respond(self, station: Station, at: int, who: str | None, how: str) -> None:
        """An ack press or badge tap: the first acknowledges, the second resolves a button call."""
        call = self._calls.get(station.call) if station.call else None
        if call is None:
            return
        if call.acknowledged is None:
            call.acknowledged = max(at, call.opened)
            call.acknowledged_by = who
            call.escalate_due = None
            self._emit_call(call)
            self._refresh(station, at)
        elif call.cause != "cord":
            self._resolve(call, at, who, how)

    def _resolve(self, call: Call, at: int, who: str | None, how: str) -> None:
        call.resolved = max(at, call.acknowledged or call.opened, call.stopped or 0)
        call.resolved_by, call.resolution = who, how
        call.stop_due = call.escalate_due = None
        del self._calls[call.id]
        station = self._stations[call.line, call.station]
        station.call = None
        self._emit_call(call)
        self._refresh(station, call.resolved)

    def _stop_deadline(self, line_id: str, opened: int) -> int:
        line = self._line_config[line_id]
        if line.stop.mode == "seconds":
            return opened + line.stop.seconds * 1000
        window = self._window(line_id, opened)
        if window is not None:
            return window.cycle_end(opened)
        return opened + line.shifts[0].takt_ms

    def _stop_line(self, call: Call, at: int) -> None:
        call.stop_due = None
        call.stopped = at
        self._emit_call(call)
        self._refresh(self._stations[call.line, call.station], at)

    def _escalate(self, call: Call, at: int) -> None:
        tiers = self.config.escalation.tiers
        tier = tiers[call.tier]
        call.tier += 1
        nxt = call.tier < len(tiers)
        due = self._due(call.opened + tiers[call.tier].after_s * 1000) if nxt else None
        call.escalate_due = self._arm(due, _ESCALATE, call.id) if nxt else None
        self._emit_call(call)
        webhook = self.config.escalation.webhook
        text = (
            f"{call.cause} call at {call.line}/{call.station} "
            f"unacknowledged for {(at - call.opened) // 1000} s"
        )
        self._alert(
            "escalation",
            text,
            at,
            call.line,
            call.station,
            tier=call.tier,
            to=tier.to,
            webhook=webhook,
        )

    # --- presence and faults --------------------------------------------------------------

    def _on_birth(self, station: Station, birth: contract.Birth, at: int) -> None:
        if birth.boot < station.boot:
            return  # an older birth, delivered late
        station.boot = birth.boot
        if birth.last_error is not None:
            text = (
                f"board {birth.board} at {station.line}/{station.id} reset after a firmware "
                f"fault: {birth.last_error}"
            )
            self._alert("board_fault", text, at, station.line, station.id)
        if birth.outbox_near_full:
            text = f"board {birth.board} at {station.line}/{station.id}: outbox near full"
            self._alert("outbox_near_full", text, at, station.line, station.id)
        if not station.online:
            station.online = True
            text = f"board {birth.board} at {station.line}/{station.id} is back online"
            self._alert("station_online", text, at, station.line, station.id)
            self._refresh(station, at)

    def _on_will(self, station: Station, will: contract.Will, at: int) -> None:
        if will.boot < station.boot or not station.online:
            return  # the Will of a boot that has since been reborn, or a repeat
        station.boot = will.boot
        station.online = False
        text = f"board {will.board} at {station.line}/{station.id} went offline"
        self._alert("station_offline", text, at, station.line, station.id)
        self._refresh(station, at)

    def _on_input_fault(self, station: Station, event: contract.InputFault, at: int) -> None:
        if event.fault == "clear":
            if event.input in station.faults:
                station.faults.remove(event.input)
            return
        if event.input not in station.faults:
            station.faults.append(event.input)
            what = "not answering" if event.fault == "reader" else f"wiring {event.fault}"
            text = f"input {event.input} at {station.line}/{station.id}: {what}"
            self._alert("input_fault", text, at, station.line, station.id)

    # --- stations and lines as shown ------------------------------------------------------

    def _stops_line(self, station: Station) -> bool:
        if not station.online and self.config.gateway.offline_stops_line:
            return True
        return station.call is not None and self._calls[station.call].stopped is not None

    def _refresh(self, station: Station, at: int) -> None:
        """Publish the station and its line, each only if what it shows has changed."""
        call = self._calls[station.call] if station.call else None
        cause = call.cause if call else None
        if not station.online:
            state = "offline"
        elif call is None:
            state = "running"
        elif call.stopped is not None:
            state = "stopped"
        else:
            state = "acknowledged" if call.acknowledged is not None else "called"
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
        calls = station.call is not None and not stops
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
                line.downtime[line.stop_cause] = line.downtime.get(line.stop_cause, 0) + (
                    at - line.since
                )
            line.stop_cause = self._stop_cause(line.id, stopped) if stopped else None
            line.since = at
        line.state = state
        self._out.append(self._line_effect(line))

    def _stop_cause(self, line_id: str, stopped: list[str]) -> str:
        """The cause of the first stop among the stations stopping the line."""
        causes = []
        for station_id in stopped:
            station = self._stations[line_id, station_id]
            call = self._calls.get(station.call) if station.call else None
            if call is not None and call.stopped is not None:
                causes.append((call.stopped, call.cause))
            else:
                causes.append((station.since, "offline"))
        return min(causes)[1]

    def _station_effect(self, s: Station) -> StationChanged:
        return StationChanged(self.config.site, s.line, s.id, s.state, s.cause, s.since, s.material)

    def _line_effect(self, ln: Line) -> LineChanged:
        site = self.config.site
        return LineChanged(site, ln.id, ln.state, tuple(ln.stopped), tuple(ln.called), ln.since)

    # --- kanban ---------------------------------------------------------------------------

    def _on_scan(self, station: Station, event: contract.Scan, at: int) -> None:
        if event.role == "badge":
            badge = self.config.badge(event.uid)
            if badge is not None:
                self._respond(station, at, badge.person, "badge")
                return
        card = self._cards.get(event.uid) if event.role != "badge" else None
        if card is None:
            text = (
                f"unknown tag {event.uid} on the {event.role} reader at {station.line}/{station.id}"
            )
            self._alert("unknown_tag", text, at, station.line, station.id, uid=event.uid)
            return
        self._seen(card, at)
        if event.role == "post":
            self._post(card, station, at)
        else:
            self._receive(card, at)

    def _seen(self, card: Card, at: int) -> None:
        card.last_seen = max(card.last_seen, at)
        card.lost = False
        due = self._due(card.last_seen + self.config.kanban_policy.lost_after_s * 1000)
        if card.lost_due is None:
            self._arm(due, _LOST, card.uid)
        card.lost_due = max(due, card.lost_due or 0)

    def _post(self, card: Card, station: Station, at: int) -> None:
        if card.order is not None:
            return  # posted again before it was received: the same order
        loop = self.config.loop_of_card(card.uid)
        policy = self.config.kanban_policy
        self._counters["order"] += 1
        order = Order(
            f"K-{self._counters['order']:06d}",
            loop.part,
            loop.bin_qty,
            loop.supplier,
            card.uid,
            station.line,
            station.id,
            posted=at,
            due=at + loop.lead_time_s * 1000,
        )
        overdue = at + math.ceil(loop.lead_time_s * 1000 * policy.overdue_factor)
        order.overdue_due = self._arm(self._due(overdue), _OVERDUE, order.id)
        self._orders[order.id] = order
        card.order = order.id
        stats = self._loops[loop.part]
        insort(stats.posts, at)
        del stats.posts[: self._window_start(stats.posts, self.now)]
        station.orders += 1
        self._out.append(_project(Replenish, order, site=self.config.site, order=order.id))
        self._emit_order(order)
        self._refresh(station, at)

    def _receive(self, card: Card, at: int) -> None:
        if card.order is None:
            return  # a card in use, scanned at receiving: only seen
        order = self._orders.pop(card.order)
        card.order = None
        order.received = max(at, order.posted)
        order.overdue_due = None
        lead = order.received - order.posted
        stats = self._loops[order.part]
        stats.received += 1
        stats.lead_sum_ms += lead
        stats.lead_min_ms = lead if stats.lead_min_ms is None else min(stats.lead_min_ms, lead)
        stats.lead_max_ms = lead if stats.lead_max_ms is None else max(stats.lead_max_ms, lead)
        self._emit_order(order)
        poster = self._stations[order.line, order.station]
        poster.orders -= 1
        self._refresh(poster, at)

    def _order_overdue(self, order: Order, at: int) -> None:
        order.overdue_due = None
        order.overdue = True
        text = f"{order.part} order {order.id} (card {order.card}) is overdue since {order.due}"
        self._alert("overdue_card", text, at, order.line, order.station, card=order.card)
        self._emit_order(order)

    def _card_lost(self, card: Card, at: int) -> None:
        card.lost_due = None
        card.lost = True
        text = f"{card.part} card {card.uid} not seen since {card.last_seen}"
        self._alert("lost_card", text, at, card=card.uid, part=card.part)

    def _window_start(self, posts: list[int], now: int) -> int:
        """How many of the sorted post times fall before the demand window ending at `now`."""
        return bisect_right(posts, now - self.config.kanban_policy.demand_window_s * 1000)

    # --- takt -----------------------------------------------------------------------------

    def _window(self, line_id: str, t: int) -> ShiftWindow | None:
        cached = self._windows.get(line_id)
        if cached is not None and cached.covers(t):
            return cached
        window = window_at(self._line_config[line_id], self.config.zone, t)
        if window is not None:
            self._windows[line_id] = window
        return window

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
        tally = ShiftTally(window.shift.name, window.start, window.end, window.shift.demand)
        line.shifts.append(tally)
        line.shifts.sort(key=lambda s: s.start)
        del line.shifts[:-SHIFT_HISTORY]
        return tally

    # --- effects and views ----------------------------------------------------------------

    def _alert(
        self,
        kind: str,
        text: str,
        at: int,
        line: str | None = None,
        station: str | None = None,
        tier: int | None = None,
        to: str | None = None,
        webhook: str | None = None,
        **extra: str,
    ) -> None:
        self._out.append(
            Alert(self.config.site, kind, text, at, line, station, tier, to, webhook, extra)
        )

    def _emit_call(self, call: Call) -> None:
        self._out.append(_project(CallRecord, call, site=self.config.site))

    def _emit_order(self, order: Order) -> None:
        self._out.append(_project(OrderRecord, order, site=self.config.site))

    def _call_view(self, call: Call) -> dict:
        view = dump(call)
        for key in ("stop_due", "escalate_due", "resolved", "resolved_by", "resolution"):
            del view[key]
        view["stop_at"] = call.stop_due
        return view

    def _line_view(self, line_id: str) -> dict:
        line = self._lines[line_id]
        downtime = dict(line.downtime)
        if line.state == "stopped" and self.now is not None:
            downtime[line.stop_cause] = downtime.get(line.stop_cause, 0) + self.now - line.since
        return {
            "id": line_id,
            "name": self.config.line(line_id).name,
            "state": line.state,
            "stopped": list(line.stopped),
            "called": list(line.called),
            "since": line.since,
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
            "since": s.since,
            "material": s.material,
            "online": s.online,
            "boot": s.boot,
            "faults": list(s.faults),
        }

    def _takt_view(self, line_id: str) -> dict:
        line = self._lines[line_id]
        order = [s.id for s in reversed(self._line_stations[line_id])]
        window = self._window(line_id, self.now) if self.now is not None else None
        shifts = []
        for tally in line.shifts:
            current = window is not None and window.start == tally.start
            planned = window.plan(self.now) if current else tally.demand
            actual = next((tally.counts[s] for s in order if s in tally.counts), 0)
            shifts.append(
                {
                    "shift": tally.shift,
                    "start": tally.start,
                    "end": tally.end,
                    "current": current,
                    "plan": planned,
                    "actual": actual,
                    "demand": tally.demand,
                }
            )
        if window is not None and not any(s["current"] for s in shifts):
            shifts.append(
                {
                    "shift": window.shift.name,
                    "start": window.start,
                    "end": window.end,
                    "current": True,
                    "plan": window.plan(self.now),
                    "actual": 0,
                    "demand": window.shift.demand,
                }
            )
        takt = window.shift.takt_ms if window else None
        return {"takt_ms": takt, "shifts": shifts, "off_shift_cycles": line.off_shift_cycles}

    def _loop_view(self, part: str) -> dict:
        loop = next(k for k in self.config.kanban if k.part == part)
        stats = self._loops[part]
        cards = [self._cards[uid] for uid in loop.cards]
        ordered = [c for c in cards if c.order is not None]
        overdue = sum(self._orders[c.order].overdue for c in ordered)
        lead_ms = stats.lead_sum_ms // stats.received if stats.received else loop.lead_time_s * 1000
        demand = self._demand_per_day(stats)
        return {
            "part": part,
            "description": loop.description,
            "cards": {
                "total": len(cards),
                "in_use": len(cards) - len(ordered),
                "ordered": len(ordered),
                "overdue": overdue,
                "lost": sum(c.lost for c in cards),
            },
            "orders_per_day": demand,
            "lead_time_ms": {
                "configured": loop.lead_time_s * 1000,
                "received": stats.received,
                "mean": lead_ms if stats.received else None,
                "min": stats.lead_min_ms,
                "max": stats.lead_max_ms,
            },
            "recommended_cards": recommended_cards(
                demand, lead_ms, self.config.kanban_policy.safety_factor
            ),
        }

    def _demand_per_day(self, stats: LoopStats) -> float:
        """Orders per day over the demand window (or the time since the clock started)."""
        if self.now is None or self.now <= self.started:
            return 0.0
        window_ms = min(self.config.kanban_policy.demand_window_s * 1000, self.now - self.started)
        posts = len(stats.posts) - self._window_start(stats.posts, self.now)
        return posts * _DAY_MS / window_ms


def _project(cls: type, source: object, **given: object):
    """An effect dataclass filled from the state object's attributes of the same names."""
    names, read = _reader(cls, frozenset(given))
    return cls(**dict(zip(names, read(source), strict=True)), **given)


@cache
def _reader(cls: type, given: frozenset[str]) -> tuple[tuple[str, ...], attrgetter]:
    """The fields of `cls` not given, and one getter for all of them (an effect per event)."""
    names = tuple(name for name in field_names(cls) if name not in given)
    return names, attrgetter(*names)


def recommended_cards(orders_per_day: float, lead_ms: int, safety_factor: float) -> int:
    """N = D x L x (1 + safety) / C; with D in units (orders x C) the bin quantity C cancels."""
    return max(1, math.ceil(orders_per_day * lead_ms / _DAY_MS * (1 + safety_factor)))
