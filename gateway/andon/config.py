"""The plant configuration: one TOML file, validated on load (see examples/plant.toml).

`load_plant(path)` returns a frozen `PlantConfig` or raises `ConfigError` whose message names
the file, the key path and what is wrong, e.g.
`plant.toml: lines[0].stations[2].board: String should match pattern ...`.
Besides the schema it cross-checks what one section says about another: kanban loops name
existing stations that have the right reader, board ids, station ids, card and badge UIDs are
unique, and no tag is both a card and a badge.

Relative paths (`gateway.database`) are taken relative to the configuration file's directory,
so the gateway behaves the same whatever directory it is started from.
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from collections.abc import Iterator
from datetime import date, time
from pathlib import Path
from typing import Annotated, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from andon.contract import Name, Uid

ReaderRole = Literal["post", "receive", "badge"]
Seconds = Annotated[int, Field(ge=1)]
_DAY_S = 86_400


class ConfigError(ValueError):
    """The plant configuration cannot be used; the message says where and why."""


class _CrossCheckFailed(ValueError):
    """Sections that disagree with each other; each problem names its own key path."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{loc}: {msg}" for loc, msg in problems))
        self.problems = problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(_Section):
    """The gateway's read-only HTTP API (andon.runtime.api): off unless configured."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8088


class GatewaySettings(_Section):
    database: Path = Path("var/andon.db")
    offline_stops_line: bool = False  # an offline board stops its line (else: amber alert only)
    client_id: Name = "andon-gateway"
    http: HttpSettings | None = None
    # Several gateways on one PostgreSQL store: this one's name (`andon gateway --name`), and
    # how long a line stays its own without a renewal: a dead gateway's lines are taken over
    # after at most this long.
    name: Name | None = None
    lease_s: Annotated[float, Field(gt=0)] = 3.0
    # A board's events wait behind a gap in its seq this long for the missing ones, then the
    # gap is declared lost (an events_lost alert) and they apply (docs/protocol.md).
    gap_timeout_s: Seconds = 30
    # Dead letters (rejected messages) kept: the newest rows, none older than the age.
    dead_letters_max: Seconds = 10_000
    dead_letters_max_age_s: Seconds = 7 * 86_400
    # A flood of rejections logs one line per reason per interval, with its count.
    rejections_log_interval_s: Seconds = 60
    # /api/v1/health answers 503 when the worker has not finished a batch for this long while
    # messages wait for it.
    stall_s: Seconds = 30


class StoreSettings(_Section):
    """The SQLite file `[gateway] database` (the default: one gateway), or a PostgreSQL that
    several gateways share, splitting the lines among them."""

    url: Annotated[str, Field(pattern=r"^postgres(ql)?://")] | None = None


class BrokerSettings(_Section):
    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    keepalive: Seconds = 30


def _http_url(text: str) -> str:
    _URL.validate_python(text)
    return text


_URL = TypeAdapter(AnyHttpUrl)
HttpUrl = Annotated[str, AfterValidator(_http_url)]  # checked as a URL, kept as written


class Tier(_Section):
    """One escalation step: alert `to` once a call has been unacknowledged (or, with
    `on = "unresolved"`, open) for `after_s` since it was opened."""

    after_s: Seconds
    to: Annotated[str, Field(min_length=1)]  # the role (or person) alerted
    on: Literal["unacknowledged", "unresolved"] = "unacknowledged"
    causes: list[Name] | None = None  # only calls of these causes (default: every cause)


class EscalationPolicy(_Section):
    tiers: list[Tier] = [
        Tier(after_s=60, to="team_leader"),
        Tier(after_s=180, to="supervisor"),
        Tier(after_s=600, to="manager"),
        Tier(after_s=900, to="manager", on="unresolved"),
    ]
    webhook: HttpUrl | None = None  # shorthand: a destination that escalation alerts go to
    webhook_retries: Annotated[int, Field(ge=0)] = 3  # for every webhook destination

    @field_validator("tiers")
    @classmethod
    def _tiers_ascend(cls, tiers: list[Tier]) -> list[Tier]:
        for on in ("unacknowledged", "unresolved"):
            afters = [t.after_s for t in tiers if t.on == on]
            if afters != sorted(set(afters)):
                raise ValueError(f'"{on}" tiers must have strictly increasing after_s')
        return tiers


BUILTIN_CAUSES = ("cord", "quality", "maintenance", "material")
_LEADERS = ["team_leader", "supervisor", "manager"]


class StopAfter(_Section):
    after_s: Annotated[int, Field(ge=0)]  # 0: the call stops the line at once


class Cause(_Section):
    """What a call of this cause does (docs/rules.md).

    `stop`: "fixed_position" stops the line at the line's fixed position (the end of the takt
    cycle, or the line's `stop.seconds`) if the call is still open then; `{ after_s = N }` N s
    after it was opened; "never": it only calls (and escalates). `severity` orders concurrent
    calls (the most severe is shown). `acknowledge` and `resolve` list the badge roles allowed
    to do so ("*": any badge); a cord call is resolved only by resetting every cord."""

    stop: Literal["fixed_position", "never"] | StopAfter = "fixed_position"
    severity: Annotated[int, Field(ge=1, le=1000)] = 50
    acknowledge: list[str] = _LEADERS
    resolve: list[str] = _LEADERS

    def may(self, step: str, role: str) -> bool:
        roles = self.acknowledge if step == "acknowledge" else self.resolve
        return "*" in roles or role in roles


DEFAULT_CAUSES = {
    "cord": Cause(
        severity=100,
        acknowledge=[*_LEADERS, "maintenance", "quality", "logistics"],
        resolve=[],
    ),
    "quality": Cause(
        severity=80, acknowledge=[*_LEADERS, "quality"], resolve=[*_LEADERS, "quality"]
    ),
    "maintenance": Cause(
        stop="never",
        severity=60,
        acknowledge=[*_LEADERS, "maintenance"],
        resolve=[*_LEADERS, "maintenance"],
    ),
    "material": Cause(
        stop="never",
        severity=40,
        acknowledge=[*_LEADERS, "logistics"],
        resolve=[*_LEADERS, "logistics"],
    ),
}


def merged_causes(given: dict[str, Cause]) -> dict[str, Cause]:
    """The built-in causes with what the plant file sets for them, and the causes it adds."""
    causes = dict(DEFAULT_CAUSES)
    for name, cause in given.items():
        base = causes.get(name, Cause())
        causes[name] = base.model_copy(
            update={f: getattr(cause, f) for f in cause.model_fields_set}
        )
    return causes


class Destination(_Section):
    """Where alerts are sent besides MQTT: a webhook POSTed with retries."""

    webhook: HttpUrl


ALERT_KINDS = (
    "escalation",
    "station_offline",
    "station_online",
    "input_fault",
    "unknown_tag",
    "badge_denied",
    "overdue_card",
    "lost_card",
    "outbox_near_full",
    "events_lost",
    "board_fault",
)


class AlertSettings(_Section):
    """Every alert is published on MQTT, kept open in the plant (status, API, board) until
    its condition clears, and POSTed to the destinations its kind is routed to."""

    destinations: dict[Name, Destination] = {}
    routes: dict[str, list[Name]] = {}  # alert kind -> destination names
    notices: list[Name] = []  # call opened / acknowledged / resolved notices go here
    keep_open_s: Seconds = 3600  # alerts with no condition to clear (unknown tag...) close then

    @field_validator("routes")
    @classmethod
    def _known_kinds(cls, routes: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = sorted(set(routes) - set(ALERT_KINDS))
        if unknown:
            raise ValueError(f"unknown alert kind(s) {unknown}; kinds are {list(ALERT_KINDS)}")
        return routes

    @model_validator(mode="after")
    def _known_destinations(self) -> AlertSettings:
        named = [d for ds in self.routes.values() for d in ds] + self.notices
        unknown = sorted(set(named) - set(self.destinations))
        if unknown:
            raise ValueError(f"unknown destination(s) {unknown}: add [alerts.destinations.NAME]")
        return self


class KanbanPolicy(_Section):
    overdue_factor: Annotated[float, Field(ge=1.0)] = 1.5  # overdue after lead_time * factor
    lost_after_s: Seconds = 7 * _DAY_S  # a card not scanned for this long is reported lost
    safety_factor: Annotated[float, Field(ge=0.0)] = 0.2  # 0 = just in time; more = just in case
    demand_window_s: Seconds = 7 * _DAY_S  # measured demand counts orders over this window


class StopAfterSeconds(_Section):
    """Fixed-position stop: a call not resolved this long after it was opened stops the line.

    0 stops the line the moment the call is made (jidoka without a fixed position)."""

    mode: Literal["seconds"]
    seconds: Annotated[int, Field(ge=0)] = 60


class StopAtTaktEnd(_Section):
    """Fixed-position stop at the end of the takt cycle in which the call was opened."""

    mode: Literal["takt"]


StopPolicy = Annotated[StopAfterSeconds | StopAtTaktEnd, Field(discriminator="mode")]


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)  # in date.weekday() order


class Break(_Section):
    """A break inside a shift, in local wall-clock time: not working time (docs/calendar.md)."""

    start: time
    end: time


class Demand(_Section):
    """Units the line must make per shift, per day or per (Monday-to-Sunday) week."""

    units: Annotated[int, Field(ge=1)]
    per: Literal["shift", "day", "week"]


class Shift(_Section):
    """A shift, run on its `days` (Monday to Friday unless given) except on holidays.

    An occurrence belongs to the local date it starts on; working time is its length on the
    clock (DST-aware) minus its breaks. `demand` is units per occurrence, unless the line gives
    its demand per day or week instead (docs/calendar.md)."""

    name: Name
    start: time  # local wall-clock time (the site's timezone); end before start crosses midnight
    end: time
    days: Annotated[list[Weekday], Field(min_length=1)] = list(WEEKDAYS[:5])
    breaks: list[Break] = []
    demand: Annotated[int, Field(ge=1)] | None = None

    @property
    def length_s(self) -> int:
        """From start to end on the clock; equal times mean a 24-hour shift."""
        length = (clock_s(self.end) - clock_s(self.start)) % _DAY_S
        return length or _DAY_S

    @property
    def break_offsets(self) -> list[tuple[int, int]]:
        """Each break as (start, end) clock seconds after the shift's start, in config order."""
        offsets = []
        for pause in self.breaks:
            begin = (clock_s(pause.start) - clock_s(self.start)) % _DAY_S
            offsets.append((begin, begin + (clock_s(pause.end) - clock_s(pause.start)) % _DAY_S))
        return offsets

    @property
    def working_s(self) -> int:
        """Working time on a day without a clock change: the length minus the breaks."""
        return self.length_s - sum(end - begin for begin, end in self.break_offsets)

    @field_validator("days")
    @classmethod
    def _days_once(cls, days: list[Weekday]) -> list[Weekday]:
        if len(set(days)) != len(days):
            raise ValueError("a day is listed twice")
        return days

    @model_validator(mode="after")
    def _breaks_fit(self) -> Shift:
        offsets = self.break_offsets
        for i, (pause, (begin, end)) in enumerate(zip(self.breaks, offsets, strict=True)):
            if end == begin or end > self.length_s:
                raise ValueError(
                    f"breaks[{i}] {pause.start:%H:%M}-{pause.end:%H:%M} is not inside the shift "
                    f"{self.start:%H:%M}-{self.end:%H:%M}"
                )
            for j, (other_begin, other_end) in enumerate(offsets[:i]):
                if begin < other_end and other_begin < end:
                    raise ValueError(f"breaks[{i}] overlaps breaks[{j}]")
        if self.working_s == 0:
            raise ValueError("the breaks leave no working time")
        if self.demand is not None and self.demand > self.working_s:
            raise ValueError(f"demand {self.demand} leaves a takt under 1 s of {self.working_s} s")
        return self


def clock_s(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


class StationConfig(_Section):
    id: Name
    name: Annotated[str, Field(min_length=1)]
    board: Name  # the board configured here; events from any other board are spoofs
    profile: Name  # hardware profile (hardware/profiles/) the board is provisioned from
    readers: list[ReaderRole] = []  # RFID reader roles at this station


class LineConfig(_Section):
    id: Name
    name: Annotated[str, Field(min_length=1)]
    stop: StopPolicy = StopAfterSeconds(mode="seconds")
    shifts: list[Shift] = []
    demand: Demand | None = None  # for every shift, instead of each shift's own `demand`
    holidays: list[date] = []  # no shift of the line starts on these dates (plus the plant's)
    stations: Annotated[list[StationConfig], Field(min_length=1)]

    _plant_holidays: frozenset[date] = PrivateAttr(default_factory=frozenset)

    @model_validator(mode="after")
    def _takt_needs_shifts(self) -> LineConfig:
        if self.stop.mode == "takt" and not self.shifts:
            raise ValueError('stop mode "takt" needs at least one [[lines.shifts]]')
        return self

    @model_validator(mode="after")
    def _one_demand_per_shift(self) -> LineConfig:
        for i, shift in enumerate(self.shifts):
            if shift.demand is not None and self.demand is not None:
                raise ValueError(f"shifts[{i}].demand: the line's demand already covers it")
            if shift.demand is None and self.demand is None:
                raise ValueError(f"shifts[{i}] has no demand: set shifts[{i}].demand or demand")
        if self.demand is not None and not self.shifts:
            raise ValueError("demand needs at least one [[lines.shifts]]")
        if self.demand is not None and self.demand.units > self._shortest_period_s(self.demand):
            raise ValueError(f"demand.units {self.demand.units} leaves a takt under 1 s")
        return self

    def _shortest_period_s(self, demand: Demand) -> int:
        """Working time of the shortest demand period on days without a clock change."""
        if demand.per == "week":
            return sum(shift.working_s * len(shift.days) for shift in self.shifts)
        if demand.per == "day":
            daily = [sum(s.working_s for s in self.shifts if day in s.days) for day in WEEKDAYS]
            return min(seconds for seconds in daily if seconds)
        return min(shift.working_s for shift in self.shifts)

    @property
    def days_off(self) -> frozenset[date]:
        """The line's holidays and the plant's (set when the plant is validated)."""
        return self._plant_holidays.union(self.holidays)

    def station(self, station_id: str) -> StationConfig | None:
        return next((s for s in self.stations if s.id == station_id), None)


class StationRef(_Section):
    line: Name
    station: Name

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, value: object) -> object:
        """Accept "L1/S07" as well as {line = "L1", station = "S07"}."""
        if isinstance(value, str):
            line, sep, station = value.partition("/")
            if not sep:
                raise ValueError('expected "LINE/STATION"')
            return {"line": line, "station": station}
        return value

    def __str__(self) -> str:
        return f"{self.line}/{self.station}"


class KanbanLoop(_Section):
    part: Name  # also a topic level: andon/v1/{site}/kanban/{part}/replenish
    description: str = ""
    bin_qty: Annotated[int, Field(ge=1)]
    cards: Annotated[list[Uid], Field(min_length=1)]
    supplier: Annotated[str, Field(min_length=1)]
    lead_time_s: Seconds
    post: StationRef  # where an empty bin's card is posted (a reader with role "post")
    receive: StationRef  # where the full bin is received (a reader with role "receive")
    # Card sizing (docs/rules.md): from the measured demand, or from this planned one.
    demand: Literal["measured", "planned"] = "measured"
    planned_bins_per_day: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _planned_needs_figure(self) -> KanbanLoop:
        if self.demand == "planned" and self.planned_bins_per_day is None:
            raise ValueError('demand = "planned" needs planned_bins_per_day')
        return self


class Badge(_Section):
    uid: Uid
    person: Annotated[str, Field(min_length=1)]
    role: Annotated[str, Field(min_length=1)]


Role = Literal["viewer", "supervisor", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "supervisor", "admin")  # each may do what those before may
TOKEN_MIN_LENGTH = 16
TokenHash = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]


def hash_token(token: str) -> str:
    """What the plant file keeps of an API token. Tokens are long random strings, so a plain
    SHA-256 cannot be reversed by guessing; a stolen plant file then lets no one in."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


class ApiToken(_Section):
    """An HTTP API token, kept as its hash (`andon token new` prints an entry to paste).

    viewer: the board and read-only routes; supervisor: also the console's actions;
    admin: everything."""

    name: Name
    role: Role = "viewer"
    hash: TokenHash

    @model_validator(mode="before")
    @classmethod
    def _no_plain_token(cls, value: object) -> object:
        if isinstance(value, dict) and "token" in value:
            raise ValueError(
                "plain tokens are not kept in the plant file: run `andon token hash` (or "
                '`andon token new`) and write the `hash = "sha256:..."` it prints instead'
            )
        return value

    def allows(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


class PlantConfig(_Section):
    site: Name
    timezone: str = "UTC"  # IANA name; shift times are wall-clock times there
    holidays: list[date] = []  # no shift of any line starts on these dates
    gateway: GatewaySettings = GatewaySettings()
    broker: BrokerSettings = BrokerSettings()
    store: StoreSettings = StoreSettings()
    escalation: EscalationPolicy = EscalationPolicy()
    causes: dict[Name, Cause] = {}  # merged over DEFAULT_CAUSES: see `cause()`
    reason_codes: dict[Name, str] = {}  # code -> label, for the console's call annotations
    alerts: AlertSettings = AlertSettings()
    kanban_policy: KanbanPolicy = KanbanPolicy()
    lines: Annotated[list[LineConfig], Field(min_length=1)]
    kanban: list[KanbanLoop] = []
    badges: list[Badge] = []
    api_tokens: list[ApiToken] = []

    _by_board: dict[str, tuple[str, str]] = PrivateAttr(default_factory=dict)
    _by_card: dict[str, KanbanLoop] = PrivateAttr(default_factory=dict)
    _by_badge: dict[str, Badge] = PrivateAttr(default_factory=dict)
    _by_line: dict[str, LineConfig] = PrivateAttr(default_factory=dict)
    _causes: dict[str, Cause] = PrivateAttr(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {name!r}") from None
        return name

    @model_validator(mode="after")
    def _cross_check(self) -> PlantConfig:
        problems = _cross_problems(self)
        if problems:
            raise _CrossCheckFailed(problems)
        return self

    def model_post_init(self, _context: object) -> None:
        self._by_line = {line.id: line for line in self.lines}
        for line in self.lines:
            line._plant_holidays = frozenset(self.holidays)
        self._by_board = {s.board: (line.id, s.id) for line, s in self.stations()}
        self._by_card = {uid: loop for loop in self.kanban for uid in loop.cards}
        self._by_badge = {b.uid: b for b in self.badges}
        self._causes = merged_causes(self.causes)

    def only_lines(self, line_ids: set[str]) -> PlantConfig:
        """The plant as one gateway of several sees it: these lines, and the kanban loops that
        post and receive on them."""
        lines = [line for line in self.lines if line.id in line_ids]
        loops = [k for k in self.kanban if {k.post.line, k.receive.line} <= line_ids]
        part = self.model_copy(update={"lines": lines, "kanban": loops})
        part.model_post_init(None)
        return part

    def line_groups(self) -> list[list[str]]:
        """The lines one gateway of several must own together: those a kanban loop links (its
        post and receive stations), transitively. Each group in the plant file's order of
        its lines, the groups in the order of their first line."""
        group_of = {line.id: [line.id] for line in self.lines}
        for loop in self.kanban:
            post, receive = group_of[loop.post.line], group_of[loop.receive.line]
            if post is not receive:
                post.extend(receive)
                for line_id in receive:
                    group_of[line_id] = post
        order = {line.id: i for i, line in enumerate(self.lines)}
        groups = {id(g): sorted(g, key=order.__getitem__) for g in group_of.values()}
        return sorted(groups.values(), key=lambda g: order[g[0]])

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def stations(self) -> Iterator[tuple[LineConfig, StationConfig]]:
        for line in self.lines:
            for station in line.stations:
                yield line, station

    def line(self, line_id: str) -> LineConfig | None:
        return self._by_line.get(line_id)

    def station(self, line_id: str, station_id: str) -> StationConfig | None:
        line = self._by_line.get(line_id)
        return line.station(station_id) if line else None

    def station_of_board(self, board: str) -> tuple[str, str] | None:
        """(line id, station id) where this board is configured, or None for a stranger."""
        return self._by_board.get(board)

    def loop_of_card(self, uid: str) -> KanbanLoop | None:
        return self._by_card.get(uid)

    def badge(self, uid: str) -> Badge | None:
        return self._by_badge.get(uid)

    def cause(self, name: str) -> Cause | None:
        """A call cause: the built-in ones (DEFAULT_CAUSES) as the plant file amends them."""
        return self._causes.get(name)

    @property
    def cause_names(self) -> list[str]:
        return list(self._causes)

    def webhooks_for(self, kind: str) -> tuple[str, ...]:
        """The webhook URLs an alert (or a call's notice, `call_*`) of this kind is POSTed to."""
        if kind.startswith("call_"):
            return self.notice_webhooks
        names = list(self.alerts.routes.get(kind, []))
        urls = [self.alerts.destinations[n].webhook for n in names]
        if kind == "escalation" and self.escalation.webhook:
            urls.append(self.escalation.webhook)
        return tuple(dict.fromkeys(urls))

    @property
    def notice_webhooks(self) -> tuple[str, ...]:
        return tuple(self.alerts.destinations[n].webhook for n in self.alerts.notices)

    def api_token(self, token: str) -> ApiToken | None:
        """The API token entry whose hash matches, or None (compared in constant time)."""
        given = hash_token(token).encode()
        matches = [t for t in self.api_tokens if hmac.compare_digest(t.hash.encode(), given)]
        return matches[0] if matches else None


def _duplicates(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(loc, value) pairs whose value already appeared: the later ones, as problems."""
    seen: dict[str, str] = {}
    problems = []
    for loc, value in items:
        if value in seen:
            problems.append((loc, f"{value!r} is already used at {seen[value]}"))
        else:
            seen[value] = loc
    return problems


def _keys(prefix: str, items: list, attr: str) -> list[tuple[str, str]]:
    return [(f"{prefix}[{i}].{attr}", getattr(item, attr)) for i, item in enumerate(items)]


def _cross_problems(plant: PlantConfig) -> list[tuple[str, str]]:
    stations = [(f"lines[{i}].stations", line.stations) for i, line in enumerate(plant.lines)]
    boards = [key for prefix, items in stations for key in _keys(prefix, items, "board")]
    cards = [(f"kanban[{i}].cards", uid) for i, k in enumerate(plant.kanban) for uid in k.cards]
    must_be_unique = [
        _keys("lines", plant.lines, "id"),
        *(_keys(prefix, items, "id") for prefix, items in stations),
        boards,
        _keys("kanban", plant.kanban, "part"),
        cards,
        _keys("badges", plant.badges, "uid"),
        _keys("api_tokens", plant.api_tokens, "name"),
    ]
    problems = [problem for keys in must_be_unique for problem in _duplicates(keys)]
    card_uids = {uid for _, uid in cards}
    problems += [
        (loc, f"{uid!r} is also a kanban card")
        for loc, uid in _keys("badges", plant.badges, "uid")
        if uid in card_uids
    ]
    if plant.gateway.http is not None and not plant.api_tokens:
        problems.append(("gateway.http", "the HTTP API needs at least one [[api_tokens]] entry"))
    causes = merged_causes(plant.causes)
    if causes["cord"].resolve:
        problems.append(("causes.cord.resolve", "a cord call is resolved only by its reset"))
    for i, tier in enumerate(plant.escalation.tiers):
        unknown = sorted(set(tier.causes or []) - set(causes))
        if unknown:
            problems.append((f"escalation.tiers[{i}].causes", f"unknown cause(s) {unknown}"))
    lines = {line.id: line for line in plant.lines}
    for i, loop in enumerate(plant.kanban):
        for role in ("post", "receive"):
            problems += _reader_problems(lines, f"kanban[{i}].{role}", getattr(loop, role), role)
    return problems


def _reader_problems(
    lines: dict[str, LineConfig], loc: str, ref: StationRef, role: str
) -> list[tuple[str, str]]:
    line = lines.get(ref.line)
    station = line.station(ref.station) if line else None
    if station is None:
        return [(loc, f"no station {ref}")]
    if role not in station.readers:
        return [(loc, f"station {ref} has no {role!r} reader")]
    return []


def _loc(parts: tuple[int | str, ...]) -> str:
    """('lines', 0, 'stations', 2, 'board') -> 'lines[0].stations[2].board'."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(top level)"


def load_plant(path: str | Path) -> PlantConfig:
    """Read and validate the plant configuration. Raises `ConfigError`."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        plant = PlantConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_describe(path, e) for e in exc.errors())) from None
    database = plant.gateway.database
    if not database.is_absolute():
        gateway = plant.gateway.model_copy(update={"database": path.parent / database})
        plant = plant.model_copy(update={"gateway": gateway})
        plant.model_post_init(None)
    return plant


def _describe(path: Path, error: dict) -> str:
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, _CrossCheckFailed):
        return "\n".join(f"{path}: {loc}: {msg}" for loc, msg in cause.problems)
    msg = error["msg"].removeprefix("Value error, ")
    return f"{path}: {_loc(error['loc'])}: {msg}"
