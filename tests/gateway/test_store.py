"""The stores: the event log's identity, progress, presence, outbox and migrations, on SQLite
and on PostgreSQL alike where the test is about the semantics both share."""

import sqlite3

import pytest

from andon.runtime.store import (
    BOOT_AT,
    MIGRATIONS,
    TOP_SEQ,
    Entry,
    Progress,
    Projection,
    SqliteStore,
    migrate,
)
from andon.runtime.store_pg import PgStore


def event(seq: int, base: int | None = None, boot: int = 1, board: str = "B1", received=1000):
    return Entry(
        received=received,
        line="L1",
        station="S01",
        board=board,
        boot=boot,
        leaf="evt",
        kind="cycle",
        at=received,
        message=f'{{"seq": {seq}}}',
        seq=seq,
        base=seq if base is None else base,
    )


def presence(kind: str, boot: int, board: str = "B1") -> Entry:
    return Entry(1000, "L1", "S01", board, boot, "status", kind, 1000, "{}")


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request, tmp_path):
    """Opens the store (again) on one database: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        target, kind = tmp_path / "andon.db", SqliteStore
    else:
        target, kind = request.getfixturevalue("postgres"), PgStore
    opened = []

    def open_again():
        opened.append(kind(target))
        return opened[-1]

    yield open_again
    for s in opened:
        s.close()


@pytest.fixture
def store(open_store):
    return open_store()


def test_the_database_is_in_wal_mode_with_full_sync(tmp_path):
    store = SqliteStore(tmp_path / "andon.db")
    assert store.db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert store.db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    store.close()


def test_an_event_is_logged_once_whatever_the_deliveries(store):
    with store.transaction() as tx:
        first = tx.append(event(1))
        again = tx.append(event(1))
    with store.transaction() as tx:
        later = tx.append(event(1))
        other_boot = tx.append(event(1, boot=2))
    assert first == 1
    assert again is None
    assert later is None
    assert other_boot == 2  # (board, boot, seq) is the identity
    assert [e.pos for e in store.log()] == [1, 2]


def test_progress_is_the_highest_contiguous_seq(store):
    with store.transaction() as tx:
        tx.append(event(1))
        tx.append(event(3, base=1))
        assert tx.touched == {"B1": Progress(1, 1)}  # 2 is missing
    with store.transaction() as tx:
        tx.append(event(2, base=1))
        assert tx.touched == {"B1": Progress(1, 3)}
    assert store.progress() == {"B1": Progress(1, 3)}


def test_everything_below_base_counts_as_stored(store):
    with store.transaction() as tx:
        tx.append(event(41, base=40, boot=7))
    # 1..39 were acknowledged before (by this gateway's earlier database, say); 40 is not here
    assert store.progress() == {"B1": Progress(7, 39)}
    with store.transaction() as tx:
        tx.append(event(40, base=40, boot=7))
    assert store.progress() == {"B1": Progress(7, 41)}


def test_progress_follows_seq_across_boots(store):
    with store.transaction() as tx:
        tx.append(event(1, boot=1))
        tx.append(event(2, boot=2))
    assert store.progress() == {"B1": Progress(2, 2)}


def test_progress_survives_reopening(open_store):
    s = open_store()
    with s.transaction() as tx:
        tx.append(event(1))
        tx.append(event(2))
    s.close()
    assert open_store().progress() == {"B1": Progress(1, 2)}


def test_a_failed_transaction_stores_nothing(store):
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.append(event(1))
        tx.outbox("t", b"x", 1)
        raise RuntimeError("crash before commit")
    assert list(store.log()) == []
    assert store.progress() == {}
    assert store.unsent() == []


def test_a_repeated_birth_is_no_news_but_a_will_then_a_birth_are(store):
    with store.transaction() as tx:
        logged = [
            tx.append(presence("birth", 7)),
            tx.append(presence("birth", 7)),  # the retained birth, seen again on resubscribe
            tx.append(presence("will", 7)),
            tx.append(presence("birth", 7)),  # reconnected within the same boot
            tx.append(presence("birth", 8)),
        ]
    assert [p is not None for p in logged] == [True, False, True, True, True]
    assert store.progress() == {}  # presence is not an event


def test_dead_letters_are_kept_and_counted(store):
    with store.transaction() as tx:
        tx.dead_letter(1, "andon/v1/P/L1/S01/evt", b"not json", "json", "Expecting value")
        tx.dead_letter(2, "andon/v1/P/L1/S01/evt", b"{}", "schema", "board: missing")
        tx.dead_letter(3, "andon/v1/P/L1/S02/evt", b"{}", "schema", "board: missing")
    assert store.rejections() == {"json": 1, "schema": 2}
    assert store.dead_letters()[0] == (
        1,
        "andon/v1/P/L1/S01/evt",
        b"not json",
        "json",
        "Expecting value",
    )


def test_the_outbox_keeps_a_message_until_marked_sent(store):
    with store.transaction() as tx:
        first = tx.outbox("andon/v1/P/alert", b"a", 5)
        second = tx.outbox("andon/v1/P/kanban/X/replenish", b"r", 5)
    with store.transaction() as tx:
        tx.mark_sent([first], 6)
    assert store.unsent() == [(second, "andon/v1/P/kanban/X/replenish", b"r")]


def test_calls_and_orders_keep_their_latest_version(store):
    with store.transaction() as tx:
        tx.record("call", "C-000001", {"id": "C-000001", "acknowledged": None})
        tx.record("call", "C-000001", {"id": "C-000001", "acknowledged": 5})
        tx.record("order", "K-000001", {"id": "K-000001"})
    assert store.records("call") == [{"id": "C-000001", "acknowledged": 5}]
    assert store.records("order") == [{"id": "K-000001"}]


def test_projection_clock_and_telemetry_round_trip(store):
    assert store.projection() is None
    assert store.clock() == 0
    with store.transaction() as tx:
        tx.save_projection(Projection(pos=3, clock=99, snapshot={"stations": {"S01": "called"}}))
        tx.set_clock(120)
        tx.telemetry(100, "L1", "S01", "B1", '{"rssi": -60}')
    assert store.projection() == Projection(3, 99, {"stations": {"S01": "called"}})
    assert store.clock() == 120
    assert store.telemetry() == {"B1": {"rssi": -60}}


def test_log_reads_from_a_position_or_a_time(store):
    with store.transaction() as tx:
        for seq, received in [(1, 100), (2, 200), (3, 300)]:
            tx.append(event(seq, received=received))
    assert [e.pos for e in store.log(after=1)] == [2, 3]
    assert [e.received for e in store.log(since=200)] == [200, 300]


def test_reopening_runs_no_migration_twice(tmp_path):
    path = tmp_path / "andon.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    try:
        assert migrate(db) == len(MIGRATIONS)
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]
    finally:
        db.close()


def test_an_upgrade_runs_only_the_new_steps_and_keeps_the_data(tmp_path):
    path = tmp_path / "andon.db"
    s = SqliteStore(path)
    with s.transaction() as tx:
        tx.append(event(1))
    s.close()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        step = "ALTER TABLE log ADD COLUMN note TEXT"
        assert migrate(db, [*MIGRATIONS, step]) == len(MIGRATIONS) + 1
        assert db.execute("SELECT seq, note FROM log").fetchall() == [(1, None)]
    finally:
        db.close()


def test_a_database_newer_than_the_gateway_is_refused(tmp_path):
    path = tmp_path / "andon.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE schema_version SET version = version + 1")
    db.close()
    with pytest.raises(RuntimeError, match="newer than this gateway"):
        SqliteStore(path)


def test_after_reopening_a_duplicate_is_still_known_and_a_gap_still_filled(open_store):
    s = open_store()
    with s.transaction() as tx:
        tx.append(event(1))
        tx.append(event(3, base=1))  # 2 is missing: 3 waits above the progress
    s.close()
    s = open_store()
    with s.transaction() as tx:
        again = tx.append(event(3, base=1))
        filled = tx.append(event(2, base=1))
    assert again is None
    assert filled > 2  # after both (PostgreSQL: in a new block of positions)
    assert s.progress() == {"B1": Progress(1, 3)}
    assert [e.message for e in s.log()] == ['{"seq": 1}', '{"seq": 3}', '{"seq": 2}']


def test_webhook_deliveries_wait_in_the_outbox_apart_from_mqtt(store):
    with store.transaction() as tx:
        alert = tx.outbox("andon/v1/P/alert", b"a", 5)
        hook = tx.outbox("http://hooks.example/andon", b"a", 5, channel="webhook")
        other = tx.outbox("http://hooks.example/andon", b"b", 5, channel="webhook")
    assert store.unsent() == [(alert, "andon/v1/P/alert", b"a")]
    assert store.pending_webhooks() == [
        (hook, "http://hooks.example/andon", b"a", 0),
        (other, "http://hooks.example/andon", b"b", 0),
    ]
    with store.transaction() as tx:
        tx.webhook_tried(hook, 1, delivered=None, gave_up=None)  # failed, to be tried again
        tx.webhook_tried(other, 3, delivered=None, gave_up=9)
    assert store.pending_webhooks() == [(hook, "http://hooks.example/andon", b"a", 1)]
    assert store.webhooks_given_up() == 1
    with store.transaction() as tx:
        tx.webhook_tried(hook, 2, delivered=10, gave_up=None)
    assert store.pending_webhooks() == []
    assert store.webhooks_given_up() == 1


@pytest.mark.parametrize(
    "query", [TOP_SEQ, BOOT_AT, BOOT_AT + " AND boot=?"], ids=["top", "boot", "boot-of"]
)
def test_per_board_lookups_search_the_event_index_not_the_whole_log(tmp_path, query):
    # Each board's first event after a restart looks its history up: a scan of a log of a
    # million events per board would stall the worker for seconds.
    store = SqliteStore(tmp_path / "andon.db")
    try:
        plan = store.db.execute(f"EXPLAIN QUERY PLAN {query}", ("B1", 1, 1)[: query.count("?")])
        details = " ".join(row[3] for row in plan)
    finally:
        store.close()
    assert "USING COVERING INDEX log_event" in details
