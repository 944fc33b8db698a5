"""What the PostgreSQL store adds to the shared semantics (tests/gateway/test_store.py): its
durability setting, its migrations, positions for several writers, and the fence."""

import psycopg
import pytest

from andon.runtime.store import Fenced
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


def test_calls_of_two_lines_with_the_same_number_are_both_kept(pg):
    # records are kept by line: the same id on two lines (fixture data) stays two records
    with pg.transaction() as tx:
        tx.record("call", "C-000001", {"id": "C-000001", "line": "L1"})
        tx.record("call", "C-000001", {"id": "C-000001", "line": "L2"})
    assert pg.records("call") == [
        {"id": "C-000001", "line": "L1"},
        {"id": "C-000001", "line": "L2"},
    ]
