"""Faults end to end, each with nothing lost and nothing applied twice: a broker crash, a
gateway kill -9, a board's power cut with a full outbox, a board going offline, and a rogue
client on the broker. Real Mosquitto, the real gateway process, the real firmware in VMs."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from andon.runtime.replay import plant_view, wall_ms
from andon.runtime.store import SqliteStore, records
from andon.sim.observe import wait_for
from andon.sim.rig import Rig, andon_command
from andon.sim.scenario import Scenario

STREAM = ("S01", "S02", "S03")


def pull_and_reset(rig: Rig, station: str, times: int) -> None:
    """Each pull and reset returns once the board's debounce took it: every one is an event."""
    for _ in range(times):
        rig.line.do("pull", "L1", station)
        rig.line.do("reset", "L1", station)


def stream(rig: Rig, times: int) -> threading.Thread:
    """Pull and reset at every STREAM station, `times` each, in the background."""
    threads = [
        threading.Thread(target=pull_and_reset, args=(rig, s, times), daemon=True) for s in STREAM
    ]
    for t in threads:
        t.start()
    joiner = threading.Thread(target=lambda: [t.join() for t in threads], daemon=True)
    joiner.start()
    return joiner


def all_delivered(rig: Rig, timeout: float = 60.0) -> dict[str, int]:
    """Wait until every board's outbox is empty (the gateway acknowledged all); next seqs."""

    def drained() -> dict[str, int] | None:
        status = {
            sb.board.uid: rig.line.do("status", sb.line, sb.station)
            for sb in rig.line.boards.values()
        }
        if all(s.get("link") == "up" and s["outbox"] == 0 for s in status.values()):
            return {board: s["next_seq"] for board, s in status.items()}
        return None

    return wait_for("every outbox drained", drained, timeout)


def assert_exactly_once(rig: Rig, next_seqs: dict[str, int], pulls: int) -> None:
    store = SqliteStore(rig.database)
    try:
        logged = [
            (json.loads(e.message)["board"], json.loads(e.message)["seq"])
            for e in store.log()
            if e.leaf == "evt"
        ]
    finally:
        store.close()
    expected = [(board, seq) for board, nxt in next_seqs.items() for seq in range(1, nxt)]
    assert sorted(logged) == sorted(expected)  # each event once: none lost, none twice
    calls = records(rig.database, "call")
    assert len(calls) == pulls  # a pull applied twice would have been a repeat, or a 2nd call
    assert all(c["repeats"] == 0 and c["resolved"] is not None for c in calls)
    # replay --check compares the log with the projection a gateway saves when it stops
    assert rig.gateway.stop() == 0
    check = subprocess.run(andon_command("replay", "--config", str(rig.plant_path), "--check"))
    assert check.returncode == 0
    rig.start_gateway()


def test_a_broker_crash_mid_stream_loses_nothing(rig: Rig):
    feeding = stream(rig, 8)
    time.sleep(0.5)
    rig.broker.kill()
    time.sleep(1.0)
    rig.broker.start()
    feeding.join(60)
    assert_exactly_once(rig, all_delivered(rig), pulls=8 * len(STREAM))


def backup(database: Path, to: Path) -> None:
    """A consistent copy of the gateway's SQLite database, as it stands now."""
    with (
        contextlib.closing(sqlite3.connect(database)) as src,
        contextlib.closing(sqlite3.connect(to)) as dst,
    ):
        src.backup(dst)


def test_a_gateway_kill_9_mid_stream_and_restart_give_the_same_state(rig: Rig):
    feeding = stream(rig, 8)
    time.sleep(0.5)
    rig.gateway.kill()
    time.sleep(1.0)
    rig.start_gateway()
    feeding.join(60)
    assert_exactly_once(rig, all_delivered(rig), pulls=8 * len(STREAM))
    rig.line.do("pull", "L1", "S03")  # an open call across the restart
    wait_for("the call stored", lambda: len(records(rig.database, "call")) == 8 * len(STREAM) + 1)
    rig.gateway.kill()
    left = rig.workdir / "left-by-the-killed-gateway.db"
    backup(rig.database, left)
    rig.start_gateway()
    all_delivered(rig)
    # Both at one instant, so a fixed-position stop or an escalation that fell due while the
    # gateway was down is due in both: the restart itself must change nothing.
    at = wall_ms()
    after = plant_view(rig.plant, at)
    killed = rig.plant.model_copy(
        update={"gateway": rig.plant.gateway.model_copy(update={"database": left})}
    )
    assert after == plant_view(killed, at)
    line = after["lines"][0]
    assert "S03" in line["called"] + line["stopped"]


def test_a_power_cut_while_the_outbox_holds_events_loses_none(rig: Rig):
    wait_for("boot reports acked", lambda: rig.line.do("status", "L1", "S01")["outbox"] == 0)
    rig.gateway.kill()  # no acks meanwhile: the events stay in the board's outbox
    pull_and_reset(rig, "S01", 3)
    held = wait_for(
        "six events held", lambda: (s := rig.line.do("status", "L1", "S01"))["outbox"] == 6 and s
    )
    rig.line.do("power-cut", "L1", "S01")
    rig.line.do("restart", "L1", "S01")
    # At boot each of its cords reports its state: the six held events stay behind them.
    config = rig.line.boards["L1/S01"].config
    cords = sum(1 for i in config["inputs"] if i["role"] == "cord")
    rebooted = wait_for(
        "the cords' state at boot stored",
        lambda: (
            (s := rig.line.do("status", "L1", "S01"))["next_seq"] == held["next_seq"] + cords and s
        ),
    )
    assert rebooted["boot"] == held["boot"] + 1
    assert rebooted["outbox"] == 6 + cords
    rig.start_gateway()
    assert_exactly_once(rig, all_delivered(rig), pulls=3)


def test_a_board_offline_raises_an_alert_and_comes_back(rig: Rig):
    steps = [
        {"do": "power-cut", "station": "L1/S03"},
        {"expect": "alert", "kind": "station_offline", "station": "L1/S03"},
        {"expect": "station_state", "station": "L1/S03", "state": "offline"},
        {
            "expect": "lamps",
            "station": "L1/S01",
            "lamps": {"red": "off", "green": "on"},
            "during_ms": 500,
        },
        {"do": "restart", "station": "L1/S03"},
        {"expect": "alert", "kind": "station_online", "station": "L1/S03"},
        {"expect": "station_state", "station": "L1/S03", "state": "running"},
        {"expect": "lamps", "station": "L1/S03", "lamps": {"green": "on"}},
    ]
    rig.runner().run(Scenario(name="offline", steps=steps))


def test_a_rogue_client_does_not_disturb_the_line(rig: Rig):
    line_topic = "andon/v1/P1/L1/state"
    before = wait_for("line state", lambda: rig.observer.latest(line_topic))
    rogue = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="rogue")
    rogue.connect(rig.broker.host, rig.broker.port)
    rogue.loop_start()
    event = {
        "boot": 1,
        "seq": 1,
        "base": 1,
        "ts": None,
        "age": 0,
        "kind": "cord_pulled",
        "input": "cord",
    }
    bad = [
        ("andon/v1/P1/L1/S01/evt", b"pull the cord!"),  # not JSON
        ("andon/v1/P1/L1/S01/evt", b'{"board": "5E1100000001"}'),  # fields missing
        (
            "andon/v1/P1/L1/S01/evt",
            json.dumps({"board": "5E1100000003", **event}).encode(),
        ),  # spoof
        ("andon/v1/P1/L1/S01/evt", json.dumps({"board": "FFFFFFFFFFFF", **event}).encode()),
    ]
    try:
        for topic, payload in bad:
            rogue.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        rogue.loop_stop()
        rogue.disconnect()

    def rejections() -> dict[str, int]:
        store = SqliteStore(rig.database)
        try:
            return store.rejections()
        finally:
            store.close()

    wait_for("four rejections", lambda: sum(rejections().values()) == 4)
    assert rejections() == {"json": 1, "schema": 1, "spoof": 1, "unknown_board": 1}
    assert rig.observer.latest(line_topic) == before
    assert records(rig.database, "call") == []
    assert all(lamps["green"] == "on" for lamps in rig.line.line_lamps("L1").values())
    rig.line.do("pull", "L1", "S01")  # the line still answers a real pull
    wait_for("line called", lambda: rig.observer.latest(line_topic)["called"] == ["S01"])
