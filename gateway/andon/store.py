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
from typing import Protocol

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


class Transaction(Protocol):
    def append(self, entry: Entry) -> int | None:
        """Log it; its position, or None when it was logged before (a duplicate)."""

    def dead_letter(self, received: int, topic: str, payload: bytes, reason: str, detail: str):
        """Keep a rejected message."""

    def telemetry(self, received: int, line: str, station: str, board: str, message: str):
        """Keep a board's latest telemetry."""

    def record(self, kind: str, key: str, data: dict) -> None:
        """Keep a call's or an order's latest version (`kind` call | order)."""

    def outbox(self, topic: str, payload: bytes, created: int) -> int:
        """A message that must reach the broker; its id, to mark it sent."""

    def mark_sent(self, ids: list[int], when: int) -> None:
        """The broker has these outbox messages (PUBACK)."""

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
    def records(self, kind: str) -> list[dict]: ...
    def rejections(self) -> dict[str, int]: ...
    def close(self) -> None: ...


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
class _SqliteTransaction:
    db: sqlite3.Connection
    known: dict[str, Progress]  # the store's committed progress, read only here
    touched: dict[str, Progress] = field(default_factory=dict)

    def append(self, entry: Entry) -> int | None:
        if entry.seq is None and not self._presence_changed(entry):
            return None
        cur = self.db.execute(
            "INSERT OR IGNORE INTO log (received, line, station, board, boot, seq, leaf, kind,"
            " at, message) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
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
            ),
        )
        if entry.seq is not None:
            self._advance_progress(entry)
        return cur.lastrowid if cur.rowcount else None

    def _presence_changed(self, entry: Entry) -> bool:
        online = entry.kind == "birth"
        row = self.db.execute(
            "SELECT boot, online FROM presence WHERE board=?", (entry.board,)
        ).fetchone()
        if row == (entry.boot, int(online)):
            return False
        self.db.execute(
            "INSERT INTO presence VALUES (?,?,?) ON CONFLICT (board) DO UPDATE"
            " SET boot=excluded.boot, online=excluded.online",
            (entry.board, entry.boot, int(online)),
        )
        return True

    def _advance_progress(self, entry: Entry) -> None:
        """Everything below `base` counts as stored; then follow the stored seqs upwards."""
        old = self.touched.get(entry.board) or self.known.get(entry.board) or Progress(0, 0)
        new = old if old.seq >= entry.base - 1 else Progress(entry.boot, entry.base - 1)
        while row := self.db.execute(
            "SELECT boot FROM log WHERE board=? AND seq=?", (entry.board, new.seq + 1)
        ).fetchone():
            new = Progress(row[0], new.seq + 1)
        self.touched[entry.board] = new
        if new != old:
            self.db.execute(
                "INSERT INTO progress VALUES (?,?,?) ON CONFLICT (board) DO UPDATE"
                " SET boot=excluded.boot, seq=excluded.seq",
                (entry.board, new.boot, new.seq),
            )

    def dead_letter(self, received: int, topic: str, payload: bytes, reason: str, detail: str):
        self.db.execute(
            "INSERT INTO dead_letter (received, topic, payload, reason, detail) VALUES (?,?,?,?,?)",
            (received, topic, payload, reason, detail),
        )

    def telemetry(self, received: int, line: str, station: str, board: str, message: str):
        self.db.execute(
            "INSERT INTO telemetry VALUES (?,?,?,?,?) ON CONFLICT (board) DO UPDATE SET"
            " line=excluded.line, station=excluded.station, received=excluded.received,"
            " message=excluded.message",
            (board, line, station, received, message),
        )

    def record(self, kind: str, key: str, data: dict) -> None:
        self.db.execute(
            "INSERT INTO record VALUES (?,?,?) ON CONFLICT (kind, id) DO UPDATE"
            " SET data=excluded.data",
            (kind, key, json.dumps(data)),
        )

    def outbox(self, topic: str, payload: bytes, created: int) -> int:
        cur = self.db.execute(
            "INSERT INTO outbox (topic, payload, created) VALUES (?,?,?)", (topic, payload, created)
        )
        return cur.lastrowid

    def mark_sent(self, ids: list[int], when: int) -> None:
        self.db.executemany("UPDATE outbox SET sent=? WHERE id=?", [(when, i) for i in ids])

    def save_projection(self, projection: Projection) -> None:
        self.db.execute(
            "INSERT INTO projection VALUES (1,?,?,?) ON CONFLICT (id) DO UPDATE"
            " SET pos=excluded.pos, clock=excluded.clock, snapshot=excluded.snapshot",
            (projection.pos, projection.clock, json.dumps(projection.snapshot)),
        )

    def set_clock(self, now: int) -> None:
        self.db.execute("UPDATE clock SET now=? WHERE id=1", (now,))


class SqliteStore:
    """The embedded store: one SQLite file in WAL mode, one writer."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.db = connect(self.path)
        migrate(self.db)
        self._progress = {
            board: Progress(boot, seq)
            for board, boot, seq in self.db.execute("SELECT board, boot, seq FROM progress")
        }

    @contextmanager
    def transaction(self) -> Iterator[_SqliteTransaction]:
        """Everything done in the block commits durably together, or not at all."""
        tx = _SqliteTransaction(self.db, self._progress)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield tx
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        self._progress.update(tx.touched)

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
        return dict(self._progress)

    def unsent(self) -> list[tuple[int, str, bytes]]:
        return self.db.execute(
            "SELECT id, topic, payload FROM outbox WHERE sent IS NULL ORDER BY id"
        ).fetchall()

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
