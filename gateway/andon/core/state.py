"""The core's mutable state: plain slotted dataclasses of JSON types, so a snapshot is cheap.

Only what is open lives here (open calls and orders, cards, counters, recent shifts); what is
closed leaves the core as a CallRecord or OrderRecord effect for the storage to keep.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cache


@dataclass(slots=True)
class Call:
    id: str
    line: str
    station: str
    cause: str
    opened: int
    repeats: int = 0
    acknowledged: int | None = None
    acknowledged_by: str | None = None
    stop_due: int | None = None  # the stop's deadline, until it fires
    stopped: int | None = None
    tier: int = 0  # the last escalation tier raised (1-based), 0: none
    next_tier: int = 0  # index of the next tier to consider (tiers sorted by after_s)
    escalate_due: int | None = None  # that tier's deadline
    resolved: int | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    reason: str | None = None  # a reason code, from the console
    comment: str | None = None


@dataclass(slots=True)
class Station:
    line: str
    id: str
    online: bool = True
    boot: int = 0  # the boot of the newest birth or will seen
    calls: dict[str, str] = field(default_factory=dict)  # cause -> open call id
    pulled: list[str] = field(default_factory=list)  # cords pulled now (inputs)
    orders: int = 0  # open kanban orders posted here (the material flag)
    faults: list[str] = field(default_factory=list)  # inputs with a wiring fault now
    # as last shown (StationChanged)
    state: str = "running"
    cause: str | None = None
    material: bool = False
    since: int = 0


@dataclass(slots=True)
class ShiftTally:
    shift: str
    start: int
    end: int
    demand: int
    working_ms: int  # the shift's working time: breaks out, DST nights as long as they are
    counts: dict[str, int] = field(default_factory=dict)  # cycles per station


@dataclass(slots=True)
class Line:
    id: str
    # as last shown (LineChanged)
    state: str = "running"
    stopped: list[str] = field(default_factory=list)
    called: list[str] = field(default_factory=list)
    since: int = 0
    stop_cause: str | None = None  # what the current stop is booked to
    stop_station: str | None = None  # the station it is booked to
    stop_call: str | None = None  # and its call, if a call stopped the line
    stop_id: str | None = None  # the current stop's record id
    downtime: dict[str, int] = field(default_factory=dict)  # ms stopped per cause, closed stops
    shifts: list[ShiftTally] = field(default_factory=list)  # recent shifts, oldest first
    off_shift_cycles: int = 0


@dataclass(slots=True)
class Card:
    uid: str
    part: str
    order: str | None = None  # the open order's id while the card is ordered
    last_seen: int = 0
    lost_due: int | None = None
    lost: bool = False


@dataclass(slots=True)
class Order:
    id: str
    part: str
    qty: int
    supplier: str
    card: str
    line: str
    station: str
    posted: int
    due: int
    overdue_due: int | None = None
    overdue: bool = False
    received: int | None = None


@dataclass(slots=True)
class LoopStats:
    part: str
    posts: list[int] = field(default_factory=list)  # post times within the demand window
    # [start, end] while every card was ordered (none left to post), within the window;
    # the last one's end is None while it lasts
    starved: list[list] = field(default_factory=list)
    received: int = 0
    lead_sum_ms: int = 0
    lead_min_ms: int | None = None
    lead_max_ms: int | None = None


@dataclass(slots=True)
class OpenAlert:
    """An alert people should see until its condition clears (or, for one-shot alerts such
    as an unknown tag, until `close_due`)."""

    id: str
    kind: str
    subject: str  # what the alert is about: a later alert on the same subject is a repeat
    text: str
    opened: int
    line: str | None = None
    station: str | None = None
    call: str | None = None
    count: int = 1  # raised this often while open
    close_due: int | None = None


def dump(obj: object) -> dict:
    """A state object as fresh JSON types (what `dataclasses.asdict` gives, without its deep
    copies of every scalar: the snapshot of a thousand stations must stay cheap)."""
    return {name: _plain(getattr(obj, name)) for name in field_names(type(obj))}


def _plain(value: object) -> object:
    kind = type(value)
    if kind is list:
        return [_plain(v) for v in value]
    if kind is dict:
        return {k: _plain(v) for k, v in value.items()}
    if kind in _STATE:
        return dump(value)
    return value  # str, int, bool, None: immutable


@cache
def field_names(cls: type) -> tuple[str, ...]:
    """A dataclass's field names, looked up once."""
    return tuple(f.name for f in fields(cls))


def load_line(data: dict) -> Line:
    return Line(**{**data, "shifts": [ShiftTally(**s) for s in data["shifts"]]})


_STATE = {Call, Station, ShiftTally, Line, Card, Order, LoopStats, OpenAlert}
