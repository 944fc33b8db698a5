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

import json
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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
]


@dataclass(frozen=True)
class Entry:
    """One validated input for the log: an event (with seq and base) or a presence message."""

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


# The per-board lookups of the log, on its event index. "seq IS NOT NULL" lets SQLite use that
# partial index for max(seq): without it, each lookup scans the whole log.
TOP_SEQ = "SELECT max(seq) FROM log WHERE board=? AND seq IS NOT NULL"
BOOT_AT = "SELECT boot FROM log WHERE board=? AND seq=?"
_NONE = Progress(0, 0)  # a board's progress before anything of it is stored


class Transaction(Protocol):
    def append(self, entry: Entry) -> int | None:
        """Log it; its position, or None when it was logged before (a duplicate)."""

    def dead_letter(self, received: int, topic: str, payload: bytes, reason: str, detail: str):
        """Keep a rejected message."""

    def telemetry(self, received: int, line: str, station: str, board: str, message: str):
        """Keep a board's latest telemetry."""

    def record(self, kind: str, key: str, data: dict) -> None:
        """Keep a call's or an order's latest version (`kind` call | order)."""

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
        """Boards that sent events in this transaction, with their progress after it."""


class Store(Protocol):
    def transaction(self) -> AbstractContextManager[Transaction]: ...
    def projection(self) -> Projection | None: ...
    def clock(self) -> int: ...
    def log(self, after: int = 0, since: int | None = None) -> Iterator[LoggedEntry]: ...
    def progress(self) -> dict[str, Progress]: ...
    def unsent(self) -> list[tuple[int, str, bytes]]: ...
    def pending_webhooks(self) -> list[tuple[int, str, bytes, int]]: ...
    def webhooks_given_up(self) -> int: ...
    def record(self, kind: str, key: str) -> dict | None: ...
    def records(self, kind: str) -> list[dict]: ...
    def rejections(self) -> dict[str, int]: ...
    def close(self) -> None: ...


# The rows flush writes: a table's columns in order, and what a row already there becomes.
_FLUSHED = {
    "log": ("pos, received, line, station, board, boot, seq, leaf, kind, at, message", ""),
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


def _insert_all(db: sqlite3.Connection, table: str, rows: list[tuple]) -> None:
    """Insert (or upsert) all rows with one statement, the rows passed as one JSON array.

    `executemany` steps SQLite once per row, releasing and retaking the GIL each time; under
    load every retake waits for paho's network thread. One statement is one wait per batch.
    """
    if not rows:
        return
    columns, upsert = _FLUSHED[table]
    values = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(rows[0])))
    # "WHERE true" tells SQLite that ON CONFLICT is the upsert's, not a join's ON
    conflict = f" WHERE true ON CONFLICT {upsert}" if upsert else ""
    db.execute(
        f"INSERT INTO {table} ({columns}) SELECT {values} FROM json_each(?){conflict}",
        (json.dumps(rows),),
    )


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
    without a query: the log's last position, each board's progress, the highest seq stored
    per board (looked up once per board), and each board's presence."""

    pos: int
    progress: dict[str, Progress]
    top: dict[str, int]
    presence: dict[str, tuple[int, bool]]


@dataclass
class _SqliteTransaction:
    """One batch. New log rows, progress, presence, records and telemetry are kept here and
    written by `flush` with one statement each, just before the commit: the worker then
    releases the GIL to SQLite a few times per batch instead of a few times per event."""

    db: sqlite3.Connection
    known: _Known
    touched: dict[str, Progress] = field(default_factory=dict)
    pos: int = 0
    _rows: list[tuple] = field(default_factory=list)
    _boots: dict[tuple[str, int], int] = field(default_factory=dict)  # (board, seq) -> boot
    _top: dict[str, int] = field(default_factory=dict)
    _presence: dict[str, tuple[int, bool]] = field(default_factory=dict)
    _records: dict[tuple[str, str], dict] = field(default_factory=dict)
    _telemetry: dict[str, tuple] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pos = self.known.pos

    def append(self, entry: Entry) -> int | None:
        if entry.leaf == "operator":  # an operator's action: each one is new
            return self._log(entry)
        if entry.seq is None:
            return self._log(entry) if self._presence_changed(entry) else None
        pos = None if self._logged(entry) else self._log(entry)
        self._advance_progress(entry)
        return pos

    def _next_pos(self) -> int:
        """The position of the next log entry (the PostgreSQL store reserves them in blocks)."""
        self.pos += 1
        return self.pos

    def _log(self, entry: Entry) -> int:
        pos = self._next_pos()
        self._rows.append(
            (
                pos,
                entry.received,
                entry.line,
                entry.station,
                entry.board,
                entry.boot,
                entry.seq,
                entry.leaf,
                entry.kind,
                entry.at,
                entry.message,
            )
        )
        if entry.seq is not None:
            self._boots[entry.board, entry.seq] = entry.boot
            self._top[entry.board] = max(self._top_of(entry.board), entry.seq)
        return pos

    def _top_of(self, board: str) -> int:
        """The highest seq logged for this board (0: none)."""
        if board in self._top:
            return self._top[board]
        if board not in self.known.top:
            row = self.db.execute(TOP_SEQ, (board,)).fetchone()
            self.known.top[board] = row[0] or 0  # committed rows only: nothing is flushed yet
        return self.known.top[board]

    def _logged(self, entry: Entry) -> bool:
        """Is (board, boot, seq) in the log? Above the board's highest seq it cannot be."""
        if entry.seq > self._top_of(entry.board):
            return False
        if self._boots.get((entry.board, entry.seq)) == entry.boot:
            return True
        return self._boot_at(entry.board, entry.seq, entry.boot) is not None

    def _boot_at(self, board: str, seq: int, boot: int | None = None) -> int | None:
        """The boot of the logged event `seq` of this board (of that `boot`, if given)."""
        if boot is None and (board, seq) in self._boots:
            return self._boots[board, seq]
        query = BOOT_AT
        args: tuple = (board, seq)
        if boot is not None:
            query, args = query + " AND boot=?", (board, seq, boot)
        row = self.db.execute(query, args).fetchone()
        return row[0] if row else None

    def _presence_changed(self, entry: Entry) -> bool:
        now = (entry.boot, entry.kind == "birth")
        before = self._presence.get(entry.board) or self.known.presence.get(entry.board)
        self._presence[entry.board] = now
        return now != before

    def _advance_progress(self, entry: Entry) -> None:
        """Everything below `base` counts as stored; then follow the stored seqs upwards."""
        old = self.touched.get(entry.board) or self.known.progress.get(entry.board) or _NONE
        new = old if old.seq >= entry.base - 1 else Progress(entry.boot, entry.base - 1)
        top = self._top_of(entry.board)
        while new.seq < top and (boot := self._boot_at(entry.board, new.seq + 1)) is not None:
            new = Progress(boot, new.seq + 1)
        self.touched[entry.board] = new

    def dead_letter(self, received: int, topic: str, payload: bytes, reason: str, detail: str):
        self.db.execute(
            "INSERT INTO dead_letter (received, topic, payload, reason, detail) VALUES (?,?,?,?,?)",
            (received, topic, payload, reason, detail),
        )

    def telemetry(self, received: int, line: str, station: str, board: str, message: str):
        self._telemetry[board] = (board, line, station, received, message)

    def record(self, kind: str, key: str, data: dict) -> None:
        self._records[kind, key] = data

    def flush(self) -> None:
        """Write what was kept; the store calls it just before the commit."""
        known = self.known.progress
        moved = [(b, p.boot, p.seq) for b, p in self.touched.items() if p != known.get(b, _NONE)]
        records = [(kind, key, json.dumps(data)) for (kind, key), data in self._records.items()]
        presence = [(board, boot, online) for board, (boot, online) in self._presence.items()]
        self._write("log", self._rows)
        self._write("progress", moved)
        self._write("record", records)
        self._write("presence", presence)
        self._write("telemetry", list(self._telemetry.values()))

    def _write(self, table: str, rows: list[tuple]) -> None:
        _insert_all(self.db, table, rows)

    def committed(self) -> None:
        """The commit went through: what was kept is now what the store knows."""
        self.known.pos = self.pos
        self.known.progress.update(self.touched)
        self.known.top.update(self._top)
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
        self.db.executemany("UPDATE outbox SET sent=? WHERE id=?", [(when, i) for i in ids])

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

    def set_clock(self, now: int) -> None:
        self.db.execute("UPDATE clock SET now=? WHERE id=1", (now,))


class SqliteStore:
    """The embedded store: one SQLite file in WAL mode, one writer."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.db = connect(self.path)
        migrate(self.db)
        self._known = _Known(
            pos=self.db.execute("SELECT coalesce(max(pos), 0) FROM log").fetchone()[0],
            progress={
                board: Progress(boot, seq)
                for board, boot, seq in self.db.execute("SELECT board, boot, seq FROM progress")
            },
            top={},
            presence={
                board: (boot, bool(online))
                for board, boot, online in self.db.execute("SELECT * FROM presence")
            },
        )

    @contextmanager
    def transaction(self) -> Iterator[_SqliteTransaction]:
        """Everything done in the block commits durably together, or not at all."""
        tx = _SqliteTransaction(self.db, self._known)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield tx
            tx.flush()
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        tx.committed()

    def projection(self) -> Projection | None:
        row = self.db.execute("SELECT pos, clock, snapshot FROM projection").fetchone()
        return Projection(row[0], row[1], json.loads(row[2])) if row else None

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

    def progress(self) -> dict[str, Progress]:
        return dict(self._known.progress)

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
        rows = self.db.execute("SELECT data FROM record WHERE kind=? ORDER BY id", (kind,))
        return [json.loads(data) for (data,) in rows]

    def rejections(self) -> dict[str, int]:
        rows = self.db.execute("SELECT reason, COUNT(*) FROM dead_letter GROUP BY reason")
        return dict(rows.fetchall())

    def dead_letters(self) -> list[tuple[int, str, bytes, str, str]]:
        return self.db.execute(
            "SELECT received, topic, payload, reason, detail FROM dead_letter ORDER BY id"
        ).fetchall()

    def telemetry(self) -> dict[str, dict]:
        rows = self.db.execute("SELECT board, message FROM telemetry")
        return {board: json.loads(message) for board, message in rows}

    def close(self) -> None:
        self.db.close()


def records(database: Path, kind: str) -> list[dict[str, Any]]:
    """The call or order records in `database`, read on a connection of their own: beside a
    running gateway (WAL), from any thread."""
    if not database.exists():
        return []
    store = SqliteStore(database)
    try:
        return store.records(kind)
    finally:
        store.close()
