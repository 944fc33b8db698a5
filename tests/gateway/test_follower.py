"""The plant-wide view a gateway of several serves (`LogFollower`): the shared log followed line
by line, on a real PostgreSQL, where gateways write positions from blocks of their own."""

from __future__ import annotations

from andon import contract
from andon.config import PlantConfig
from andon.runtime.replay import LogFollower, rebuild
from andon.runtime.service import entry_of
from andon.runtime.store_pg import POS_BLOCK, PgStore
from tests.gateway.test_service import BOARDS, SITE, TS0, evt

LINES = {"L1": BOARDS["S01"], "L2": BOARDS["S02"]}  # one station S01 a line, its board


def two_lines(url: str) -> PlantConfig:
    lines = [
        {"id": line, "name": line, "stations": [
            {"id": "S01", "name": "S01", "board": board, "profile": "esp32-devkitc"}]}
        for line, board in LINES.items()
    ]  # fmt: skip
    return PlantConfig.model_validate(
        {
            "site": SITE,
            "gateway": {"database": "unused.db"},
            "store": {"url": url},
            "broker": {"host": "127.0.0.1", "port": 1},
            "lines": lines,
        }
    )


def log(store: PgStore, line: str, seq: int, kind: str) -> int:
    """One event of the line's board, committed by this gateway; its log position."""
    topic = contract.Station(SITE, line, "S01").topic("evt")
    _, message = contract.decode_uplink(topic, evt(seq, kind, board=LINES[line]))
    with store.transaction() as tx:
        [(pos, _)] = tx.append(entry_of(TS0 + seq, line, "S01", message))
    return pos


def states(view: dict) -> dict[str, str]:
    return {line["id"]: line["state"] for line in view["lines"]}


def test_the_view_follows_each_line_and_misses_no_event_committed_out_of_position_order(
    postgres,
):
    config = two_lines(postgres)
    gw_a, gw_b = PgStore(postgres, owner="gw-a"), PgStore(postgres, owner="gw-b")
    follower = LogFollower(config)
    try:
        assert log(gw_a, "L1", 1, "cord_pulled") == 1  # gw-a's block starts at 1
        assert log(gw_b, "L2", 1, "cord_pulled") == 1 + POS_BLOCK  # gw-b's at 1001
        assert states(follower.view(TS0 + 10)) == {"L1": "called", "L2": "called"}
        # gw-a commits from its block only now: position 2, below the 1001 already seen.
        # Following the log by one position (all after 1001) would never see it.
        assert log(gw_a, "L1", 2, "cord_reset") == 2
        view = follower.view(TS0 + 20)
        assert states(view) == {"L1": "running", "L2": "called"}
        assert log(gw_b, "L2", 2, "cord_reset") == 2 + POS_BLOCK
        view = follower.view(TS0 + 30)
        whole, _, _ = rebuild(config, gw_a, from_scratch=True)  # the whole log, once
        whole.advance(TS0 + 30)
        assert view == whole.view()
        assert follower._catch_up(gw_a) == 0  # each event was read once: nothing is left
    finally:
        follower.close()
        gw_a.close()
        gw_b.close()


def test_a_gateway_owning_no_line_yet_rebuilds_without_reading_the_log(postgres):
    """At its start a gateway of several owns no line yet: its empty plant needs no entry of
    the shared log, so the log (all of it, without a projection of no line) is not read."""
    config = two_lines(postgres)
    store = PgStore(postgres, owner="gw-a")
    try:
        log(store, "L1", 1, "cord_pulled")
        read, log_of = [], store.log
        store.log = lambda after=0, since=None: read.append(after) or log_of(after, since)
        assert rebuild(config.only_lines(set()), store)[1:] == (0, 0)  # position, replayed
        assert read == []
        assert rebuild(config.only_lines({"L1"}), store)[1:] == (1, 1)
        assert read == [0]
    finally:
        store.close()
