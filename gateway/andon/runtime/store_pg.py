"""The PostgreSQL store: the same log, projections and outbox as `andon.runtime.store`, shared
by several gateways (psycopg 3).

The semantics are the SQLite store's, and so is most of the code: the transaction's logic
(identity, progress, presence) and the reads are inherited, spoken to PostgreSQL through
`_Qmark`. What differs is written here:

- positions: several gateways append to one log, so each reserves a block of positions from a
  sequence (one round trip per `POS_BLOCK` entries, on a connection of its own: a sequence
  stands outside every transaction, so the worker need not wait for a commit in flight) and
  takes a new block whenever the lines it owns change, so that each line's entries stay in the
  order they were committed;
- fencing: each line is owned by one gateway through a lease row with an epoch
  (`andon.runtime.ownership`). Every commit reads the epochs of the lines this gateway believes
  it owns, FOR SHARE, and fails with `Fenced` when one is no longer its own: a gateway that
  paused past its lease cannot write. The share lock also makes a takeover wait for a commit
  in progress, so the new owner reads everything its predecessor committed;
- writes: the log by COPY, the upserts one statement a table, each column a binary array the
  server unnests; a call's `call_fact` row beside its record;
- durability: `synchronous_commit = on`, so a commit returns once it is on disk (and on the
  synchronous standbys, if any): the broker and the boards are acknowledged only after that.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import psycopg

from andon.runtime.store import (
    _FLUSHED,
    Fenced,
    JsonKind,
    Projection,
    Spans,
    SqliteStore,
    Statements,
    _Known,
    _SqliteTransaction,
)

POS_BLOCK = 1000  # log positions a gateway reserves at once
_MIGRATION_LOCK = 0x616E646F6E  # an advisory lock: two gateways starting together migrate once

# The members of a call record's JSON that call_fact keeps, in its column order, with casts
_CALL_FIELDS = (
    ("line", ""), ("station", ""), ("cause", ""), ("opened", "::bigint"),
    ("acknowledged", "::bigint"), ("stopped", "::bigint"), ("resolved", "::bigint"),
    ("reason", ""),
)  # fmt: skip
# A call record's row of call_fact: its id, then its JSON's members (`record`: the row)
_CALL_COLUMNS = "{record}.id, " + ", ".join(
    f"({{record}}.data::jsonb ->> '{name}'){cast}" for name, cast in _CALL_FIELDS
)
_CALL_UPSERT = """ON CONFLICT (id) DO UPDATE SET line=excluded.line, station=excluded.station,
            cause=excluded.cause, opened=excluded.opened, acknowledged=excluded.acknowledged,
            stopped=excluded.stopped, resolved=excluded.resolved, reason=excluded.reason"""

# PostgreSQL's types of the columns a commit upserts, in `_UPSERTS`'s order
_COLUMN_TYPES = {
    "progress": "text bigint bigint",
    "record": "text text text",
    "presence": "text bigint boolean",
    "telemetry": "text text text bigint text",
    "call_fact": " ".join(
        ["text"] + [cast.removeprefix("::") or "text" for _, cast in _CALL_FIELDS]
    ),
}
_UPSERTS = {
    **_FLUSHED,
    "call_fact": (
        "id, " + ", ".join(name for name, _ in _CALL_FIELDS),
        _CALL_UPSERT.removeprefix("ON CONFLICT "),
    ),
}

MIGRATIONS: list[str] = [
    f"""
    CREATE TABLE log (
        pos BIGINT PRIMARY KEY, received BIGINT NOT NULL, line TEXT NOT NULL,
        station TEXT NOT NULL, board TEXT NOT NULL, boot BIGINT NOT NULL, seq BIGINT,
        leaf TEXT NOT NULL, kind TEXT NOT NULL, at BIGINT NOT NULL, message TEXT NOT NULL,
        flags INTEGER NOT NULL DEFAULT 0  -- 1: dated by its receipt (store.FLAG_REDATED)
    );
    -- events waiting behind a gap in their board's seq (see andon.runtime.store)
    CREATE TABLE held (
        board TEXT NOT NULL, seq BIGINT NOT NULL, entry TEXT NOT NULL, PRIMARY KEY (board, seq)
    );
    CREATE UNIQUE INDEX log_event ON log (board, seq, boot) WHERE seq IS NOT NULL;
    CREATE INDEX log_received ON log (received);
    CREATE SEQUENCE log_pos INCREMENT BY {POS_BLOCK};  -- each value starts a block
    CREATE TABLE progress (board TEXT PRIMARY KEY, boot BIGINT NOT NULL, seq BIGINT NOT NULL);
    CREATE TABLE presence (board TEXT PRIMARY KEY, boot BIGINT NOT NULL, online BOOLEAN NOT NULL);
    CREATE TABLE dead_letter (
        id BIGSERIAL PRIMARY KEY, received BIGINT NOT NULL, topic TEXT NOT NULL,
        payload BYTEA NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL,
        size BIGINT NOT NULL DEFAULT 0, sha256 TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX dead_letter_received ON dead_letter (received);
    CREATE TABLE telemetry (
        board TEXT PRIMARY KEY, line TEXT NOT NULL, station TEXT NOT NULL,
        received BIGINT NOT NULL, message TEXT NOT NULL
    );
    -- one projection per set of lines a gateway owned when it took it
    CREATE TABLE projection (
        scope TEXT PRIMARY KEY, pos BIGINT NOT NULL, clock BIGINT NOT NULL, snapshot TEXT NOT NULL
    );
    CREATE TABLE clock (id INTEGER PRIMARY KEY CHECK (id = 1), now BIGINT NOT NULL);
    INSERT INTO clock VALUES (1, 0);
    CREATE TABLE outbox (
        id BIGSERIAL PRIMARY KEY, topic TEXT NOT NULL, payload BYTEA NOT NULL,
        created BIGINT NOT NULL, sent BIGINT, channel TEXT NOT NULL DEFAULT 'mqtt',
        attempts INTEGER NOT NULL DEFAULT 0, failed BIGINT
    );
    CREATE INDEX outbox_pending ON outbox (channel, id) WHERE sent IS NULL AND failed IS NULL;
    -- calls, orders, stops and alerts; `id` is "line/C-L1-000001", so a takeover can drop the
    -- records of the lines it rebuilds (forget_records) and write them again
    CREATE TABLE record (kind TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL,
                         PRIMARY KEY (kind, id));
    -- line ownership (andon.runtime.ownership): the epoch fences every commit
    CREATE TABLE lease (
        line TEXT PRIMARY KEY, owner TEXT NOT NULL, epoch BIGINT NOT NULL,
        expires TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE member (name TEXT PRIMARY KEY, expires TIMESTAMPTZ NOT NULL);
    """,
    """
    -- the plant-wide view follows the log line by line (andon.runtime.replay.LogFollower)
    CREATE INDEX log_line_pos ON log (line, pos);
    """,
    f"""
    -- The calls' times as plain indexed columns, kept by a trigger as the record table is
    -- written (the SQLite store's call_fact): the reports read calls without parsing JSON.
    -- `id` is the record's ("line/C-L1-000001").
    CREATE TABLE call_fact (
        id TEXT PRIMARY KEY, line TEXT, station TEXT, cause TEXT,
        opened BIGINT, acknowledged BIGINT, stopped BIGINT, resolved BIGINT, reason TEXT
    );
    CREATE INDEX call_fact_opened ON call_fact (opened);
    CREATE INDEX call_fact_stopped ON call_fact (line, stopped) WHERE stopped IS NOT NULL;
    CREATE FUNCTION record_call_fact() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO call_fact SELECT {_CALL_COLUMNS.format(record="NEW")}
        {_CALL_UPSERT};
        RETURN NULL;
    END $$;
    CREATE TRIGGER record_call AFTER INSERT OR UPDATE ON record
        FOR EACH ROW WHEN (NEW.kind = 'call') EXECUTE FUNCTION record_call_fact();
    INSERT INTO call_fact SELECT {_CALL_COLUMNS.format(record="record")}
        FROM record WHERE kind = 'call';
    -- a record looked up by its own id, whichever line's it is (`PgStore.record`)
    CREATE INDEX record_key ON record (kind, split_part(id, '/', 2));
    """,
    """
    -- An earlier gateway that owned no line saved its empty plant's projection under the
    -- scope of no line (''); none does now. Such a row reads as the whole plant's: when it
    -- was the latest, `andon replay --check` compared every line with that empty plant and
    -- reported differences that are not in the log.
    DELETE FROM projection WHERE scope = '';
    """,
    f"""
    -- The call_fact trigger parses a call record's JSON once, not once for each of its
    -- columns: under a burst it was the largest part of the server's work for an event.
    CREATE OR REPLACE FUNCTION record_call_fact() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        d jsonb := NEW.data::jsonb;
    BEGIN
        INSERT INTO call_fact VALUES (
            NEW.id, {", ".join(f"(d ->> '{name}'){cast}" for name, cast in _CALL_FIELDS)}
        ) {_CALL_UPSERT};
        RETURN NULL;
    END $$;
    """,
    """
    -- The store writes a call's row of call_fact itself, beside its record, from the values
    -- it has at hand (`_PgTransaction.record`): the trigger parsed each call's JSON again, and
    -- was two thirds of what the server spent on a call record.
    DROP TRIGGER record_call ON record;
    DROP FUNCTION record_call_fact();
    """,
]


def connect(url: str) -> psycopg.Connection:
    db = psycopg.connect(url, autocommit=True)  # transactions are explicit (`transaction()`)
    db.execute("SET synchronous_commit = on")
    return db


def migrate(db: psycopg.Connection, steps: list[str] = MIGRATIONS) -> int:
    """Run the steps this database has not run yet, all in one transaction; the version after."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT version FROM schema_version").fetchone()
        version = row[0] if row else 0
        if version > len(steps):
            raise RuntimeError(f"database schema v{version} is newer than this gateway's")
        for sql in steps[version:]:
            db.execute(sql)
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version VALUES (%s)", (len(steps),))
    return len(steps)


class _Qmark(Statements):
    """A psycopg connection spoken to with SQLite's `?` placeholders: the queries both stores
    share are written once (none of them holds a literal `?`)."""

    @staticmethod
    def spelled(sql: str) -> str:
        return sql.replace("?", "%s")

    def _many(self, sql: str, rows: list[tuple]) -> None:
        with self.db.cursor() as cur:
            cur.executemany(sql, rows)


@dataclass
class _Block:
    """The log positions reserved and not used yet: next..end."""

    next: int = 1
    end: int = 0


@dataclass
class _PgTransaction(_SqliteTransaction):
    block: _Block | None = None
    scope: str = ""
    reserve: Callable[[], int] | None = None  # a new block of positions: its first
    _facts: dict[str, tuple] = field(default_factory=dict)  # call_fact rows, by record id

    def _next_pos(self) -> int:
        if self.block.next > self.block.end:
            start = self.reserve()
            self.block.next, self.block.end = start, start + POS_BLOCK - 1
        self.pos = self.block.next
        self.block.next += 1
        return self.pos

    def _write(self, table: str, rows: list[tuple]) -> None:
        if not rows:
            return
        columns, upsert = _UPSERTS[table]
        if not upsert:  # the log: COPY, the cheapest way in for many rows
            with self.db.db.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as c:
                for row in rows:
                    c.write_row(row)
            return
        # each column as one binary array, unnested by the server: one statement a table, and
        # no value adapted by the client or bound by the server one by one
        arrays = ", ".join(f"%b::{kind}[]" for kind in _COLUMN_TYPES[table].split())
        self.db.db.execute(
            f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) ON CONFLICT {upsert}",
            [list(column) for column in zip(*rows, strict=True)],
        )

    def record(self, kind: str, key: str, data: dict) -> None:
        scoped = f"{data.get('line', '')}/{key}"
        super().record(kind, scoped, data)
        if kind == "call":
            self._facts[scoped] = (scoped, *(data.get(name) for name, _ in _CALL_FIELDS))

    def flush_later(self) -> Callable[[], None]:
        """Also the calls' facts."""
        write, facts = super().flush_later(), list(self._facts.values())

        def write_all() -> None:
            write()
            self._write("call_fact", facts)

        return write_all

    def forget_records(self, lines: set[str]) -> None:
        """Drop the records of these lines: their new owner writes its own (see `record`)."""
        self.db.execute("DELETE FROM record WHERE split_part(id, '/', 1) = ANY(?)", (list(lines),))
        self.db.execute(
            "DELETE FROM call_fact WHERE split_part(id, '/', 1) = ANY(?)", (list(lines),)
        )

    def outbox(self, topic: str, payload: bytes, created: int, channel: str = "mqtt") -> int:
        return self.db.execute(
            "INSERT INTO outbox (topic, payload, created, channel) VALUES (?,?,?,?) RETURNING id",
            (topic, payload, created, channel),
        ).fetchone()[0]

    def save_projection(self, projection: Projection) -> None:
        self.db.execute(
            "INSERT INTO projection VALUES (?,?,?,?) ON CONFLICT (scope) DO UPDATE"
            " SET pos=excluded.pos, clock=excluded.clock, snapshot=excluded.snapshot",
            (self.scope, projection.pos, projection.clock, json.dumps(projection.snapshot)),
        )

    _SET_CLOCK = "UPDATE clock SET now=greatest(now, ?) WHERE id=1"


class PgStore(SqliteStore):
    """The shared store. `owner` names the gateway; `fence` (line -> epoch), once set, is
    checked at every commit; `scope` names the projection this gateway reads and writes."""

    BEGIN = "BEGIN"
    BACKGROUND = True  # the writes are the server's work: the worker goes on meanwhile

    @property
    def dialect(self) -> type[PgReader]:
        return PgReader

    def __init__(
        self,
        url: str,
        owner: str = "",
        dead_letters_max: int = 10_000,
        dead_letters_max_age_ms: int = 7 * 86_400_000,
    ) -> None:
        self.url = url
        self.owner = owner
        self.fence: dict[str, int] | None = None
        self.scope = ""
        raw = connect(url)
        migrate(raw)
        self._attach(_Qmark, raw)
        self._sequence: psycopg.Connection | None = None  # log positions (`_reserve`)
        self._dead_letter_limits = (dead_letters_max, dead_letters_max_age_ms)
        self._known = _Known(pos=0, progress={}, held={}, waiting={}, presence={})
        self._block = _Block()
        self.reload()

    def reload(self) -> None:
        """Forget what the mirror knows of the boards and the reserved positions: after the
        lines this gateway owns changed, another gateway may have written for them."""
        self._read_boards()
        self._block = _Block()

    def _transaction(self) -> _PgTransaction:
        tx = _PgTransaction(self.db, self._known, self._dead_letter_limits)
        tx.block, tx.scope, tx.reserve = self._block, self.scope, self._reserve
        return tx

    def _commit_check(self) -> Callable[[], None]:
        """`Fenced` if a line of the fence, as it is now, changed owner."""
        return partial(self._check_fence, dict(self.fence or {}))

    def _reserve(self) -> int:
        """The first position of a new block, on a connection of its own: a sequence stands
        outside every transaction, so the worker need not wait for the commit in flight."""
        if self._sequence is None:
            self._sequence = connect(self.url)
        return self._sequence.execute("SELECT nextval('log_pos')").fetchone()[0]

    def _check_fence(self, fence: dict[str, int]) -> None:
        if not fence:
            return
        rows = self._direct.execute(
            "SELECT line, owner, epoch FROM lease WHERE line = ANY(?) FOR SHARE", (list(fence),)
        ).fetchall()
        held = {line: epoch for line, owner, epoch in rows if owner == self.owner}
        if held != fence:
            lost = sorted(line for line, epoch in fence.items() if held.get(line) != epoch)
            raise Fenced(f"{self.owner} no longer owns {', '.join(lost)}")

    def close(self) -> None:
        super().close()
        if self._sequence is not None:
            self._sequence.close()

    def record(self, kind: str, key: str) -> dict | None:
        """The record `key`, of whichever line (stored as "line/key", see `_PgTransaction`)."""
        found = self.db.execute(
            "SELECT data FROM record WHERE kind=? AND split_part(id, '/', 2)=? ORDER BY id LIMIT 1",
            (kind, key),
        ).fetchone()
        return json.loads(found[0]) if found else None

    def projection(self) -> Projection | None:
        row = self.db.execute(
            "SELECT pos, clock, snapshot FROM projection WHERE scope=?", (self.scope,)
        ).fetchone()
        return Projection(row[0], row[1], json.loads(row[2])) if row else None

    def projections(self) -> dict[str, Projection]:
        """Each set of lines' projection, as the gateway that owned them last saved it."""
        rows = self.db.execute("SELECT scope, pos, clock, snapshot FROM projection").fetchall()
        return {scope: Projection(pos, clock, json.loads(snap)) for scope, pos, clock, snap in rows}


_CASTS = {"text": "", "int": "::bigint", "bool": "::boolean"}


class PgReader(_Qmark):
    """The shared database in read-only transactions: one snapshot per reader, which sees a
    takeover's rewrite of a line's records whole or not at all."""

    @classmethod
    def open(cls, url: str) -> PgReader | None:
        """None while no gateway has created the schema (it is not created for a reader)."""
        db = psycopg.connect(url)  # not autocommit: all reads in one transaction
        db.read_only = True
        db.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # on one snapshot
        if db.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
            db.close()
            return None
        return cls(db)

    @staticmethod
    def record_table(kind: str) -> str:
        # OFFSET 0 keeps the subquery whole: each row's JSON is parsed once, not per member
        return f"(SELECT id, data::jsonb AS data FROM record WHERE kind = '{kind}' OFFSET 0)"

    @staticmethod
    def field(column: str, name: str, kind: JsonKind = "text") -> str:
        return f"(({column})::jsonb ->> '{name}'){_CASTS[kind]}"

    @staticmethod
    def joined(expr: str) -> str:
        return f"string_agg(({expr})::text, ',')"

    @staticmethod
    def record_id(line: str, key: str) -> str:
        return f"({line} || '/' || {key})"  # as `_PgTransaction.record` keys them

    @staticmethod
    def bytewise(text: str) -> str:
        return f'({text}) COLLATE "C"'

    @staticmethod
    def within(line: str, at: str, spans: Spans) -> tuple[str, list]:
        # each line's spans as one multirange: a lookup per row is a bisection, not a scan
        lines = list(spans)
        ranges = ["{" + ",".join(f"[{s},{e})" for s, e in spans[ln]) + "}" for ln in lines]
        return f"{at} <@ (?::int8multirange[])[array_position(?::text[], {line})]", [ranges, lines]
