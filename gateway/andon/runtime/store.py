"""The gateway's storage: an append-only event log, projections and an outbox, in SQLite.

One writer (the gateway's worker thread) runs one transaction per batch of messages: the new
log entries, the boards' progress, the dead letters, the effects that must reach someone and
the calls and orders as records all commit together, so the broker is acknowledged only for what is
durably stored. The `Store` protocol is what the gateway needs; a PostgreSQL backend for
several gateways implements the same.

WAL with `synchronous=FULL`: each commit is fsynced before it returns. NORMAL would be faster
but can lose the last commits on a power cut, after the broker and the boards were already
told they were stored: the end-to-end acknowledgement would then lie.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import pydantic_core

if TYPE_CHECKING:
    from andon.config import PlantConfig

_CALL_COLUMNS = (
    ", ".join(
        f"json_extract(new.data, '$.{c}')"
        for c in ("id", "line", "station", "cause", "opened", "acknowledged", "stopped", "resolved")
    )
    + ", json_extract(new.data, '$.reason')"
)
# Delete and insert: a trigger's OR REPLACE would yield to the record upsert's conflict rule.
_CALL_FACT = (
    f"DELETE FROM call_fact WHERE id = new.id; INSERT INTO call_fact SELECT {_CALL_COLUMNS};"
)

T = TypeVar("T")

# Each step takes the schema from version i to i+1; a database records how many it has run.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE log (
        pos      INTEGER PRIMARY KEY,  -- the log position projections refer to
        received INTEGER NOT NULL,     -- gateway clock, ms since the epoch, never decreasing
        line     TEXT NOT NULL,
        station  TEXT NOT NULL,
        board    TEXT NOT NULL,
        boot     INTEGER NOT NULL,
        seq      INTEGER,              -- NULL for presence (birth and Will)
        leaf     TEXT NOT NULL,        -- the uplink topic's leaf: evt | status
        kind     TEXT NOT NULL,        -- the event's kind, or birth | will
        at       INTEGER NOT NULL,     -- when it happened (ts, or dated from its age)
        message  TEXT NOT NULL         -- the validated message as JSON
    );
    -- An event's identity. The key orders seq before boot so that progress (which follows
    -- seq, monotonic across boots) looks up (board, seq) on this very index.
    CREATE UNIQUE INDEX log_event ON log (board, seq, boot) WHERE seq IS NOT NULL;
    CREATE INDEX log_received ON log (received);
    CREATE TABLE progress (        -- highest contiguous seq durably stored, per board
        board TEXT PRIMARY KEY, boot INTEGER NOT NULL, seq INTEGER NOT NULL
    );
    CREATE TABLE presence (        -- the last logged (boot, online) per board: a repeat is no news
        board TEXT PRIMARY KEY, boot INTEGER NOT NULL, online INTEGER NOT NULL
    );
    CREATE TABLE dead_letter (
        id INTEGER PRIMARY KEY, received INTEGER NOT NULL, topic TEXT NOT NULL,
        payload BLOB NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL
    );
    CREATE TABLE telemetry (       -- latest health per board, not part of the log
        board TEXT PRIMARY KEY, line TEXT NOT NULL, station TEXT NOT NULL,
        received INTEGER NOT NULL, message TEXT NOT NULL
    );
    CREATE TABLE projection (      -- the core's snapshot and the log position it reflects
        id INTEGER PRIMARY KEY CHECK (id = 1), pos INTEGER NOT NULL, clock INTEGER NOT NULL,
        snapshot TEXT NOT NULL
    );
    CREATE TABLE clock (           -- the gateway clock at the last commit (timers included)
        id INTEGER PRIMARY KEY CHECK (id = 1), now INTEGER NOT NULL
    );
    INSERT INTO clock VALUES (1, 0);
    CREATE TABLE outbox (          -- triggers and alerts, kept until the broker has them
        id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,
        created INTEGER NOT NULL, sent INTEGER
    );
    CREATE INDEX outbox_unsent ON outbox (id) WHERE sent IS NULL;
    CREATE TABLE record (          -- calls and kanban orders as the core last emitted them
        kind TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (kind, id)
    );
    """,
    """
    -- The outbox also holds webhook deliveries: `topic` is then the URL they are POSTed to.
    ALTER TABLE outbox ADD COLUMN channel TEXT NOT NULL DEFAULT 'mqtt';  -- mqtt | webhook
    ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN failed INTEGER;  -- when it was given up
    DROP INDEX outbox_unsent;
    CREATE INDEX outbox_pending ON outbox (channel, id) WHERE sent IS NULL AND failed IS NULL;
    """,
    f"""
    -- The calls' times as plain indexed columns, kept by triggers as the record table is
    -- written: the reports (andon.runtime.reports) read a year of calls without parsing JSON.
    CREATE TABLE call_fact (
        id TEXT PRIMARY KEY, line TEXT, station TEXT, cause TEXT,
        opened INTEGER, acknowledged INTEGER, stopped INTEGER, resolved INTEGER,
        reason TEXT
    );
    CREATE INDEX call_fact_opened ON call_fact (opened);
    CREATE INDEX call_fact_stopped ON call_fact (line, stopped) WHERE stopped IS NOT NULL;
    CREATE TRIGGER record_call_insert AFTER INSERT ON record WHEN new.kind = 'call'
    BEGIN {_CALL_FACT} END;
    CREATE TRIGGER record_call_update AFTER UPDATE ON record WHEN new.kind = 'call'
    BEGIN {_CALL_FACT} END;
    INSERT INTO call_fact SELECT {_CALL_COLUMNS.replace("new.data", "data")}
        FROM record WHERE kind = 'call';
    """,
    """
    -- An event dated by its receipt because its own ts (or age) was out of the window.
    ALTER TABLE log ADD COLUMN flags INTEGER NOT NULL DEFAULT 0;  -- 1: FLAG_REDATED
    -- Events that arrived after a gap in their board's seq: stored, waiting to be logged and
    -- applied in seq order (the log's order is the order of application).
    CREATE TABLE held (
        board TEXT NOT NULL, seq INTEGER NOT NULL, entry TEXT NOT NULL,  -- the Entry as JSON
        PRIMARY KEY (board, seq)
    );
    -- Dead letters keep the first KiB of a payload, with its size and digest.
    ALTER TABLE dead_letter ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE dead_letter ADD COLUMN sha256 TEXT NOT NULL DEFAULT '';
    CREATE INDEX dead_letter_received ON dead_letter (received);
    -- Gaps the earlier gateway applied past count as done: progress is the highest logged seq.
    UPDATE progress SET
        seq = (SELECT max(seq) FROM log WHERE board = progress.board AND seq IS NOT NULL),
        boot = (SELECT boot FROM log WHERE board = progress.board AND seq IS NOT NULL
                ORDER BY seq DESC LIMIT 1)
    WHERE seq < (SELECT max(seq) FROM log WHERE board = progress.board AND seq IS NOT NULL);
    """,
]
FLAG_REDATED = 1  # log.flags: the board's ts (or age) was outside the window, see contract.dating
DEAD_LETTER_KEEP = 1024  # bytes of a rejected payload kept; its size and sha256 say the rest
DEFAULT_OUTBOX_CAP = 400  # a board's outbox capacity until its birth tells (the firmware's)
OPERATOR = "operator"  # the log leaf of an operator's action (the console), beside evt | status
GAP = "events_lost"  # the kind of a gap record: a board's events declared lost (leaf "gateway")


class Fenced(RuntimeError):
    """The commit was refused: a line this gateway wrote for is owned by another now."""


@dataclass(frozen=True)
class Entry:
    """One validated input for the log: an event (with seq and base), a presence message, or a
    gap record (leaf "gateway", kind GAP: events the gateway declared lost)."""

    received: int
    line: str
    station: str
    board: str
    boot: int
    leaf: str
    kind: str
    at: int
    message: str  # JSON
    seq: int | None = None
    base: int | None = None
    flags: int = 0

    def row(self) -> list:
        return [getattr(self, name) for name in _ENTRY_FIELDS]


_ENTRY_FIELDS = [f for f in Entry.__dataclass_fields__]


@dataclass(frozen=True)
class LoggedEntry:
    pos: int
    received: int
    line: str
    station: str
    leaf: str
    at: int
    message: str


@dataclass(frozen=True)
class Projection:
    pos: int
    clock: int
    snapshot: dict


@dataclass(frozen=True)
class Progress:
    boot: int
    seq: int


class SeqJump(ValueError):
    """An event too far ahead of its board's progress: more than the board's outbox holds."""


class Transaction(Protocol):
    def append(self, entry: Entry, jump_limit: int = DEFAULT_OUTBOX_CAP) -> list[tuple[int, Entry]]:
        """Take one event or presence message. What it makes applicable, logged now in the order
        to apply it: itself, events held behind a gap it filled, gap records; [] for a
        duplicate, a replay or an event held behind a gap. Raises SeqJump for an event more
        than `jump_limit` ahead of its board's progress."""

    def expire(self, now: int, timeout_ms: int) -> list[tuple[int, Entry]]:
        """Declare lost the gaps events have waited behind for `timeout_ms`; what that makes
        applicable, logged as `append` does."""

    def dead_letter(self, received: int, topic: str, payload: bytes, reason: str, detail: str):
        """Keep a rejected message (its first DEAD_LETTER_KEEP bytes)."""

    def telemetry(self, received: int, line: str, station: str, board: str, message: str):
        """Keep a board's latest telemetry."""

    def record(self, kind: str, key: str, data: dict) -> None:
        """Keep a call's or an order's latest version (`kind` call | order)."""

    def forget_records(self, lines: set[str]) -> None:
        """Drop the stored records of these lines: a replay writes them again."""

    def forget_progress(self, board: str) -> None:
        """Take the board's numbering afresh from its next event (an operator's resync)."""

    def outbox(self, topic: str, payload: bytes, created: int, channel: str = "mqtt") -> int:
        """A message that must reach the broker (or, channel webhook, be POSTed to the URL
        `topic`); its id, to mark it sent."""

    def mark_sent(self, ids: list[int], when: int) -> None:
        """The broker has these outbox messages (PUBACK), or the webhook took them."""

    def webhook_tried(
        self, id: int, attempts: int, delivered: int | None, gave_up: int | None
    ) -> None:
        """A webhook delivery was tried (`attempts` so far): delivered, or given up (then it is
        not tried again), at those times; neither: it will be tried again."""

    def save_projection(self, projection: Projection) -> None: ...

    def set_clock(self, now: int) -> None: ...

    @property
    def touched(self) -> dict[str, Progress]:
        """Boards to acknowledge after this transaction, with their progress: those whose
        progress moved, and those that replayed events at or below it."""

    @property
    def in_flight(self) -> Future | None:
        """Its commit, while it is made in the background (`Store.transaction`); else None."""


class Store(Protocol):
    def transaction(self, background: bool = False) -> AbstractContextManager[Transaction]:
        """Everything done in the block commits durably together, or not at all. With
        `background`, the store may leave the commit in flight after the block (the
        transaction's `in_flight`): the caller acknowledges nothing of it before that future."""
        ...

    def settle(self) -> None:
        """Wait for the commits in flight; raise the first one's failure."""
        ...

    def projection(self) -> Projection | None: ...
    def projections(self) -> dict[str, Projection]:
        """Every stored projection, by the lines it holds ("L1,L2"; "": the whole plant)."""
        ...

    def clock(self) -> int: ...
    def log(self, after: int = 0, since: int | None = None) -> Iterator[LoggedEntry]: ...
    def line_log(self, line: str, after: int) -> list[LoggedEntry]: ...
    def progress(self) -> dict[str, Progress]: ...
    def next_gap_deadline(self, timeout_ms: int) -> int | None: ...
    def unsent(self) -> list[tuple[int, str, bytes]]: ...
    def pending_webhooks(self) -> list[tuple[int, str, bytes, int]]: ...
    def webhooks_given_up(self) -> int: ...
    def record(self, kind: str, key: str) -> dict | None: ...
    def records(self, kind: str) -> list[dict]: ...
    def rejections(self) -> dict[str, int]: ...
    def close(self) -> None: ...


# The rows flush writes: a table's columns in order, and what a row already there becomes.
_FLUSHED = {
    "log": ("pos, received, line, station, board, boot, seq, leaf, kind, at, message, flags", ""),
    "progress": ("board, boot, seq", "(board) DO UPDATE SET boot=excluded.boot, seq=excluded.seq"),
    "record": ("kind, id, data", "(kind, id) DO UPDATE SET data=excluded.data"),
    "presence": (
        "board, boot, online",
        "(board) DO UPDATE SET boot=excluded.boot, online=excluded.online",
    ),
    "telemetry": (
        "board, line, station, received, message",
        "(board) DO UPDATE SET line=excluded.line, station=excluded.station,"
        " received=excluded.received, message=excluded.message",
    ),
}


# Rows a statement, largest first: a batch takes few statements, and few distinct ones (each
# compiled once, then cached); 64 rows of the widest table stay under SQLite's oldest limit of
# 999 parameters a statement.
_CHUNKS = (64, 16, 4, 1)


def _insert_all(db: sqlite3.Connection, table: str, rows: list[tuple]) -> None:
    """Insert (or upsert) all rows, many to a statement.

    `executemany` steps SQLite once per row, releasing and retaking the GIL each time: a
    thread that computes a report for the HTTP API can keep the lock for its whole switch
    interval (5 ms) at each retake. A statement of many rows is one wait. Its parameters are
    bound in C: half the CPU of the rows passed as one JSON array and taken apart by SQL.
    """
    if not rows:
        return
    columns, upsert = _FLUSHED[table]
    conflict = f" ON CONFLICT {upsert}" if upsert else ""
    row = f"({', '.join('?' * len(rows[0]))})"
    start = 0
    for size in _CHUNKS:
        sql = f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * size)}{conflict}"
        while len(rows) - start >= size:
            db.execute(sql, [value for each in rows[start : start + size] for value in each])
            start += size


def to_json_text(data: object) -> str:
    """JSON for a TEXT column; pydantic's encoder is several times faster than `json.dumps`
    on the rows of a batch (and a str, not bytes: SQLite reads a BLOB as its binary JSONB)."""
    return pydantic_core.to_json(data).decode()


def connect(path: Path | str) -> sqlite3.Connection:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # check_same_thread off: the gateway opens the store, its worker thread alone then uses it.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    return db


def migrate(db: sqlite3.Connection, steps: list[str] = MIGRATIONS) -> int:
    """Run the steps this database has not run yet; the schema version after."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.execute("SELECT version FROM schema_version").fetchone()
    version = row[0] if row else 0
    if version > len(steps):
        raise RuntimeError(f"database schema v{version} is newer than this gateway's")
    for number, sql in enumerate(steps[version:], start=version + 1):
        # executescript commits first, so each step runs in a transaction of its own.
        db.executescript(
            f"BEGIN; {sql}; DELETE FROM schema_version; "
            f"INSERT INTO schema_version VALUES ({number}); COMMIT;"
        )
    return len(steps)


@dataclass
class _Known:
    """What the store has committed, mirrored in memory so that an event in order is logged
    without a query: the log's last position, each board's progress, its events held behind a
    gap (and since when its gap is open) and its presence."""

    pos: int
    progress: dict[str, Progress]
    held: dict[str, dict[int, Entry]]
    waiting: dict[str, int]  # board -> when its progress last moved with events held
    presence: dict[str, tuple[int, bool]]


@dataclass
class _SqliteTransaction:
    """One batch. New log rows, progress, presence, records and telemetry are kept here and
    written with one statement each by the commit (`flush_later`): the worker then releases
    the GIL to SQLite a few times per batch instead of a few times per event.

    Sequencing (docs/protocol.md, "Order"): an event is logged, and so applied, only once every
    seq below it is logged or declared lost; until then it is held. Progress is that contiguous
    seq, and is what the board is acknowledged."""

    db: Statements
    known: _Known
    dead_letter_limits: tuple[int, int]  # rows kept, age kept (ms)
    touched: dict[str, Progress] = field(default_factory=dict)
    # events (board, seq) that failed to apply: released as lost, never logged
    poisoned: set[tuple[str, int]] = field(default_factory=set)
    in_flight: Future | None = None  # its commit, while it finishes in the background
    began: bool = False  # its BEGIN is sent: a statement of its own ran before the commit
    pos: int = 0
    _rows: list[list] = field(default_factory=list)
    _held: dict[str, dict[int, Entry]] = field(default_factory=dict)  # copies of known's
    _waiting: dict[str, int | None] = field(default_factory=dict)
    _presence: dict[str, tuple[int, bool]] = field(default_factory=dict)
    _records: dict[tuple[str, str], dict] = field(default_factory=dict)
    _telemetry: dict[str, tuple] = field(default_factory=dict)
    _forgotten: set[str] = field(default_factory=set)  # boards whose progress is dropped
    _dead_at: int | None = None  # the last dead letter's time: prune them after
    _clock: int = 0  # the latest arrival seen: a held event is logged as received then
    _sent: list[tuple[list[int], int]] = field(default_factory=list)  # (outbox ids, when)
    _clock_now: int | None = None  # the clock the commit sets

    def __post_init__(self) -> None:
        self.pos = self.known.pos

    # --- the log, in order ------------------------------------------------------------------

    def append(self, entry: Entry, jump_limit: int = DEFAULT_OUTBOX_CAP) -> list[tuple[int, Entry]]:
        if entry.leaf == "operator":  # an operator's action: each one is new, in order
            return [(self._log(entry), entry)]
        if entry.seq is None:
            return [(self._log(entry), entry)] if self._presence_changed(entry) else []
        board = entry.board
        self._clock = max(self._clock, entry.received)
        known = self._progress(board)
        progress = known or Progress(entry.boot, entry.base - 1)  # a new board: its base
        if entry.seq <= progress.seq:  # a re-delivery or an outbox replay: ack it again
            self.touched[board] = progress
            return []
        if entry.seq - progress.seq > jump_limit:
            raise SeqJump(
                f"seq {entry.seq} is {entry.seq - progress.seq} past progress {progress.seq},"
                f" more than the board's outbox holds ({jump_limit})"
            )
        if (
            entry.seq == progress.seq + 1
            and not self._held.get(board)
            and board not in self.known.held
        ):
            self.touched[board] = Progress(entry.boot, entry.seq)  # in order, nothing waits
            return [self._release(entry)]
        held = self._held_of(board)
        if entry.seq in held:
            return []  # held already: a re-delivery
        held[entry.seq] = entry
        if known is None:
            self.touched[board] = progress
        if entry.base - 1 > progress.seq and known is not None:  # the board dropped these
            return self._declare_lost(board, entry.base - 1, entry.received)
        return self._drain(board, progress)

    def expire(self, now: int, timeout_ms: int) -> list[tuple[int, Entry]]:
        done: list[tuple[int, Entry]] = []
        self._clock = max(self._clock, now)
        waiting = {**self.known.waiting, **self._waiting}
        for board, since in waiting.items():
            if since is not None and since + timeout_ms <= now:
                first_held = min(self._held_of(board))
                done += self._declare_lost(board, first_held - 1, now)
        return done

    def _progress(self, board: str) -> Progress | None:
        if board in self.touched:
            return self.touched[board]
        return None if board in self._forgotten else self.known.progress.get(board)

    def forget_progress(self, board: str) -> None:
        """Drop what the store knows of the board's numbering (its progress, its events held
        behind a gap): its next event is taken as a new board's, everything below that event's
        `base` as done. For a board and a database that disagree for good (a database restored
        from an old backup): an operator's decision, since a forged `seq` looks the same."""
        self._forgotten.add(board)
        self.touched.pop(board, None)
        self._held[board] = {}
        self._waiting[board] = None

    def _held_of(self, board: str) -> dict[int, Entry]:
        if board not in self._held:
            self._held[board] = dict(self.known.held.get(board, {}))
        return self._held[board]

    def _drain(self, board: str, progress: Progress) -> list[tuple[int, Entry]]:
        """Log the held events that follow `progress` without a gap, in seq order."""
        held = self._held_of(board)
        done = []
        while (entry := held.pop(progress.seq + 1, None)) is not None:
            done.append(self._release(entry))
            progress = Progress(entry.boot, entry.seq)
        if done:  # acks go to boards whose progress moved (and to replays)
            self.touched[board] = progress
        self._note_wait(board, held, moved=bool(done), now=done[-1][1].received if done else 0)
        return done

    def _note_wait(self, board: str, held: dict, moved: bool, now: int) -> None:
        """A gap's timeout counts from the board's last progress while events wait."""
        was = self._waiting.get(board, self.known.waiting.get(board))
        if not held:
            if was is not None:
                self._waiting[board] = None
        elif moved or was is None:
            first = min(e.received for e in held.values())
            self._waiting[board] = max(now, first) if moved else first

    def _declare_lost(self, board: str, upto: int, received: int) -> list[tuple[int, Entry]]:
        """Everything up to `upto` that is not here will not come: log what is held below it
        in order, a gap record for each missing run, then what follows without a gap."""
        progress = self._progress(board)
        held = self._held_of(board)
        done = []
        for seq in sorted(s for s in held if s <= upto):
            if seq > progress.seq + 1:
                done.append(self._gap(held[seq], progress.seq + 1, seq - 1, received))
            entry = held.pop(seq)
            done.append(self._release(entry))
            progress = Progress(entry.boot, seq)
        if upto > progress.seq:
            nxt = held[min(held)] if held else None
            if nxt is not None:
                done.append(self._gap(nxt, progress.seq + 1, upto, received))
                progress = Progress(nxt.boot, upto)
        self.touched[board] = progress
        done += self._drain(board, progress)
        if done:
            self._note_wait(board, held, moved=True, now=received)
        return done

    def _release(self, entry: Entry) -> tuple[int, Entry]:
        """Log an event whose turn has come; one that failed to apply becomes a gap of one."""
        if (entry.board, entry.seq) in self.poisoned:
            return self._gap(entry, entry.seq, entry.seq, self._clock)
        if entry.received < self._clock:  # the log's time never goes back
            entry = replace(entry, received=self._clock)
        return self._log(entry), entry

    def _gap(self, after: Entry, first: int, last: int, received: int) -> tuple[int, Entry]:
        message = json.dumps({"board": after.board, "first": first, "last": last})
        gap = Entry(
            received, after.line, after.station, after.board, after.boot, "gateway", GAP,
            received, message,
        )  # fmt: skip
        return self._log(gap), gap

    def _next_pos(self) -> int:
        """The position of the next log entry (the PostgreSQL store reserves them in blocks)."""
        self.pos += 1
        return self.pos

    def _log(self, entry: Entry) -> int:
        pos = self._next_pos()
        e = entry
        self._rows.append(
            [pos, e.received, e.line, e.station, e.board, e.boot, e.seq, e.leaf, e.kind,
             e.at, e.message, e.flags]
        )  # fmt: skip
        return pos

    def _presence_changed(self, entry: Entry) -> bool:
        """A birth is news when it changes (boot, online); a Will only for the boot of the
        board's current session, the last birth's (a Will of another boot, late or bogus,
        cannot take a station offline)."""
        before = self._presence.get(entry.board) or self.known.presence.get(entry.board)
        if entry.kind == "will" and (before is None or before != (entry.boot, True)):
            return False
        if entry.kind == "birth" and before is not None and entry.boot < before[0]:
            return False  # an older boot's birth, delivered late
        now = (entry.boot, entry.kind == "birth")
        self._presence[entry.board] = now
        return now != before

    # --- the rest of the batch --------------------------------------------------------------

    def dead_letter(self, received: int, topic: str, payload: bytes, reason: str, detail: str):
        self.db.execute(
            "INSERT INTO dead_letter (received, topic, payload, reason, detail, size, sha256)"
            " VALUES (?,?,?,?,?,?,?)",
            (
                received,
                topic[:DEAD_LETTER_KEEP],
                payload[:DEAD_LETTER_KEEP],
                reason,
                detail[:DEAD_LETTER_KEEP],
                len(payload),
                hashlib.sha256(payload).hexdigest(),
            ),
        )
        self._dead_at = received

    def _prune_dead_letters(self, now: int) -> None:
        rows, age_ms = self.dead_letter_limits
        self.db.execute(
            "DELETE FROM dead_letter WHERE received < ?"
            " OR id <= (SELECT max(id) FROM dead_letter) - ?",
            (now - age_ms, rows),
        )

    def telemetry(self, received: int, line: str, station: str, board: str, message: str):
        self._telemetry[board] = (board, line, station, received, message)

    def record(self, kind: str, key: str, data: dict) -> None:
        self._records[kind, key] = data

    def forget_records(self, lines: set[str]) -> None:
        """Drop the stored records of these lines: a replay writes them again."""
        chosen = json.dumps(sorted(lines))
        self.db.execute(
            "DELETE FROM record WHERE json_extract(data, '$.line') IN"
            " (SELECT value FROM json_each(?))",
            (chosen,),
        )
        self.db.execute(
            "DELETE FROM call_fact WHERE line IN (SELECT value FROM json_each(?))", (chosen,)
        )

    def flush_later(self) -> Callable[[], None]:
        """What was kept, taken now against what the store knows (before `committed` changes
        that), and the writing of it, for the commit to do. Outbox marks and the clock are
        kept too: a statement the worker ran itself would wait for the commit in flight."""
        known = self.known.progress
        forgotten = list(self._forgotten)
        moved = [
            (b, p.boot, p.seq)
            for b, p in self.touched.items()
            if p != known.get(b) or b in forgotten  # its row is deleted below
        ]
        tables = [
            ("log", self._rows),
            ("progress", moved),
            ("record", [(kind, key, to_json_text(d)) for (kind, key), d in self._records.items()]),
            ("presence", [(board, boot, on) for board, (boot, on) in self._presence.items()]),
            ("telemetry", list(self._telemetry.values())),
        ]
        gone, new = self._held_changes()
        dead_at, sent, now = self._dead_at, self._sent, self._clock_now

        def write() -> None:
            for board in forgotten:
                self.db.execute("DELETE FROM progress WHERE board = ?", (board,))
            for table, rows in tables:
                self._write(table, rows)
            if gone:
                self.db.executemany("DELETE FROM held WHERE board=? AND seq=?", gone)
            if new:
                self.db.executemany("INSERT INTO held VALUES (?,?,?)", new)
            if dead_at is not None:
                self._prune_dead_letters(dead_at)
            for ids, when in sent:
                self.db.executemany("UPDATE outbox SET sent=? WHERE id=?", [(when, i) for i in ids])
            if now is not None:
                self.db.execute(self._SET_CLOCK, (now,))

        return write

    def _write(self, table: str, rows: list) -> None:
        _insert_all(self.db, table, rows)

    def _held_changes(self) -> tuple[list[tuple], list[tuple]]:
        """Held events that went and came in this batch (an event in order comes and goes)."""
        gone, new = [], []
        for board, held in self._held.items():
            before = self.known.held.get(board, {})
            gone += [(board, seq) for seq in before if seq not in held]
            new += [
                (board, seq, json.dumps(e.row())) for seq, e in held.items() if seq not in before
            ]
        return gone, new

    def committed(self) -> None:
        """The commit went through: what was kept is now what the store knows."""
        self.known.pos = self.pos
        for board in self._forgotten:
            self.known.progress.pop(board, None)
        self.known.progress.update(self.touched)
        for board, held in self._held.items():
            if held:
                self.known.held[board] = held
            else:
                self.known.held.pop(board, None)
        for board, since in self._waiting.items():
            if since is None:
                self.known.waiting.pop(board, None)
            else:
                self.known.waiting[board] = since
        self.known.presence.update(self._presence)

    def outbox(self, topic: str, payload: bytes, created: int, channel: str = "mqtt") -> int:
        cur = self.db.execute(
            "INSERT INTO outbox (topic, payload, created, channel) VALUES (?,?,?,?)",
            (topic, payload, created, channel),
        )
        return cur.lastrowid

    def webhook_tried(
        self, id: int, attempts: int, delivered: int | None, gave_up: int | None
    ) -> None:
        self.db.execute(
            "UPDATE outbox SET attempts=?, sent=?, failed=? WHERE id=?",
            (attempts, delivered, gave_up, id),
        )

    def mark_sent(self, ids: list[int], when: int) -> None:
        if ids:
            self._sent.append((ids, when))

    def save_projection(self, projection: Projection) -> None:
        self.db.execute(
            "INSERT INTO projection VALUES (1,?,?,?) ON CONFLICT (id) DO UPDATE"
            " SET pos=excluded.pos, clock=excluded.clock, snapshot=excluded.snapshot",
            (
                projection.pos,
                projection.clock,
                json.dumps(projection.snapshot, check_circular=False),
            ),
        )

    _SET_CLOCK = "UPDATE clock SET now=? WHERE id=1"

    def set_clock(self, now: int) -> None:
        self._clock_now = now


class Statements:
    """A store's connection as its users speak to it: `before` runs before each statement (the
    store's `_ready`, so that a commit in flight is made first)."""

    def __init__(self, db: Any, before: Callable[[], None] | None = None) -> None:
        self.db = db
        self.before = before

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        if self.before is not None:
            self.before()
        return self.db.execute(self.spelled(sql), args)

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        if self.before is not None:
            self.before()
        self._many(self.spelled(sql), rows)

    @staticmethod
    def spelled(sql: str) -> str:
        """The statement in the database's own spelling."""
        return sql

    def _many(self, sql: str, rows: list[tuple]) -> None:
        self.db.executemany(sql, rows)

    def close(self) -> None:
        self.db.close()


class SqliteStore:
    """The embedded store: one SQLite file in WAL mode, one writer.

    A store whose commit is the database server's work (`BACKGROUND`) can make it while the
    worker goes on to its next batch: with `background`, a transaction hands its writes to the
    committer thread (what the store knows already holds this batch's). A statement the worker
    runs itself waits for the commit in flight first (`_ready`): a transaction sends its BEGIN
    only then, or with its commit. SQLite's commit is mostly this process's own work, binding
    rows under the interpreter lock: on another thread it only took turns with the worker (a
    backlog drained no faster), so SQLite commits at once."""

    BEGIN = "BEGIN IMMEDIATE"  # the write lock at once: a commit never waits on a reader
    BACKGROUND = False

    @property
    def dialect(self) -> Dialect:
        return SqliteReader  # its SQL spellings are static

    def __init__(
        self,
        path: Path | str,
        dead_letters_max: int = 10_000,
        dead_letters_max_age_ms: int = 7 * 86_400_000,
    ) -> None:
        self.path = Path(path)
        raw = connect(self.path)
        migrate(raw)
        self._attach(Statements, raw)
        self._dead_letter_limits = (dead_letters_max, dead_letters_max_age_ms)
        self._known = _Known(
            pos=self.db.execute("SELECT coalesce(max(pos), 0) FROM log").fetchone()[0],
            progress={},
            held={},
            waiting={},
            presence={},
        )
        self._read_boards()

    def _attach(self, speak: type[Statements], raw: Any) -> None:
        """Speak to `raw`: the worker through `db`, a commit through `_direct`."""
        self.db = speak(raw, before=self._ready)
        self._direct = speak(raw)
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="andon-commit")
        self._in_flight: list[Future] = []
        self._failed = False  # a commit in the background failed: the ones after it are not made
        self._open: _SqliteTransaction | None = None  # the transaction in the worker's hands

    def _read_boards(self) -> None:
        """Mirror what the database holds of each board: progress, held events, presence."""
        known = self._known
        known.progress = {
            board: Progress(boot, seq)
            for board, boot, seq in self.db.execute("SELECT board, boot, seq FROM progress")
        }
        known.held = {}
        for board, seq, row in self.db.execute("SELECT board, seq, entry FROM held"):
            known.held.setdefault(board, {})[seq] = Entry(*json.loads(row))
        # a restart counts a gap's timeout from its first held event's arrival
        known.waiting = {b: min(e.received for e in h.values()) for b, h in known.held.items()}
        known.presence = {
            board: (boot, bool(online))
            for board, boot, online in self.db.execute("SELECT board, boot, online FROM presence")
        }

    @contextmanager
    def transaction(self, background: bool = False) -> Iterator[_SqliteTransaction]:
        """Everything done in the block commits durably together, or not at all: at once, or
        with `background` (where the store takes it) by the committer thread."""
        tx = self._transaction()
        self._open = tx
        try:
            yield tx
            write = tx.flush_later()
        except BaseException:
            if tx.began:
                with contextlib.suppress(Exception):
                    self._direct.db.execute("ROLLBACK")
            raise
        finally:
            self._open = None
        tx.db = self._direct  # what is left is the commit's own
        commit = partial(self._commit, write, tx.began, self._commit_check(), background)
        if background and self.BACKGROUND:
            tx.committed()  # the next batch builds on it; a failed commit fences or stops it
            tx.in_flight = self._committer.submit(commit)
            self._in_flight.append(tx.in_flight)
        else:
            self.settle()
            commit()
            tx.committed()

    def _transaction(self) -> _SqliteTransaction:
        return _SqliteTransaction(self.db, self._known, self._dead_letter_limits)

    def _commit_check(self) -> Callable[[], None]:
        """What a commit checks last (nothing here: the fence, on PostgreSQL)."""
        return lambda: None

    def _commit(
        self, write: Callable[[], None], began: bool, check: Callable[[], None], background: bool
    ) -> None:
        db = self._direct.db
        if background and self._failed:
            raise RuntimeError("not committed: the commit before it failed")
        try:
            if not began:
                db.execute(self.BEGIN)
            write()
            check()
            db.execute("COMMIT")
        except BaseException:
            if background:
                self._failed = True
            with contextlib.suppress(Exception):
                db.execute("ROLLBACK")
            raise

    def settle(self) -> None:
        """Wait for the commits in flight; raise the first one's failure."""
        in_flight, self._in_flight = self._in_flight, []
        failures = [f.exception() for f in in_flight]
        self._failed = False
        first = next((exc for exc in failures if exc is not None), None)
        if first is not None:
            raise first

    def _ready(self) -> None:
        """Before a statement of the worker's: the commits in flight are made, and the open
        transaction has begun."""
        self.settle()
        tx = self._open
        if tx is not None and not tx.began:
            tx.began = True
            self._direct.db.execute(self.BEGIN)

    def projection(self) -> Projection | None:
        row = self.db.execute("SELECT pos, clock, snapshot FROM projection").fetchone()
        return Projection(row[0], row[1], json.loads(row[2])) if row else None

    def projections(self) -> dict[str, Projection]:
        """The one projection, of the whole plant (one gateway serves every line)."""
        projection = self.projection()
        return {"": projection} if projection else {}

    def clock(self) -> int:
        return self.db.execute("SELECT now FROM clock").fetchone()[0]

    def log(self, after: int = 0, since: int | None = None) -> Iterator[LoggedEntry]:
        """The log in order, from position `after` (exclusive), or from the time `since`."""
        if since is None:
            query, arg = "pos > ?", after
        else:
            query, arg = "received >= ?", since
        cur = self.db.execute(
            f"SELECT pos, received, line, station, leaf, at, message FROM log WHERE {query}"
            " ORDER BY pos",
            (arg,),
        )
        for row in cur:
            yield LoggedEntry(*row)

    def line_log(self, line: str, after: int) -> list[LoggedEntry]:
        """One line's log after position `after`, in order. Only a gateway of several reads the
        log this way (`LogFollower`): PostgreSQL's log has the (line, pos) index for it."""
        rows = self.db.execute(
            "SELECT pos, received, line, station, leaf, at, message FROM log"
            " WHERE line = ? AND pos > ? ORDER BY pos",
            (line, after),
        ).fetchall()
        return [LoggedEntry(*row) for row in rows]

    def progress(self) -> dict[str, Progress]:
        return dict(self._known.progress)

    def next_gap_deadline(self, timeout_ms: int) -> int | None:
        """When the first open gap times out (see `Transaction.expire`), if any is open."""
        waiting = self._known.waiting.values()
        return min(waiting) + timeout_ms if waiting else None

    def held(self) -> dict[str, list[int]]:
        """The seqs waiting behind a gap, per board."""
        return {board: sorted(h) for board, h in self._known.held.items()}

    def unsent(self) -> list[tuple[int, str, bytes]]:
        """MQTT messages of the outbox the broker has not confirmed."""
        return self.db.execute(
            "SELECT id, topic, payload FROM outbox"
            " WHERE channel='mqtt' AND sent IS NULL AND failed IS NULL ORDER BY id"
        ).fetchall()

    def pending_webhooks(self) -> list[tuple[int, str, bytes, int]]:
        """(id, url, payload, attempts made) of the webhook deliveries still to make."""
        return self.db.execute(
            "SELECT id, topic, payload, attempts FROM outbox"
            " WHERE channel='webhook' AND sent IS NULL AND failed IS NULL ORDER BY id"
        ).fetchall()

    def webhooks_given_up(self) -> int:
        return self.db.execute(
            "SELECT COUNT(*) FROM outbox WHERE channel='webhook' AND failed IS NOT NULL"
        ).fetchone()[0]

    def record(self, kind: str, key: str) -> dict | None:
        row = self.db.execute("SELECT data FROM record WHERE kind=? AND id=?", (kind, key))
        found = row.fetchone()
        return json.loads(found[0]) if found else None

    def records(self, kind: str) -> list[dict]:
        return _records_in(self.db, self.dialect, kind)

    def rejections(self) -> dict[str, int]:
        rows = self.db.execute("SELECT reason, COUNT(*) FROM dead_letter GROUP BY reason")
        return dict(rows.fetchall())

    def dead_letters(self) -> list[tuple[int, str, bytes, str, str]]:
        return self.db.execute(
            "SELECT received, topic, payload, reason, detail FROM dead_letter ORDER BY id"
        ).fetchall()

    def recent_rejections(self, since: int = 0, limit: int = 100) -> dict:
        return _rejections_in(self.db, since, limit)

    def telemetry(self) -> dict[str, dict]:
        rows = self.db.execute("SELECT board, message FROM telemetry")
        return {board: json.loads(message) for board, message in rows}

    def close(self) -> None:
        self._committer.shutdown(wait=True)
        self.db.close()


class Rows(Protocol):
    def fetchone(self) -> tuple | None: ...
    def fetchall(self) -> list[tuple]: ...
    def __iter__(self) -> Iterator[tuple]: ...


class Executes(Protocol):
    """A connection to either store (or a `Reader`): what the reads both share need."""

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Rows: ...


# When each kind of record begins, and the member set once it is closed: lists of records are
# in the order of the first, and "open" ones are those without the second.
_RECORD_TIME = {"call": "opened", "order": "posted", "stop": "started", "alert": "opened"}
RECORD_CLOSED = {"call": "resolved", "order": "received"}


def _records_in(
    db: Executes, dialect: Dialect, kind: str, limit: int | None = None, open_only: bool = False
) -> list[dict]:
    """The records of `kind`, oldest first: by the time each began (a call's `opened`, an
    order's `posted`), then line and id, all on the records' own members and bytewise, so that
    the order is the same in either store, whatever the ids' form there ("line/id" in
    PostgreSQL) and the database's collation. With `limit`, the plant's latest `limit`; with
    `open_only`, those not closed yet. The database sorts and cuts: a year of records is never
    parsed for a page of them."""
    time = dialect.field("data", _RECORD_TIME.get(kind, "at"), "int")  # annotations: "at"
    line, key = (
        dialect.bytewise(f"coalesce({dialect.field('data', n)}, '')") for n in ("line", "id")
    )
    where = f" AND {dialect.field('data', RECORD_CLOSED[kind])} IS NULL" if open_only else ""
    cut = "" if limit is None else f" LIMIT {int(limit)}"
    rows = db.execute(
        f"SELECT data FROM record WHERE kind = ?{where}"
        f" ORDER BY coalesce({time}, 0) DESC, {line} DESC, {key} DESC{cut}",
        (kind,),
    ).fetchall()
    return [json.loads(data) for (data,) in reversed(rows)]


def _rejections_in(db: Executes, since: int, limit: int) -> dict:
    """Dead letters since `since` (ms): counts by reason, and the last `limit` of them."""
    counts = db.execute(
        "SELECT reason, COUNT(*), max(received) FROM dead_letter WHERE received >= ?"
        " GROUP BY reason ORDER BY reason",
        (since,),
    ).fetchall()
    rows = db.execute(
        "SELECT received, topic, reason, detail, size, sha256 FROM dead_letter"
        " WHERE received >= ? ORDER BY id DESC LIMIT ?",
        (since, limit),
    ).fetchall()
    keys = ("received", "topic", "reason", "detail", "size", "sha256")
    return {
        "by_reason": {r: {"count": n, "last": last} for r, n, last in counts},
        "recent": [dict(zip(keys, row, strict=True)) for row in reversed(rows)],
    }


def records(database: Path, kind: str) -> list[dict[str, Any]]:
    """The call or order records in the SQLite file `database`, read on a read-only connection
    of their own: beside a running gateway (WAL), from any thread."""
    if not database.exists():
        return []
    reader = SqliteReader(database)
    try:
        return _records_in(reader, reader, kind)
    finally:
        reader.close()


def open_store(config: PlantConfig, owner: str = "") -> Store:
    """The plant's store: PostgreSQL when `[store] url` names one, else the SQLite file."""
    limits = (config.gateway.dead_letters_max, config.gateway.dead_letters_max_age_s * 1000)
    if config.store.url:
        from andon.runtime.store_pg import PgStore  # psycopg only where PostgreSQL is used

        return PgStore(config.store.url, owner, *limits)
    return SqliteStore(config.gateway.database, *limits)


JsonKind = Literal["text", "int", "bool"]
Spans = dict[str, list[tuple[int, int]]]  # per line, [start, end) ms, sorted and disjoint


class Dialect(Protocol):
    """What SQLite and PostgreSQL spell differently in the SQL both stores' reads share."""

    def field(self, column: str, name: str, kind: JsonKind = "text") -> str:
        """The SQL of the member `name` of the JSON object in `column`, as a `kind`."""

    def bytewise(self, text: str) -> str:
        """The SQL text `text`, ordered by its bytes as SQLite orders it (not by the
        database's collation, which may put "a1" before "B1"): a list in the same order."""


class Reader(Executes, Dialect, Protocol):
    """A read-only connection to the plant's store, for the plant-wide views (the API's records
    and rejections, reports, /metrics, doctor) beside running gateways. Their SQL is written
    once, with `?` placeholders; these methods spell the few things SQLite and PostgreSQL say
    differently."""

    def record_table(self, kind: str) -> str:
        """A SQL table of the records of `kind` (one of ours, not a user's): `id`, and `data`
        parsed once per row where the database parses JSON apart from reading a member."""

    def joined(self, expr: str) -> str:
        """The SQL aggregate of `expr`'s values in a group, comma-separated, NULLs left out."""

    def record_id(self, line: str, key: str) -> str:
        """The SQL of the `record` table's id of the record `key` of `line`."""

    def within(self, line: str, at: str, spans: Spans) -> tuple[str, list]:
        """A SQL condition, and its arguments: the time `at` lies in one of the spans of
        `line` (both SQL expressions)."""

    def close(self) -> None: ...


class SqliteReader:
    """The SQLite file opened read-only: WAL lets it read beside the writing gateway."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, args)

    @staticmethod
    def record_table(kind: str) -> str:
        return f"(SELECT id, data FROM record WHERE kind = '{kind}')"  # flattened by SQLite

    @staticmethod
    def field(column: str, name: str, kind: JsonKind = "text") -> str:
        return f"json_extract({column}, '$.{name}')"  # typed as the JSON has it

    @staticmethod
    def joined(expr: str) -> str:
        return f"group_concat({expr})"

    @staticmethod
    def record_id(line: str, key: str) -> str:
        return key

    @staticmethod
    def bytewise(text: str) -> str:
        return text  # SQLite's own BINARY collation

    def within(self, line: str, at: str, spans: Spans) -> tuple[str, list]:
        # A Python function: one bisection per row, no join (a year of calls, bench/board.py)
        starts = {line_id: [start for start, _ in found] for line_id, found in spans.items()}

        def inside(line_id: str, t: int) -> bool:
            i = bisect_right(starts.get(line_id, []), t) - 1
            return i >= 0 and t < spans[line_id][i][1]

        self.db.create_function("within_spans", 2, inside, deterministic=True)
        return f"within_spans({line}, {at})", []

    def close(self) -> None:
        self.db.close()


def open_reader(config: PlantConfig) -> Reader | None:
    """A read-only connection to the plant's store; None while there is nothing to read (no
    gateway has run with this plant yet)."""
    if config.store.url:
        from andon.runtime.store_pg import PgReader  # psycopg only where PostgreSQL is used

        return PgReader.open(config.store.url)
    if not config.gateway.database.exists():
        return None
    return SqliteReader(config.gateway.database)


def read_plant(config: PlantConfig, read: Callable[[Reader], T], missing: T) -> T:
    """What `read` finds in the plant's store on a read-only connection of its own (any
    thread); `missing` when there is nothing to read yet."""
    reader = open_reader(config)
    if reader is None:
        return missing
    try:
        return read(reader)
    finally:
        reader.close()


def plant_records(
    config: PlantConfig, kind: str, limit: int | None = None, open_only: bool = False
) -> list[dict]:
    """The plant's call or order records (`_records_in`)."""
    return read_plant(config, lambda db: _records_in(db, db, kind, limit, open_only), [])


def plant_rejections(config: PlantConfig, since: int = 0, limit: int = 100) -> dict:
    """The plant's recent rejections (`SqliteStore.recent_rejections`)."""
    empty: dict = {"by_reason": {}, "recent": []}
    return read_plant(config, lambda db: _rejections_in(db, since, limit), empty)
