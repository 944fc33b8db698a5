"""Line ownership on PostgreSQL: leases split the lines among live gateways, a dead gateway's
lines are taken over under a new epoch, the lines a kanban loop links are owned together, and
two gateways serve one plant through a real Mosquitto, each its own lines."""

from __future__ import annotations

import json
import time
from datetime import datetime

import psycopg
import pytest
import tomli_w

from andon.config import PlantConfig
from andon.runtime.ownership import LineLeases
from andon.runtime.store import plant_records
from andon.runtime.store_pg import PgStore
from andon.sim.observe import wait_for
from tests.gateway.test_service import BOARDS, SITE, TS0, Watcher, evt

LINES = ["L1", "L2", "L3", "L4"]


def plant(url: str, lines: list[str], loops: list[tuple[str, str]] = (), **sections) -> PlantConfig:
    """A line per id with one station S01 (boards B0000000001, ...) that posts and receives
    cards, a kanban loop per (post line, receive line), on PostgreSQL; `sections` added."""
    config = {
        "site": SITE,
        "store": {"url": url},
        "lines": [
            {"id": line, "name": line, "stop": {"mode": "seconds", "seconds": 60},
             "stations": [{"id": "S01", "name": "S01", "board": f"B{n:010d}",
                           "profile": "esp32-devkitc", "readers": ["post", "receive"]}]}
            for n, line in enumerate(lines, start=1)
        ],
        "kanban": [
            {"part": f"P{n}", "bin_qty": 10, "cards": [f"C{n:07X}"], "supplier": "ACME",
             "lead_time_s": 3600, "post": f"{post}/S01", "receive": f"{receive}/S01"}
            for n, (post, receive) in enumerate(loops, start=1)
        ],
    }  # fmt: skip
    return PlantConfig.model_validate(config | sections)


def keeper(
    url: str, name: str, changes: list, groups: list[list[str]] | None = None, lease_s=0.5
) -> LineLeases:
    PgStore(url).close()  # the schema
    groups = groups or [[line] for line in LINES]
    k = LineLeases(url, name, groups, lease_s, changes.append)
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


def test_the_lines_a_kanban_loop_links_are_one_group_transitively():
    config = plant(
        "postgresql://", ["L1", "L2", "L3", "L4", "L5"], loops=[("L4", "L2"), ("L5", "L4")]
    )
    assert config.line_groups() == [["L1"], ["L2", "L4", "L5"], ["L3"]]
    assert plant("postgresql://", ["L1", "L2"], loops=[("L1", "L1")]).line_groups() == [
        ["L1"],
        ["L2"],
    ]


def test_a_kanban_loops_lines_are_owned_together_as_gateways_join_and_leave(postgres):
    groups = plant(postgres, LINES, loops=[("L3", "L1")]).line_groups()
    assert groups == [["L1", "L3"], ["L2"], ["L4"]]

    def join(name: str) -> LineLeases:  # a lease long enough that no round outlasts it
        return keeper(postgres, name, [], groups, lease_s=2)

    keepers = {name: join(name) for name in ("gw-a", "gw-b", "gw-c")}
    live: list[LineLeases] = []
    owners_of_l1_l3 = []  # after every tick, as the database and as the keepers see them

    def round_of_ticks() -> bool:
        """Each live keeper ticks once: did any keeper's lines change?"""
        before = [dict(k.owned) for k in live]
        for k in live:
            k.tick()
            with psycopg.connect(postgres) as db:
                owners = dict(db.execute("SELECT line, owner FROM lease WHERE expires > now()"))
            owners_of_l1_l3.append((owners.get("L1"), owners.get("L3")))
            owners_of_l1_l3.append(tuple(k.name if ln in k.owned else None for ln in ("L1", "L3")))
        return before != [k.owned for k in live]

    def settled() -> bool:
        """A round that changed nothing, with every line owned by a live keeper."""
        return not round_of_ticks() and sorted(ln for k in live for ln in k.owned) == LINES

    try:
        for step in ("+gw-a", "+gw-b", "+gw-c", "-gw-a", "+gw-a", "kill gw-b"):
            action, name = step[0], step.lstrip("+-").removeprefix("kill ")
            if action == "+":
                live.append(keepers[name])
            elif action == "-":  # stops: gives its lines back at once
                live.remove(keepers[name])
                keepers[name].stop()
                keepers[name] = join(name)  # to join again
            else:  # dies: renews nothing more, its leases expire
                live.remove(keepers[name])
            round_of_ticks()  # every live keeper is a member now
            wait_for(f"the lines settled after {step}", settled, timeout=10)
            (holder,) = [k for k in live if "L1" in k.owned]
            assert "L3" in holder.owned, step
            assert all(k.owned for k in live[:2]), step  # the first two always share the work
    finally:
        for k in keepers.values():
            k._db.close()
    assert all(l1 == l3 for l1, l3 in owners_of_l1_l3), [o for o in owners_of_l1_l3 if o[0] != o[1]]


def plant_config(tmp_path, broker, url: str, loops: list[tuple[str, str]] = ()) -> PlantConfig:
    """Two lines of one station each, on PostgreSQL."""
    return plant(
        url,
        ["L1", "L2"],
        loops,
        gateway={"database": str(tmp_path / "unused.db"), "client_id": "gw", "lease_s": 1},
        broker={"host": broker.host, "port": broker.port},
    )


def gateways(tmp_path, broker, postgres, loops: list[tuple[str, str]] = ()):
    from andon.runtime.service import Gateway

    config = plant_config(tmp_path, broker, postgres, loops)
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


@pytest.fixture
def two_gateways(tmp_path, broker, postgres):
    yield from gateways(tmp_path, broker, postgres)


def logged(url: str) -> list[tuple[str, str, int]]:
    with psycopg.connect(url) as db:
        return db.execute("SELECT line, board, seq FROM log WHERE seq IS NOT NULL").fetchall()


def acked(watcher: Watcher, line: str, seq: int, timeout: float = 15) -> dict:
    ack = f"andon/v1/{SITE}/{line}/S01/ack"
    return watcher.wait_for(lambda t, body: t == ack and body.get("seq") == seq, timeout)


def delivered(watcher: Watcher, line: str, seq: int, payload: bytes) -> dict:
    """`payload` published as a board publishes it: again until the gateway acknowledges it
    (a gateway subscribes to a line a moment after it took the line's lease)."""
    deadline = time.monotonic() + 15
    while True:
        watcher.publish(f"andon/v1/{SITE}/{line}/S01/evt", payload)
        try:
            return acked(watcher, line, seq, timeout=1)
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def test_two_gateways_serve_their_own_lines_and_one_takes_over_the_others(two_gateways, postgres):
    (a, b), watcher, config = two_gateways
    wait_for("the lines split", lambda: len(a._owned or ()) == len(b._owned or ()) == 1, 15)
    boards = dict(zip(["L1", "L2"], BOARDS.values(), strict=True))
    for line, board in boards.items():
        delivered(watcher, line, 1, evt(1, board=board))
    b.stop()  # gives its line back at once
    wait_for("a owns both lines", lambda: a._owned == {"L1", "L2"}, 15)
    for line, board in boards.items():
        delivered(watcher, line, 2, evt(2, "cord_reset", board=board))
        watcher.seen.clear()  # the resend is acknowledged again (and not applied again)
        watcher.publish(f"andon/v1/{SITE}/{line}/S01/evt", evt(1, board=board))
        acked(watcher, line, 2)
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


def scan(line: str, seq: int, role: str, uid: str) -> bytes:
    """A card read at `line`'s station S01 (board B000000000n), as its board sends it."""
    board = f"B{int(line[1:]):010d}"
    event = {"board": board, "boot": 1, "seq": seq, "base": seq, "ts": TS0 + seq, "age": None}
    return json.dumps(event | {"kind": "scan", "reader": role, "role": role, "uid": uid}).encode()


@pytest.fixture
def two_gateways_one_loop(tmp_path, broker, postgres):
    """Two gateways; a kanban loop posts on L1 and receives on L2."""
    yield from gateways(tmp_path, broker, postgres, loops=[("L1", "L2")])


OWN_BOTH = [[{"L1", "L2"}, set()], [set(), {"L1", "L2"}]]


def renewed_since(url: str, at: datetime) -> bool:
    """Has every lease been renewed (or taken) since `at`? (lease_s = 1)"""
    with psycopg.connect(url) as db:
        query = "SELECT bool_and(expires > %s + interval '1 second') FROM lease"
        return db.execute(query, (at,)).fetchone()[0]


def test_a_loop_across_two_lines_is_served_by_one_gateway_even_across_a_takeover(
    two_gateways_one_loop, postgres
):
    (a, b), watcher, config = two_gateways_one_loop
    card = config.kanban[0].cards[0]
    with psycopg.connect(postgres) as db:  # both are members: what is renewed now knows it
        both_joined = db.execute("SELECT now()").fetchone()[0]
    wait_for("each line's lease renewed since", lambda: renewed_since(postgres, both_joined), 15)
    wait_for("one serves both lines", lambda: [a._owned, b._owned] in OWN_BOTH, 15)
    owner, other = (a, b) if a._owned else (b, a)
    delivered(watcher, "L1", 1, scan("L1", 1, "post", card))
    replenish = f"andon/v1/{SITE}/kanban/P1/replenish"
    trigger = watcher.wait_for(lambda t, body: t == replenish and body.get("card") == card, 15)
    owner.stop()  # the card's order is open: the other gateway takes over both lines
    wait_for("the other gateway owns both lines", lambda: other._owned == {"L1", "L2"}, 15)
    delivered(watcher, "L2", 1, scan("L2", 1, "receive", card))
    wait_for(
        "the order received",
        lambda: (
            [(o["id"], o["received"] is not None) for o in plant_records(config, "order")]
            == [(trigger["order"], True)]
        ),
        15,
    )


def test_replay_check_on_postgresql_compares_each_lines_latest_projection(
    two_gateways, postgres, tmp_path
):
    from typer.testing import CliRunner

    from andon.cli import app

    (a, b), watcher, config = two_gateways
    plant_file = tmp_path / "plant.toml"
    plant_file.write_text(tomli_w.dumps(config.model_dump(mode="json", exclude_defaults=True)))

    def replay_check():
        return CliRunner().invoke(app, ["replay", "--config", str(plant_file), "--check"])

    wait_for("the lines split", lambda: len(a._owned or ()) == len(b._owned or ()) == 1, 15)
    nothing = replay_check()  # no gateway saved a projection yet
    assert nothing.exit_code == 2, nothing.output
    assert "no projection is stored yet" in nothing.output
    for line, board in zip(["L1", "L2"], BOARDS.values(), strict=True):
        delivered(watcher, line, 1, evt(1, board=board))
    a.stop()  # each saves the projection of the lines it owns
    b.stop()
    with psycopg.connect(postgres, autocommit=True) as db:
        scopes = dict(db.execute("SELECT scope, snapshot FROM projection"))
        assert set(scopes) in ({"L1", "L2"}, {"L1", "L1,L2"}, {"L2", "L1,L2"})
        # an older projection of L2, superseded: not compared
        db.execute("INSERT INTO projection VALUES ('L0,L2', 0, 0, '{}')")
    passed = replay_check()
    assert passed.exit_code == 0, passed.output
    assert "the log rebuilds the stored projection of L1, L2" in passed.output
    latest = max(scopes, key=len)
    tampered = json.loads(scopes[latest]) | {"calls": []}
    with psycopg.connect(postgres, autocommit=True) as db:
        db.execute(
            "UPDATE projection SET snapshot = %s WHERE scope = %s", (json.dumps(tampered), latest)
        )
    failed = replay_check()
    assert failed.exit_code == 1, failed.output
    assert f"[{latest}] calls: the log gives [" in failed.output
    assert "the projection holds []" in failed.output


def test_a_gateway_that_serves_no_line_saves_no_projection(two_gateways_one_loop, postgres):
    (a, b), _, _ = two_gateways_one_loop
    wait_for("one serves both lines", lambda: [a._owned, b._owned] in OWN_BOTH, 15)
    idle = a if not a._owned else b
    idle.stop()  # an empty plant's projection would stand for every line in replay --check
    with psycopg.connect(postgres) as db:
        assert db.execute("SELECT scope FROM projection").fetchall() == []


def test_a_killed_gateways_lines_name_their_new_owner_and_only_its_own_status_goes_offline(
    tmp_path, broker, postgres
):
    """kill -9 of one of two gateway processes: its Will says offline on its own status topic
    only, the survivor's status stays online, and the owner topic of the line it held names the
    survivor under a higher epoch, published once the survivor is subscribed to the line."""
    from andon.sim.rig import GatewayProcess

    config = plant_config(tmp_path, broker, postgres)
    plant_file = tmp_path / "plant.toml"
    plant_file.write_text(tomli_w.dumps(config.model_dump(mode="json", exclude_defaults=True)))
    processes = {
        name: GatewayProcess(plant_file, tmp_path / f"gateway-{name}.log", name)
        for name in ("a", "b")
    }
    watcher = Watcher(broker)
    line_of = {f"andon/v1/{SITE}/{line}/gateway": line for line in ("L1", "L2")}
    before: dict[str, dict] = {}  # line -> its latest owner message

    def split(topic: str, body: dict) -> bool:
        """Each line's owner topic names another gateway, as the messages so far have it."""
        if topic in line_of:
            before[line_of[topic]] = body
        return len({owner["gateway"] for owner in before.values()}) == 2

    try:
        for gw in processes.values():
            gw.start()
        watcher.wait_for(split, 60)
        victim = before["L1"]["gateway"]
        survivor = before["L2"]["gateway"]
        status = {name: f"andon/v1/gateway/{name}/status" for name in processes}
        seen_before = list(watcher.seen)
        watcher.seen.clear()  # what comes from now on is the takeover's
        processes[victim].kill()
        after = watcher.wait_for(
            lambda t, body: line_of.get(t) == "L1" and body.get("gateway") == survivor, 30
        )
        # subscribed to L1 before it said so: an event sent once now is acknowledged
        watcher.publish(f"andon/v1/{SITE}/L1/S01/evt", evt(1, board="B0000000001"))
        acked(watcher, "L1", 1)
        watcher.wait_for(lambda t, body: t == status[victim] and body == {"online": False})
    finally:
        for gw in processes.values():
            gw.kill()
        watcher.close()
    assert after["epoch"] > before["L1"]["epoch"]
    assert after["since"] >= before["L1"]["since"]
    seen = seen_before + watcher.seen
    survivors_status = [body for t, body in seen if t == status[survivor]]
    assert survivors_status and all(body["online"] for body in survivors_status)
    # no new birth of its own for a line it took: its other lines' boards have nothing to resend
    assert [body for t, body in watcher.seen if t == status[survivor]] == []
    # the plant's one topic carries births (older firmware) and no Will of either gateway
    plant_status = [body for t, body in seen if t == "andon/v1/gateway/status"]
    assert plant_status and all(body["online"] for body in plant_status)
