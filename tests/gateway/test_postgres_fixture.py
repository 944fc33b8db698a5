"""The throwaway PostgreSQL of the tests: a real server, and gone after the block even when the
block fails."""

import psycopg
import pytest

from andon.sim.postgres import start_postgres


def test_the_cluster_serves_then_is_stopped_and_removed_even_after_a_failure():
    with pytest.raises(RuntimeError, match="the test failed"), start_postgres() as cluster:
        with psycopg.connect(cluster.url) as db:
            assert db.execute("SELECT current_database()").fetchone() == ("andon",)
        raise RuntimeError("the test failed")
    assert not cluster.workdir.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.url, connect_timeout=2)
