"""What the core produces. Pure data: the MQTT adapter turns these into messages.

Every effect carries the gateway time (ms since the Unix epoch) at which it happened, so a
replay from the event log yields the very same effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StationChanged:
    site: str
    line: str
    station: str
    state: str  # running | called | acknowledged | stopped | offline
    call: str | None  # cord | maintenance | quality | material | None
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
    site: str
    kind: str  # escalation | station_offline | station_online | unknown_tag | overdue_card |
    # lost_card | outbox_near_full | input_fault | board_fault
    text: str
    ts: int
    line: str | None = None
    station: str | None = None
    tier: int | None = None
    to: str | None = None  # the role or person the alert is for
    webhook: str | None = None  # POST it there too (with retries), when configured
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CallRecord:
    """A call as a record, emitted each time it changes; the storage upserts it by `id`."""

    site: str
    id: str  # C-000001, numbered by the core in the order calls are opened
    line: str
    station: str
    cause: str  # cord | maintenance | quality | material
    opened: int
    acknowledged: int | None  # when the responder arrived (ack button or badge tap)
    acknowledged_by: str | None  # the badge's person; None for the ack button
    stopped: int | None  # when the call stopped the line (fixed-position stop), if it did
    resolved: int | None
    resolved_by: str | None
    resolution: str | None  # cord_reset | ack_button | badge
    repeats: int  # further pulls or presses while it was open
    tier: int  # escalation tiers raised so far

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

    site: str
    id: str  # K-000001, numbered by the core in the order cards are posted
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


Effect = StationChanged | LineChanged | Replenish | Alert | CallRecord | OrderRecord
