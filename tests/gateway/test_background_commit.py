"""The gateway on PostgreSQL commits a batch in the background while it works on the next one
(`PgStore.transaction(background=True)`): nothing of a batch is acknowledged, to the broker or
to a board, before its commit is made, and a batch built on a refused commit is dropped with it.
"""

import psycopg

from andon.config import PlantConfig
from andon.runtime.intake import Inbound
from tests.gateway.intake_kit import Worker, event, plant_config
from tests.gateway.test_store_pg import HELD_S, committed_seqs, lease


def pg_worker(tmp_path, url: str) -> Worker:
    """A worker on PostgreSQL that owns line L1 (epoch 1), as its lease keeper would make it."""
    config = plant_config(tmp_path).model_dump()
    config["store"] = {"url": url}
    worker = Worker(PlantConfig.model_validate(config))
    lease(url, "L1", worker.gateway.store.owner, 1)
    worker.intake.subscribe = worker.intake.unsubscribe = lambda topics: None
    worker.gateway._own({"L1": 1})
    return worker


def close(worker: Worker) -> None:
    worker.close()
    worker.gateway._follower.close()  # the plant-wide view's own connection


def test_a_batch_is_acknowledged_only_once_its_background_commit_is_made(tmp_path, postgres):
    worker = pg_worker(tmp_path, postgres)
    gateway = worker.gateway
    try:
        gateway._inbox.put(None)  # another batch waits: the commit goes to the background
        gateway.store.db.execute(f"SET lock_timeout = '{HELD_S}s'")  # a wait for it fails
        with psycopg.connect(postgres) as blocker:
            blocker.execute("SELECT * FROM lease FOR UPDATE")  # the commit's fence check waits
            mids = worker.feed(event(1))
            assert worker.intake.acked == []
            assert worker.published("ack") == []
            assert len(gateway.plant.snapshot()["calls"]) == 1  # applied, not yet committed
            blocker.rollback()
        gateway._finish_commits()
        assert worker.intake.acked == mids
        assert [a["seq"] for a in worker.published("ack")] == [1]
        assert committed_seqs(postgres) == [1]
    finally:
        close(worker)


def test_a_batch_built_on_a_refused_commit_is_dropped_with_it(tmp_path, postgres):
    worker = pg_worker(tmp_path, postgres)
    gateway = worker.gateway
    try:
        gateway.batch_max = 1  # one message a batch: each commits behind the next
        lease(postgres, "L1", "gw-b", 2)  # another gateway took L1 over
        for seq in (1, 2, 3):
            gateway._inbox.put(Inbound(seq, 1, *event(seq)))
        gateway.store.db.execute(f"SET lock_timeout = '{HELD_S}s'")
        with psycopg.connect(postgres) as blocker:
            blocker.execute("SELECT * FROM lease FOR UPDATE")  # the commit's fence check waits
            gateway._serve_once()
            assert len(gateway._unfinished) == 1  # another message waited: its commit in flight
            blocker.rollback()
        while gateway._unfinished or not gateway._inbox.empty():
            gateway._serve_once()  # refused: the batches built on the first are dropped too
        assert committed_seqs(postgres) == []
        assert worker.published("ack") == []  # the boards send them again, to L1's new owner
        assert worker.intake.acked == [1, 2, 3]  # the broker's copies are done with, once each
        assert gateway.plant.snapshot()["calls"] == []  # the plant is what was committed
    finally:
        close(worker)
