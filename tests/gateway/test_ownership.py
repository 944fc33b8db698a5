"""Line ownership on PostgreSQL: leases split the lines among live gateways, a dead gateway's
lines are taken over under a new epoch, and two gateways serve one plant through a real
Mosquitto, each its own lines."""

from __future__ import annotations

import psycopg
import pytest

from andon.config import PlantConfig
from andon.runtime.ownership import LineLeases
from andon.runtime.store import plant_records
from andon.runtime.store_pg import PgStore
from andon.sim.observe import wait_for
from tests.gateway.test_service import BOARDS, SITE, Watcher, evt

LINES = ["L1", "L2", "L3", "L4"]


def keeper(url: str, name: str, changes: list, lease_s: float = 0.5) -> LineLeases:
    PgStore(url).close()  # the schema
    k = LineLeases(url, name, LINES, lease_s, changes.append)
    k._db = psycopg.connect(url, autocommit=True)
    return k


def test_live_gateways_split_the_lines_and_a_dead_ones_are_taken_over(postgres):
    seen_a, seen_b = [], []
    a, b = keeper(postgres, "gw-a", seen_a), keeper(postgres, "gw-b", seen_b)
    a.tick()
    assert set(a.owned) == set(LINES)  # alone: every line
    b.tick()  # b joins: its share is two lines, none free yet
    a.tick()  # a gives back what is above its share...
    b.tick()  # ...and b takes it
    assert len(a.owned) == len(b.owned) == 2
    assert set(a.owned) | set(b.owned) == set(LINES)
    epochs_of_b = dict(b.owned)
    # b dies: it renews nothing more. Its lines come free when its lease expires.
    wait_for("a owns every line", lambda: a.tick() or set(a.owned) == set(LINES), timeout=10)
    assert all(a.owned[line] == epochs_of_b[line] + 1 for line in epochs_of_b)  # fenced
    assert seen_a[-1] == a.owned
    a._db.close()
    b._db.close()


def plant_config(tmp_path, broker, url: str) -> PlantConfig:
    """Two lines of one station each, on PostgreSQL."""
    lines = [
        {"id": line, "name": line, "stop": {"mode": "seconds", "seconds": 60},
         "stations": [{"id": "S01", "name": "S01", "board": board, "profile": "esp32-devkitc"}]}
        for line, board in zip(["L1", "L2"], BOARDS.values(), strict=True)
    ]  # fmt: skip
    return PlantConfig.model_validate(
        {
            "site": SITE,
            "gateway": {"database": str(tmp_path / "unused.db"), "client_id": "gw", "lease_s": 1},
            "broker": {"host": broker.host, "port": broker.port},
            "store": {"url": url},
            "lines": lines,
        }
    )


@pytest.fixture
def two_gateways(tmp_path, broker, postgres):
    from andon.runtime.service import Gateway

    config = plant_config(tmp_path, broker, postgres)
    watcher = Watcher(broker)
    started = []
    try:
        for name in ("a", "b"):
            started.append(Gateway(config, name=name))
            started[-1].start()
        yield started, watcher, config
    finally:
        watcher.close()
        for gw in started:
            if gw.running:
                gw.stop()


def logged(url: str) -> list[tuple[str, str, int]]:
    with psycopg.connect(url) as db:
        return db.execute("SELECT line, board, seq FROM log WHERE seq IS NOT NULL").fetchall()


def test_two_gateways_serve_their_own_lines_and_one_takes_over_the_others(two_gateways, postgres):
    (a, b), watcher, config = two_gateways
    wait_for("the lines split", lambda: len(a._owned or ()) == len(b._owned or ()) == 1, 15)
    boards = dict(zip(["L1", "L2"], BOARDS.values(), strict=True))

    def acked(line: str, seq: int):
        ack = f"andon/v1/{SITE}/{line}/S01/ack"
        return watcher.wait_for(lambda t, body: t == ack and body.get("seq") == seq, 15)

    for line, board in boards.items():
        watcher.publish(f"andon/v1/{SITE}/{line}/S01/evt", evt(1, board=board))
        acked(line, 1)
    b.stop()  # gives its line back at once
    wait_for("a owns both lines", lambda: a._owned == {"L1", "L2"}, 15)
    for line, board in boards.items():
        watcher.publish(f"andon/v1/{SITE}/{line}/S01/evt", evt(2, "cord_reset", board=board))
        watcher.publish(f"andon/v1/{SITE}/{line}/S01/evt", evt(1, board=board))  # a resend
        acked(line, 2)
    assert sorted(logged(postgres)) == sorted(
        (line, board, seq) for line, board in boards.items() for seq in (1, 2)
    )
    # the plant-wide view, from the shared store: both lines, the cords pulled then reset
    view = a.view()
    assert [line["id"] for line in view["lines"]] == ["L1", "L2"]
    assert [line["stations"][0]["state"] for line in view["lines"]] == ["running", "running"]
    # each line's call, numbered per line (C-L1-000001, C-L2-000001)
    calls = plant_records(config, "call")
    assert sorted((c["line"], c["resolution"]) for c in calls) == [
        ("L1", "cord_reset"),
        ("L2", "cord_reset"),
    ]
