"""The stores: the event log's identity, progress, presence, outbox and migrations, on SQLite
and on PostgreSQL alike where the test is about the semantics both share."""

import hashlib
import json
import sqlite3

import pytest

from andon.runtime.store import (
    DEAD_LETTER_KEEP,
    GAP,
    MIGRATIONS,
    Entry,
    Progress,
    Projection,
    SeqJump,
    SqliteStore,
    migrate,
)
from andon.runtime.store_pg import PgStore

CAP = 400  # the boards' outbox capacity: the largest jump in seq taken


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


def positions(logged: list[tuple[int, Entry]]) -> list[tuple[int, int | None]]:
    return [(pos, e.seq) for pos, e in logged]


def test_an_event_is_logged_once_whatever_the_deliveries(store):
    with store.transaction() as tx:
        first = tx.append(event(1), CAP)
        again = tx.append(event(1), CAP)
    with store.transaction() as tx:
        later = tx.append(event(1), CAP)
        other_boot = tx.append(event(1, boot=2), CAP)
        assert tx.touched == {"B1": Progress(1, 1)}  # a replay is acknowledged again
    assert positions(first) == [(1, 1)]
    assert again == later == []
    assert other_boot == []  # at or below progress: a replay, whatever its boot
    assert [e.pos for e in store.log()] == [1]


def test_progress_is_the_highest_contiguous_seq(store):
    with store.transaction() as tx:
        tx.append(event(1), CAP)
        assert tx.append(event(3, base=1), CAP) == []  # 2 is missing: 3 waits
        assert tx.touched == {"B1": Progress(1, 1)}
    assert store.held() == {"B1": [3]}
    with store.transaction() as tx:
        assert positions(tx.append(event(2, base=1), CAP)) == [(2, 2), (3, 3)]
        assert tx.touched == {"B1": Progress(1, 3)}
    assert store.progress() == {"B1": Progress(1, 3)}
    assert store.held() == {}
    assert [json.loads(e.message)["seq"] for e in store.log()] == [1, 2, 3]  # in seq order


def test_everything_below_base_counts_as_stored(store):
    with store.transaction() as tx:
        tx.append(event(41, base=40, boot=7), CAP)
    # 1..39 were acknowledged before (by this gateway's earlier database, say); 40 is not here
    assert store.progress() == {"B1": Progress(7, 39)}
    with store.transaction() as tx:
        tx.append(event(40, base=40, boot=7), CAP)
    assert store.progress() == {"B1": Progress(7, 41)}


def test_a_base_past_progress_declares_the_events_below_it_lost(store):
    with store.transaction() as tx:
        tx.append(event(1), CAP)
        tx.append(event(3, base=1), CAP)  # held: 2 is missing
    with store.transaction() as tx:
        logged = tx.append(event(6, base=5), CAP)  # the board no longer holds 2 or 4
    assert [(e.kind, e.seq) for _, e in logged] == [(GAP, None), ("cycle", 3), (GAP, None)]
    gaps = [json.loads(e.message) for _, e in logged if e.kind == GAP]
    assert gaps == [{"board": "B1", "first": 2, "last": 2}, {"board": "B1", "first": 4, "last": 4}]
    assert store.progress() == {"B1": Progress(1, 4)}  # 5 is still in the board's outbox
    assert store.held() == {"B1": [6]}


def test_a_gap_is_declared_lost_after_its_timeout_and_what_waited_applies(store):
    with store.transaction() as tx:
        tx.append(event(1, received=1000), CAP)
        tx.append(event(3, base=1, received=2000), CAP)
        tx.append(event(4, base=1, received=2500), CAP)
    assert store.next_gap_deadline(30_000) == 32_000
    with store.transaction() as tx:
        assert tx.expire(31_999, 30_000) == []
        logged = tx.expire(32_000, 30_000)
    assert [(e.kind, e.seq, e.received) for _, e in logged] == [
        (GAP, None, 32_000),
        ("cycle", 3, 32_000),  # logged when applied: the log's time never goes back
        ("cycle", 4, 32_000),
    ]
    assert store.progress() == {"B1": Progress(1, 4)}
    assert store.next_gap_deadline(30_000) is None


def test_a_jump_past_the_outbox_is_refused_and_moves_nothing(store):
    with store.transaction() as tx:
        tx.append(event(1), CAP)
    with pytest.raises(SeqJump), store.transaction() as tx:
        tx.append(event(10**6, base=10**6), CAP)
    with store.transaction() as tx:
        tx.append(event(1 + CAP, base=2), CAP)  # as far as an outbox reaches: it waits
    assert store.progress() == {"B1": Progress(1, 1)}
    assert store.held() == {"B1": [1 + CAP]}


def test_progress_follows_seq_across_boots(store):
    with store.transaction() as tx:
        tx.append(event(1, boot=1), CAP)
        tx.append(event(2, boot=2), CAP)
    assert store.progress() == {"B1": Progress(2, 2)}


def test_progress_survives_reopening(open_store):
    s = open_store()
    with s.transaction() as tx:
        tx.append(event(1), CAP)
        tx.append(event(2), CAP)
    s.close()
    assert open_store().progress() == {"B1": Progress(1, 2)}


def test_a_failed_transaction_stores_nothing(store):
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.append(event(1), CAP)
        tx.outbox("t", b"x", 1)
        raise RuntimeError("crash before commit")
    assert list(store.log()) == []
    assert store.progress() == {}
    assert store.unsent() == []


def test_a_repeated_birth_is_no_news_but_a_will_then_a_birth_are(store):
    with store.transaction() as tx:
        logged = [
            tx.append(presence("birth", 7), CAP),
            tx.append(presence("birth", 7), CAP),  # the retained birth, seen again on resubscribe
            tx.append(presence("will", 7), CAP),
            tx.append(presence("birth", 7), CAP),  # reconnected within the same boot
            tx.append(presence("birth", 8), CAP),
        ]
    assert [bool(p) for p in logged] == [True, False, True, True, True]
    assert store.progress() == {}  # presence is not an event


def test_a_will_counts_only_for_the_current_session(store):
    with store.transaction() as tx:
        logged = [
            tx.append(presence("will", 3), CAP),  # no session known yet
            tx.append(presence("birth", 7), CAP),
            tx.append(presence("will", 2**52), CAP),  # bogus: not this session's boot
            tx.append(presence("will", 6), CAP),  # an earlier boot's, delivered late
            tx.append(presence("birth", 6), CAP),  # an earlier boot's birth, late
            tx.append(presence("will", 7), CAP),
        ]
    assert [bool(p) for p in logged] == [False, True, False, False, False, True]


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
            tx.append(event(seq, received=received), CAP)
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
        tx.append(event(1), CAP)
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
        tx.append(event(1), CAP)
        tx.append(event(3, base=1), CAP)  # 2 is missing: 3 waits above the progress
    s.close()
    s = open_store()
    assert s.held() == {"B1": [3]}
    with s.transaction() as tx:
        again = tx.append(event(3, base=1), CAP)
        filled = tx.append(event(2, base=1), CAP)
    assert again == []
    assert [seq for _, seq in positions(filled)] == [2, 3]  # in seq order, whatever positions
    assert s.progress() == {"B1": Progress(1, 3)}
    assert s.held() == {}


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


def test_dead_letters_keep_a_kib_a_digest_and_the_size(store):
    big = b"x" * (1 << 20)
    with store.transaction() as tx:
        tx.dead_letter(5, "andon/v1/P/L1/S01/evt", big, "size", "too big")
    payload = store.dead_letters()[0][2]
    assert payload == big[:DEAD_LETTER_KEEP]
    row = store.db.execute("SELECT size, sha256 FROM dead_letter").fetchone()
    assert row == (len(big), hashlib.sha256(big).hexdigest())


def test_dead_letters_are_capped_by_rows_and_by_age(tmp_path):
    store = SqliteStore(tmp_path / "andon.db", dead_letters_max=3, dead_letters_max_age_ms=1000)
    try:
        with store.transaction() as tx:
            for received in (100, 5000, 5001, 5002, 5003):
                tx.dead_letter(received, "t", b"{}", "json", "bad")
        assert [r[0] for r in store.dead_letters()] == [5001, 5002, 5003]
        with store.transaction() as tx:
            tx.dead_letter(6500, "t", b"{}", "schema", "bad")
        assert [r[0] for r in store.dead_letters()] == [6500]  # the rest is over a second old
        found = store.recent_rejections(since=6000)
        assert found["by_reason"] == {"schema": {"count": 1, "last": 6500}}
    finally:
        store.close()
