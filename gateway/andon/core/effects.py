"""What the core produces. Pure data: the MQTT adapter turns these into messages.

Every effect carries the gateway time (ms since the Unix epoch) at which it happened, so a
replay from the event log yields the very same effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cache
from operator import attrgetter
from typing import ClassVar


@dataclass(frozen=True)
class StationChanged:
    site: str
    line: str
    station: str
    state: str  # running | called | acknowledged | stopped | offline
    call: str | None  # the cause shown: its most severe open call's (cord, quality, ...)
    since: int
    material: bool  # a kanban order raised at this station is open (blue)


@dataclass(frozen=True)
class LineChanged:
    site: str
    line: str
    state: str  # running | called | stopped
    stopped: tuple[str, ...]
    called: tuple[str, ...]
    since: int


@dataclass(frozen=True)
class Replenish:
    site: str
    order: str
    part: str
    qty: int
    supplier: str
    card: str
    line: str
    station: str
    posted: int
    due: int


@dataclass(frozen=True)
class Alert:
    """An alert or notice for people: published on MQTT and POSTed to `webhooks`."""

    site: str
    kind: str  # escalation | station_offline | station_online | input_fault | unknown_tag |
    # badge_denied | overdue_card | lost_card | outbox_near_full | events_lost | board_fault;
    # notices:
    # call_opened | call_acknowledged | call_resolved
    text: str
    ts: int
    line: str | None = None
    station: str | None = None
    tier: int | None = None
    to: str | None = None  # the role or person the alert is for
    webhooks: tuple[str, ...] = ()  # POST it there too (with retries)
    extra: dict = field(default_factory=dict)
    id: str | None = None  # the open alert's id (A-L1-000001); None for a notice
    call: str | None = None
    cause: str | None = None
    opened: int | None = None  # the call's
    acknowledged: int | None = None


@dataclass(frozen=True)
class CallRecord:
    """A call as a record, emitted each time it changes; the storage upserts it by `id`."""

    kind: ClassVar[str] = "call"
    site: str
    id: str  # C-L1-000001: numbered per line in the order calls are opened
    line: str
    station: str
    cause: str  # cord | quality | maintenance | material | a cause the plant file adds
    opened: int
    acknowledged: int | None  # when the responder arrived (ack button or badge tap)
    acknowledged_by: str | None  # the badge's person; None for the ack button
    stopped: int | None  # when the call stopped the line (fixed-position stop), if it did
    resolved: int | None
    resolved_by: str | None
    resolution: str | None  # cord_reset | ack_button | badge | console
    repeats: int  # further pulls or presses while it was open
    tier: int  # the last escalation tier raised
    reason: str | None  # a reason code given in the console
    comment: str | None

    @property
    def response_ms(self) -> int | None:
        return None if self.acknowledged is None else self.acknowledged - self.opened

    @property
    def repair_ms(self) -> int | None:
        """Time to repair: from the call to its resolution."""
        return None if self.resolved is None else self.resolved - self.opened


@dataclass(frozen=True)
class OrderRecord:
    """A kanban order as a record, emitted each time it changes; upserted by `id`."""

    kind: ClassVar[str] = "order"
    site: str
    id: str  # K-L1-000001: numbered per line (where posted) in the order cards are posted
    part: str
    qty: int
    supplier: str
    card: str
    line: str  # where the card was posted
    station: str
    posted: int
    due: int
    received: int | None
    overdue: bool  # the overdue_card alert was raised

    @property
    def lead_time_ms(self) -> int | None:
        return None if self.received is None else self.received - self.posted


@dataclass(frozen=True)
class StopRecord:
    """A line stop, emitted when it starts and when it ends; upserted by `id`."""

    kind: ClassVar[str] = "stop"
    site: str
    id: str  # D-L1-000001: numbered per line in the order stops start
    line: str
    station: str  # the station that stopped the line first
    cause: str  # its call's cause, or "offline"
    call: str | None
    started: int
    ended: int | None


@dataclass(frozen=True)
class AlertRecord:
    """An alert as a record, emitted when it opens, repeats and closes; upserted by `id`."""

    kind: ClassVar[str] = "alert"
    site: str
    id: str  # A-L1-000001
    alert: str  # its kind: escalation, station_offline, ...
    text: str
    opened: int
    line: str | None
    station: str | None
    call: str | None
    count: int
    closed: int | None


@dataclass(frozen=True)
class Annotation:
    """A reason code and comment given to a call (open or closed) in the console."""

    kind: ClassVar[str] = "annotation"
    site: str
    id: str  # the call's id
    line: str  # the call's line
    reason: str | None
    comment: str | None
    by: str
    at: int


RecordEffect = CallRecord | OrderRecord | StopRecord | AlertRecord | Annotation
RECORDS = (CallRecord, OrderRecord, StopRecord, AlertRecord, Annotation)
"""Effects the storage keeps as the latest version of a record, by (kind, id)."""

Effect = StationChanged | LineChanged | Replenish | Alert | RecordEffect


def project(cls: type, source: object, **given: object):
    """An effect dataclass filled from the state object's attributes of the same names.

    A record is projected at nearly every event, and a frozen dataclass's `__init__` sets each
    field through `object.__setattr__`: a call per field. Filling the new instance's fields
    directly gives the same frozen value (equal, hashable, immutable) at a third of the cost."""
    names, read = _reader(cls, frozenset(given))
    effect = object.__new__(cls)
    effect.__dict__.update(zip(names, read(source), strict=True), **given)
    return effect


@cache
def _reader(cls: type, given: frozenset[str]) -> tuple[tuple[str, ...], attrgetter]:
    """The fields of `cls` not given, and one getter for all of them (an effect per event)."""
    every = {f.name for f in fields(cls)}
    if not given <= every:
        raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(given - every))}")
    names = tuple(f.name for f in fields(cls) if f.name not in given)
    return names, attrgetter(*names)
