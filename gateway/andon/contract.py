"""The wire contract, gateway side (docs/protocol.md): topics, validation and encoding.

Every payload from a board is validated here before anything else sees it; what fails
raises `Rejected` with a reason the adapter counts and dead-letters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Literal

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

ROOT = "andon/v1"
# The plant's one gateway status topic; each of several gateways also has its own (`Presence`)
GATEWAY_STATUS = f"{ROOT}/gateway/status"
GATEWAY_STATUSES = f"{ROOT}/gateway/+/status"
MAX_PAYLOAD = 512
NAME_RE = r"^[A-Za-z0-9_-]{1,32}$"
Name = Annotated[str, Field(pattern=NAME_RE)]
Uid = Annotated[str, Field(pattern=r"^(?:[0-9A-F]{8}|[0-9A-F]{14}|[0-9A-F]{20})$")]
# Every number stays below 2**53: exact in JSON, in JavaScript and in SQLite's INTEGER, so no
# value is rounded on the way and none overflows the store (docs/protocol.md, "Bounds").
EXACT = 2**53
Count = Annotated[int, Field(ge=1, lt=EXACT, strict=True)]
Millis = Annotated[int, Field(ge=0, lt=EXACT, strict=True)]
Small = Annotated[int, Field(ge=0, lt=EXACT, strict=True)]
Signed = Annotated[int, Field(gt=-EXACT, lt=EXACT, strict=True)]
# The gateway's clock window for a board's `ts` (and for `age`): an event dated outside it is
# dated by its receipt instead, and flagged (see `dating`).
TS_AHEAD_MS = 5 * 60_000  # clocks of boards and gateway disagree by seconds, not minutes
TS_BEHIND_MS = 7 * 86_400_000  # an outbox holds events while its board is cut off: a week
OUTBOX_CAP_MAX = 100_000  # a board's declared outbox capacity (the firmware allows 10..100000)
# A call button's reason: quality, maintenance, material, or a cause the plant file adds
CallReason = Name
StationStateName = Literal["running", "called", "acknowledged", "stopped", "offline"]
LineStateName = Literal["running", "called", "stopped"]
CallCause = Name  # cord, or a call button's reason

_TOPIC_RE = re.compile(
    r"^andon/v1/(?P<site>[A-Za-z0-9_-]{1,32})/(?P<line>[A-Za-z0-9_-]{1,32})/"
    r"(?P<station>[A-Za-z0-9_-]{1,32})/(?P<leaf>evt|status|telemetry)$"
)


class Rejected(ValueError):
    """A payload that breaks the contract. `reason` is one of: topic, size, json, schema."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Station:
    site: str
    line: str
    station: str

    def topic(self, leaf: str) -> str:
        return f"{ROOT}/{self.site}/{self.line}/{self.station}/{leaf}"

    @property
    def line_topic(self) -> str:
        return line_state_topic(self.site, self.line)


def line_state_topic(site: str, line: str) -> str:
    return f"{ROOT}/{site}/{line}/state"


def line_owner_topic(site: str, line: str) -> str:
    return f"{ROOT}/{site}/{line}/gateway"


def replenish_topic(site: str, part: str) -> str:
    return f"{ROOT}/{site}/kanban/{part}/replenish"


def alert_topic(site: str) -> str:
    return f"{ROOT}/{site}/alert"


def board_subscriptions() -> list[str]:
    """What the gateway subscribes to: every board's uplink topics."""
    return [f"{ROOT}/+/+/+/evt", f"{ROOT}/+/+/+/status", f"{ROOT}/+/+/+/telemetry"]


def downlink_subscriptions() -> list[str]:
    """The retained downlinks the gateway owns: station state and ack, line state."""
    return [f"{ROOT}/+/+/+/state", f"{ROOT}/+/+/+/ack", f"{ROOT}/+/+/state"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _EventBase(_Strict):
    board: Name
    boot: Count
    seq: Count
    base: Count
    ts: Millis | None
    age: Millis | None

    @model_validator(mode="after")
    def _base_not_above_seq(self):
        if self.base > self.seq:
            raise ValueError("base is above seq")
        return self


class CordPulled(_EventBase):
    kind: Literal["cord_pulled"]
    input: Name


class CordReset(_EventBase):
    kind: Literal["cord_reset"]
    input: Name


class Call(_EventBase):
    kind: Literal["call"]
    input: Name
    reason: CallReason


class AckPressed(_EventBase):
    kind: Literal["ack"]
    input: Name


class Cycle(_EventBase):
    kind: Literal["cycle"]
    input: Name


class Scan(_EventBase):
    kind: Literal["scan"]
    reader: Name
    role: Literal["post", "receive", "badge"]
    uid: Uid


class InputFault(_EventBase):
    kind: Literal["input_fault"]
    input: Name  # a supervised input's name, or an RFID reader's
    fault: Literal["open", "short", "reader", "clear"]  # reader: it does not answer sanely


Event = Annotated[
    CordPulled | CordReset | Call | AckPressed | Cycle | Scan | InputFault,
    Field(discriminator="kind"),
]
_EVENT = TypeAdapter(Event)


class Birth(_Strict):
    board: Name
    boot: Count
    online: Literal[True]
    fw: Annotated[str, Field(max_length=32)]
    reset_cause: Signed
    outbox: Small
    outbox_cap: Annotated[int, Field(ge=1, le=OUTBOX_CAP_MAX, strict=True)]
    outbox_near_full: bool
    # why the previous boot ended, when it ended in a firmware fault (firmware/lib/andon/fault.py)
    last_error: Annotated[str, Field(max_length=160)] | None = None


class Will(_Strict):
    board: Name
    boot: Count
    online: Literal[False]


_STATUS = TypeAdapter(Annotated[Birth | Will, Field(discriminator="online")])


class Telemetry(_Strict):
    board: Name
    boot: Count
    uptime_s: Small
    heap_free: Small
    outbox: Small
    reconnects: Small
    rssi: Signed | None


@lru_cache(maxsize=8192)  # a plant's boards use a few thousand topics, again and again
def parse_topic(topic: str) -> tuple[Station, str]:
    m = _TOPIC_RE.match(topic)
    if not m:
        raise Rejected("topic", f"not a board topic: {topic!r}")
    return Station(m["site"], m["line"], m["station"]), m["leaf"]


class EventsLost(_Strict):
    """The gateway's own log record (leaf "gateway"): a board's events it declared lost, seq
    `first`..`last` (docs/protocol.md, Order). Applied like an event, so a replay raises the
    same alert."""

    board: Name
    first: Count
    last: Count


def gateway_record(payload: str) -> EventsLost:
    return EventsLost.model_validate_json(payload)


class Operator(_Strict):
    """A person's action from the console, logged (leaf "operator") and applied like a board's
    event, so a replay reproduces it. `by` names who (the API token's name or a person)."""

    action: Literal["acknowledge", "resolve", "annotate", "card_lost", "card_found", "resync"]
    by: Annotated[str, Field(min_length=1, max_length=64)]
    call: Annotated[str, Field(pattern=r"^C-[A-Za-z0-9_-]{1,32}-[0-9]{6,12}$")] | None = None
    card: Uid | None = None
    board: Name | None = None  # resync: the board whose numbering the gateway takes afresh
    reason: Name | None = None  # a reason code of the plant file
    comment: Annotated[str, Field(max_length=500)] | None = None


def _validate(adapter: TypeAdapter, payload: bytes):
    """Size, JSON and fields in one pass: pydantic parses the bytes itself (no json.loads)."""
    if len(payload) > MAX_PAYLOAD:
        raise Rejected("size", f"{len(payload)} bytes, the limit is {MAX_PAYLOAD}")
    try:
        return adapter.validate_json(payload)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if errors[0]["type"] == "json_invalid":
            raise Rejected("json", errors[0]["msg"]) from None
        errs = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in errors
        )
        raise Rejected("schema", errs) from None


UplinkMessage = Event | Birth | Will | Telemetry
_UPLINK = {"evt": _EVENT, "status": _STATUS, "telemetry": TypeAdapter(Telemetry)}


def decode_uplink(topic: str, payload: bytes) -> tuple[Station, UplinkMessage]:
    """Validate a board's message: its topic, size, JSON and fields. Raises `Rejected`."""
    station, leaf = parse_topic(topic)
    return station, _validate(_UPLINK[leaf], payload)


def dating(ts: int | None, age: int | None, received: int) -> tuple[int, bool]:
    """When an event happened, and whether its own date was refused: `ts`, else `received -
    age`, else `received`. A date outside the window (TS_AHEAD_MS ahead of `received`,
    TS_BEHIND_MS behind it: a clock in seconds, unset or wrong) is replaced by `received` and
    flagged, so no call is dated 1970 or next year. Never after `received`."""
    if ts is None and age is None:
        return received, False
    at = ts if ts is not None else received - age
    if not received - TS_BEHIND_MS <= at <= received + TS_AHEAD_MS:
        return received, True
    return min(at, received), False


def _dump(obj: dict) -> bytes:
    # pydantic's encoder, compact and UTF-8: several messages an event, 7 times faster than json
    return pydantic_core.to_json(obj)


def station_state(
    state: StationStateName, call: CallCause | None, since: int, material: bool
) -> bytes:
    return _dump({"state": state, "call": call, "since": since, "material": material})


def line_state(state: LineStateName, stopped: list[str], called: list[str], since: int) -> bytes:
    return _dump({"state": state, "stopped": stopped, "called": called, "since": since})


def ack(board: str, boot: int, seq: int) -> bytes:
    return _dump({"board": board, "boot": boot, "seq": seq})


def gateway_birth(since: int) -> bytes:
    return _dump({"online": True, "since": since})


GATEWAY_WILL = _dump({"online": False})


def line_owner(gateway: str, epoch: int, since: int) -> bytes:
    return _dump({"gateway": gateway, "epoch": epoch, "since": since})


@dataclass(frozen=True)
class Presence:
    """Where a gateway says it is alive (docs/protocol.md, Gateway status). `name`: one of
    several gateways that own lines through leases (PostgreSQL), which has a status topic of
    its own and names itself on the owner topic of each line it takes; None: the plant's one
    gateway, on the one topic that every board follows unless its line has an owner."""

    site: str
    name: str | None

    @property
    def status_topic(self) -> str:
        """Its birth's and its Will's (a connection has one Will)."""
        return GATEWAY_STATUS if self.name is None else f"{ROOT}/gateway/{self.name}/status"

    def birth_topics(self, reconnected: bool) -> tuple[str, ...]:
        """Where a birth goes: the plant's one topic every time, a takeover's birth included
        (older firmware, and boards of a line that has no owner topic yet, follow that one);
        the status topic of one of several when it has (re)connected, before that one (the
        boards that follow it resend then, and not at each line it takes)."""
        if self.name is None or not reconnected:
            return (GATEWAY_STATUS,)
        return (self.status_topic, GATEWAY_STATUS)

    def owners(self, epochs: dict[str, int], since: int) -> list[tuple[str, bytes]]:
        """The retained owner topic of each of these lines, taken at `since` under its epoch
        (line -> epoch); none for the plant's one gateway."""
        if self.name is None:
            return []
        return [
            (line_owner_topic(self.site, line), line_owner(self.name, epoch, since))
            for line, epoch in sorted(epochs.items())
        ]


def encode(obj: dict) -> bytes:
    """Replenishment triggers and alerts: plain JSON objects as the core built them."""
    return _dump(obj)
