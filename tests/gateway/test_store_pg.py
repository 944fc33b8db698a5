"""What the PostgreSQL store adds to the shared semantics (tests/gateway/test_store.py): its
durability setting, its migrations, positions for several writers, and the fence."""

import json

import psycopg
import pytest

from andon.runtime.store import Fenced, Projection
from andon.runtime.store_pg import MIGRATIONS, POS_BLOCK, PgStore, migrate
from tests.gateway.test_store import event


@pytest.fixture
def pg(postgres):
    s = PgStore(postgres, owner="gw-a")
    yield s
    s.close()


def lease(url: str, line: str, owner: str, epoch: int) -> None:
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "INSERT INTO lease VALUES (%s, %s, %s, now() + interval '1 minute')"
            " ON CONFLICT (line) DO UPDATE SET owner=excluded.owner, epoch=excluded.epoch",
            (line, owner, epoch),
        )


def test_a_commit_waits_for_the_disk(pg):
    assert pg.db.execute("SHOW synchronous_commit").fetchone() == ("on",)


def test_migrations_run_once_and_a_newer_database_is_refused(pg, postgres):
    with psycopg.connect(postgres, autocommit=True) as db:
        assert migrate(db) == len(MIGRATIONS)
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]
        db.execute("UPDATE schema_version SET version = version + 1")
    with pytest.raises(RuntimeError, match="newer than this gateway"):
        PgStore(postgres)


def test_two_gateways_append_to_one_log_without_sharing_a_position(pg, postgres):
    other = PgStore(postgres, owner="gw-b")
    try:
        with pg.transaction() as tx:
            [(mine, _)] = tx.append(event(1, board="B1"))
        with other.transaction() as tx:
            [(theirs, _)] = tx.append(event(1, board="B2"))
        with pg.transaction() as tx:
            [(mine_next, _)] = tx.append(event(2, board="B1"))
    finally:
        other.close()
    assert (mine, mine_next) == (1, 2)  # the block gw-a reserved
    assert theirs == 1 + POS_BLOCK  # gw-b's own block
    assert [e.pos for e in pg.log()] == [1, 2, 1 + POS_BLOCK]


def test_a_gateway_whose_lease_was_taken_over_cannot_commit(pg, postgres):
    lease(postgres, "L1", "gw-a", 1)
    pg.fence = {"L1": 1}
    with pg.transaction() as tx:
        tx.append(event(1))
    lease(postgres, "L1", "gw-b", 2)  # gw-a paused; gw-b took the line over
    with pytest.raises(Fenced, match="gw-a no longer owns L1"), pg.transaction() as tx:
        tx.append(event(2))
    assert [e.message for e in pg.log()] == ['{"seq": 1}']


HELD_S = 20  # the longest a test holds a commit back


def committed_seqs(url: str) -> list[int]:
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT message FROM log ORDER BY pos").fetchall()
    return [json.loads(message)["seq"] for (message,) in rows]


def test_a_background_commit_is_made_while_the_next_batch_builds_on_it(pg, postgres):
    lease(postgres, "L1", "gw-a", 1)
    pg.fence = {"L1": 1}
    pg.db.execute(f"SET lock_timeout = '{HELD_S}s'")  # a commit made at once fails, not hangs
    with psycopg.connect(postgres) as blocker:
        blocker.execute("SELECT * FROM lease FOR UPDATE")  # the commits' fence checks wait
        with pg.transaction(background=True) as first:
            first.append(event(1))
        with pg.transaction(background=True) as second:
            logged = second.append(event(2, base=1))  # after seq 1, which is not committed yet
        assert [pos for pos, _ in logged] == [2]
        assert not first.in_flight.done()
        assert committed_seqs(postgres) == []  # nothing is acknowledged on that
        blocker.rollback()
    pg.settle()
    assert second.in_flight.done()
    assert committed_seqs(postgres) == [1, 2]


def test_a_refused_background_commit_takes_the_ones_queued_behind_it_along(pg, postgres):
    lease(postgres, "L1", "gw-a", 1)
    pg.fence = {"L1": 1}
    lease(postgres, "L1", "gw-b", 2)  # gw-b took the line over before these commits are made
    with pg.transaction(background=True) as first:
        first.append(event(1))
    with pg.transaction(background=True) as second:
        second.append(event(2))
    with pytest.raises(Fenced, match="gw-a no longer owns L1"):
        first.in_flight.result()
    with pytest.raises(RuntimeError, match="the commit before it failed"):
        second.in_flight.result()
    with pytest.raises(Fenced):
        pg.settle()
    assert committed_seqs(postgres) == []
    lease(postgres, "L1", "gw-a", 3)  # its own again: the store commits again, after a reload
    pg.fence = {"L1": 3}
    pg.reload()
    with pg.transaction(background=True) as tx:
        tx.append(event(1))
    pg.settle()
    assert committed_seqs(postgres) == [1]


def test_calls_of_two_lines_with_the_same_number_are_both_kept(pg):
    # records are kept by line: the same id on two lines (fixture data) stays two records
    with pg.transaction() as tx:
        tx.record("call", "C-000001", {"id": "C-000001", "line": "L1"})
        tx.record("call", "C-000001", {"id": "C-000001", "line": "L2"})
    assert pg.records("call") == [
        {"id": "C-000001", "line": "L1"},
        {"id": "C-000001", "line": "L2"},
    ]


def test_a_record_is_found_by_its_own_id_whichever_lines_it_is(pg):
    # the console annotates a closed call by its id alone (service._place_of)
    with pg.transaction() as tx:
        tx.record("call", "C-L2-000007", {"id": "C-L2-000007", "line": "L2", "station": "S3"})
    assert pg.record("call", "C-L2-000007") == {"id": "C-L2-000007", "line": "L2", "station": "S3"}
    assert pg.record("call", "C-L2-000008") is None
    assert pg.record("order", "C-L2-000007") is None


def call_facts(url: str) -> list[tuple]:
    with psycopg.connect(url) as db:
        return db.execute(
            "SELECT id, line, station, cause, opened, acknowledged, resolved, reason"
            " FROM call_fact ORDER BY id"
        ).fetchall()


def a_call(line: str, acknowledged: int | None = None, reason: str | None = None) -> dict:
    return {
        "id": "C-000001", "line": line, "station": "S1", "cause": "quality", "opened": 100,
        "acknowledged": acknowledged, "stopped": None, "resolved": None, "reason": reason,
    }  # fmt: skip


def test_call_fact_follows_each_calls_latest_version_and_a_takeovers_rewrite(pg, postgres):
    with pg.transaction() as tx:
        tx.record("call", "C-000001", a_call("L1"))
        tx.record("call", "C-000001", a_call("L2"))
        tx.record("order", "K1", {"id": "K1", "line": "L1"})  # not a call: not a fact
    with pg.transaction() as tx:
        tx.record("call", "C-000001", a_call("L1", acknowledged=160, reason="tooling"))
    assert call_facts(postgres) == [
        ("L1/C-000001", "L1", "S1", "quality", 100, 160, None, "tooling"),
        ("L2/C-000001", "L2", "S1", "quality", 100, None, None, None),
    ]
    with pg.transaction() as tx:  # a new owner of L1 replays it and writes its records anew
        tx.forget_records({"L1"})
    assert [fact[0] for fact in call_facts(postgres)] == ["L2/C-000001"]


def test_the_migration_to_call_fact_fills_it_from_the_calls_already_stored(postgres):
    with psycopg.connect(postgres, autocommit=True) as db:
        migrate(db, MIGRATIONS[:1])  # a database of the first PostgreSQL store
        db.execute(
            "INSERT INTO record VALUES ('call', 'L1/C-000001', %s)",
            (json.dumps(a_call("L1", acknowledged=130)),),
        )
    PgStore(postgres).close()  # migrates
    assert call_facts(postgres) == [("L1/C-000001", "L1", "S1", "quality", 100, 130, None, None)]


def test_an_old_empty_scope_projection_is_dropped_and_the_lines_projections_kept(postgres):
    """What an earlier gateway that owned no line saved (scope ''): gone at the next open."""
    with psycopg.connect(postgres, autocommit=True) as db:
        migrate(db, MIGRATIONS[:3])  # the schema before the migration that drops it
        for scope, pos in {"": 9, "L1": 2, "L1,L2": 3}.items():
            db.execute("INSERT INTO projection VALUES (%s, %s, 0, %s)", (scope, pos, '{"v": 1}'))
    store = PgStore(postgres)  # migrates
    try:
        assert store.projections() == {
            "L1": Projection(2, 0, {"v": 1}),
            "L1,L2": Projection(3, 0, {"v": 1}),
        }
        assert store.projection() is None  # the scope of a store owning no line
    finally:
        store.close()


def test_each_set_of_lines_keeps_its_projection_apart(pg):
    saved = {"": 1, "L1": 2, "L1,L2": 3}  # scope -> position; "": a store of the whole plant
    for scope, pos in saved.items():
        pg.scope = scope
        with pg.transaction() as tx:
            tx.save_projection(Projection(pos, 0, {"scope": scope}))
    assert pg.projections() == {s: Projection(p, 0, {"scope": s}) for s, p in saved.items()}
    assert pg.projection() == Projection(3, 0, {"scope": "L1,L2"})  # its own scope's
