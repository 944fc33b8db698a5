"""The gateway against a real Mosquitto: persist before ack, exactly once, rejections, restart."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from andon.config import PlantConfig
from andon.runtime.store import SqliteStore
from andon.sim.observe import wait_for

SITE = "PLANT1"
TS0 = time.time_ns() // 1_000_000  # events happened just now: no timer is late
BOARDS = {"S01": "B0000000001", "S02": "B0000000002"}


def one_line(stop_s: int) -> list[dict]:
    """The plant file's `lines`: L1 with a station per board of BOARDS."""
    stations = [
        {"id": s, "name": s, "board": b, "profile": "esp32-devkitc"} for s, b in BOARDS.items()
    ]
    return [{"id": "L1", "name": "Line 1", "stop": {"mode": "seconds", "seconds": stop_s},
             "stations": stations}]  # fmt: skip


def plant_config(tmp_path, broker) -> PlantConfig:
    return PlantConfig.model_validate(
        {
            "site": SITE,
            "gateway": {"database": str(tmp_path / "andon.db"), "client_id": "gw-test"},
            "broker": {"host": broker.host, "port": broker.port},
            "lines": one_line(60),
        }
    )


def evt(seq: int, kind: str = "cord_pulled", base: int | None = None, boot: int = 1, board=None):
    return json.dumps(
        {
            "board": board or BOARDS["S01"],
            "boot": boot,
            "seq": seq,
            "base": base or seq,
            "ts": TS0 + seq,
            "age": None,
            "kind": kind,
            "input": "cord",
        }
    ).encode()


def birth(board: str, boot: int, outbox_cap: int = 400) -> bytes:
    fields = {"board": board, "boot": boot, "online": True, "fw": "0.1.0", "reset_cause": 1}
    fields |= {"outbox": 0, "outbox_cap": outbox_cap, "outbox_near_full": False}
    return json.dumps(fields).encode()


def topic(station: str, leaf: str = "evt") -> str:
    return f"andon/v1/{SITE}/L1/{station}/{leaf}"


class Watcher:
    """A test client: publishes like a board, and collects what the gateway publishes."""

    def __init__(self, broker, subscribe: str = "andon/v1/#") -> None:
        self.got: queue.Queue = queue.Queue()
        self.seen: list[tuple[str, dict]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="watcher")
        self.client.on_message = lambda _c, _u, m: self.got.put((m.topic, m.payload))
        self.client.on_connect = lambda c, *_: c.subscribe(subscribe, qos=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def wait_for(self, match: Callable[[str, dict], bool], timeout: float = 10.0) -> dict:
        """The first message (seen so far or arriving) that matches; fails after `timeout`."""
        for t, body in self.seen:
            if match(t, body):
                return body
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                t, payload = self.got.get(timeout=left)
            except queue.Empty:
                break
            body = json.loads(payload) if payload.startswith(b"{") else {}
            self.seen.append((t, body))
            if match(t, body):
                return body
        raise AssertionError(f"no such message within {timeout}s; seen: {self.seen[-10:]}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Running:
    gateway: object
    watcher: Watcher
    config: PlantConfig


@pytest.fixture
def running(tmp_path, broker):
    from andon.runtime.service import Gateway

    config = plant_config(tmp_path, broker)
    watcher = Watcher(broker)
    gateway = Gateway(config)
    gateway.start()
    try:
        watcher.wait_for(lambda t, b: t == "andon/v1/gateway/status" and b.get("online"))
        yield Running(gateway, watcher, config)
    finally:
        gateway.stop()
        watcher.close()


def logged(config: PlantConfig) -> list[tuple[str, str]]:
    store = SqliteStore(config.gateway.database)
    try:
        return [(e.station, json.loads(e.message)["seq"]) for e in store.log()]
    finally:
        store.close()


def test_a_good_event_is_stored_acknowledged_and_changes_the_state(running):
    w = running.watcher
    w.publish(topic("S01"), evt(1, "cord_pulled"))
    state = w.wait_for(lambda t, b: t == topic("S01", "state") and b["state"] == "called")
    assert state["call"] == "cord"
    ack = w.wait_for(lambda t, b: t == topic("S01", "ack"))
    assert ack == {"board": BOARDS["S01"], "boot": 1, "seq": 1}
    line = w.wait_for(lambda t, b: t == f"andon/v1/{SITE}/L1/state" and b["state"] == "called")
    assert line["called"] == ["S01"]


def test_bad_payloads_are_rejected_counted_and_kept_while_good_ones_apply(running):
    w = running.watcher
    spoof = evt(1, board=BOARDS["S02"])  # S02's board posting as S01
    stranger = evt(1, board="NOBODY")
    bad = [
        (topic("S01"), b"cord pulled!", "json"),
        (topic("S01"), b'{"board": "B0000000001"}', "schema"),
        (topic("S01"), b"{" + b" " * 600 + b"}", "size"),
        (topic("S01"), spoof, "spoof"),
        (topic("S01"), stranger, "unknown_board"),
    ]
    for t, payload, _ in bad:
        w.publish(t, payload)
    w.publish(topic("S02"), evt(1, "cord_pulled", board=BOARDS["S02"]))
    w.wait_for(lambda t, b: t == topic("S02", "state") and b["state"] == "called")
    wait_for("every rejection counted", lambda: sum(running.gateway.rejected.values()) == len(bad))
    assert running.gateway.rejected == {
        "json": 1,
        "schema": 1,
        "size": 1,
        "spoof": 1,
        "unknown_board": 1,
    }
    assert logged(running.config) == [("S02", 1)]
    store = SqliteStore(running.config.gateway.database)
    try:
        letters = store.dead_letters()
    finally:
        store.close()
    assert [(t, p, r) for _, t, p, r, _ in letters] == bad


def test_duplicates_and_an_outbox_replay_are_applied_once(running):
    w = running.watcher
    for payload in [evt(1, "cord_pulled"), evt(1, "cord_pulled")]:  # a re-delivery
        w.publish(topic("S01"), payload)
    w.publish(topic("S01"), evt(2, "cord_reset", base=1))
    # the board missed the ack and replays its whole outbox
    for seq, kind in [(1, "cord_pulled"), (2, "cord_reset")]:
        w.publish(topic("S01"), evt(seq, kind, base=1))
    w.publish(topic("S01"), evt(3, "cord_pulled", base=1))
    w.wait_for(lambda t, b: t == topic("S01", "ack") and b["seq"] == 3)
    assert logged(running.config) == [("S01", 1), ("S01", 2), ("S01", 3)]
    # each pull applied once: two calls, not a third for the re-delivery or the replay (the
    # states cannot tell: a batch publishes only a station's last state, and on a loaded
    # machine the pull and the reset can share one)
    store = SqliteStore(running.config.gateway.database)
    try:
        calls = [(c["station"], c["resolution"], c["repeats"]) for c in store.records("call")]
    finally:
        store.close()
    assert calls == [("S01", "cord_reset", 0), ("S01", None, 0)]
    # a commit publishes the state before the ack, so the last state is in by now
    assert [b["state"] for t, b in w.seen if t == topic("S01", "state")][-1] == "called"


def test_the_ack_carries_the_highest_contiguous_seq(running):
    w = running.watcher
    w.publish(topic("S01"), evt(1, "cord_pulled"))
    w.wait_for(lambda t, b: t == topic("S01", "ack") and b["seq"] == 1)
    w.publish(topic("S01"), evt(3, "cord_pulled", base=1))  # 2 was lost on the way
    w.publish(topic("S02"), evt(1, board=BOARDS["S02"]))  # a later commit
    w.wait_for(lambda t, b: t == topic("S02", "ack"))
    # S01's progress did not move: no ack for it (3 waits behind the gap)
    assert [b["seq"] for t, b in w.seen if t == topic("S01", "ack")] == [1]
    w.publish(topic("S01"), evt(2, "cord_reset", base=1))
    w.wait_for(lambda t, b: t == topic("S01", "ack") and b["seq"] == 3)
    # applied in seq order: pull, reset, pull again; in arrival order the second pull would
    # have been a repeat of the first call, and the reset would have ended it
    store = SqliteStore(running.config.gateway.database)
    try:
        calls = [(c["station"], c["resolution"], c["repeats"]) for c in store.records("call")]
    finally:
        store.close()
    assert calls == [("S01", "cord_reset", 0), ("S02", None, 0), ("S01", None, 0)]


class FailingStore(SqliteStore):
    """A disk that fails every commit that holds an event: the transaction rolls back."""

    @contextmanager
    def transaction(self, background: bool = False):
        with super().transaction(background) as tx:
            yield tx
            if tx.touched:
                raise RuntimeError("disk I/O error")


def test_nothing_is_acknowledged_to_the_broker_before_it_is_committed(tmp_path, broker):
    from andon.runtime.service import Gateway

    config = plant_config(tmp_path, broker)
    watcher = Watcher(broker)
    failing = Gateway(config, FailingStore(tmp_path / "failing.db"))
    try:
        failing.start()
        watcher.wait_for(lambda t, b: t == "andon/v1/gateway/status" and b.get("online"))
        watcher.publish(topic("S01"), evt(1))
        wait_for(
            "the commit failed", lambda: failing.failed is not None
        )  # the commit failed: no ack was sent
        assert str(failing.failed) == "disk I/O error"
        reasons = failing.health()["reasons"]
        assert "the worker is not running: RuntimeError('disk I/O error')" in reasons
    finally:
        failing.stop()
    # the broker kept the message for the gateway's session and delivers it again
    gateway = Gateway(config)
    try:
        gateway.start()
        watcher.wait_for(lambda t, b: t == topic("S01", "ack") and b["seq"] == 1)
    finally:
        gateway.stop()
        watcher.close()
    assert logged(config) == [("S01", 1)]


def write_plant_toml(tmp_path, broker) -> Path:
    stations = "".join(
        f'[[lines.stations]]\nid = "{s}"\nname = "{s}"\nboard = "{b}"\nprofile = "esp32-devkitc"\n'
        for s, b in BOARDS.items()
    )
    path = tmp_path / "plant.toml"
    path.write_text(
        f'site = "{SITE}"\n[gateway]\ndatabase = "andon.db"\nclient_id = "gw-kill"\n'
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'[[lines]]\nid = "L1"\nname = "Line 1"\n{stations}'
    )
    return path


def andon(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("andon")), *args]


def test_kill_9_mid_stream_loses_nothing_and_applies_nothing_twice(tmp_path, broker):
    config_path = write_plant_toml(tmp_path, broker)
    watcher = Watcher(broker)
    procs: list[subprocess.Popen] = []

    def start_gateway() -> subprocess.Popen:
        procs.append(subprocess.Popen(andon("gateway", "--config", str(config_path))))
        watcher.wait_for(lambda t, b: t == "andon/v1/gateway/status" and b.get("online"))
        return procs[-1]

    per_board = 120  # alternating pull and reset: 60 calls per station
    stream = [
        (topic(s), evt(seq, "cord_pulled" if seq % 2 else "cord_reset", base=1, board=b))
        for seq in range(1, per_board + 1)
        for s, b in BOARDS.items()
    ]
    try:
        gateway = start_gateway()
        publisher = threading.Thread(target=lambda: [watcher.publish(*m) for m in stream])
        publisher.start()
        watcher.wait_for(lambda t, b: t == topic("S01", "ack") and b["seq"] >= 30)
        gateway.kill()  # SIGKILL, mid-stream
        gateway.wait()
        publisher.join()  # the rest waits at the broker for the gateway's session
        watcher.seen.clear()  # a state or ack seen now must come from the restarted gateway
        start_gateway()
        for s in BOARDS:
            watcher.wait_for(lambda t, b, s=s: t == topic(s, "ack") and b["seq"] == per_board)
        before = {t: b for t, b in watcher.seen if t.endswith("/state")}
        # an idle kill: the restarted gateway publishes exactly the state it had
        procs[-1].kill()
        procs[-1].wait()
        watcher.seen.clear()
        start_gateway()
        for t in before:
            watcher.wait_for(lambda tt, b, t=t: tt == t)
        after = {t: b for t, b in watcher.seen if t.endswith("/state")}
        procs[-1].send_signal(signal.SIGTERM)
        assert procs[-1].wait(timeout=20) == 0
        watcher.wait_for(lambda t, b: t == "andon/v1/gateway/status" and b == {"online": False})
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        watcher.close()

    assert after == before
    assert before[topic("S01", "state")]["state"] == "running"  # the last event was a reset
    store = SqliteStore(tmp_path / "andon.db")
    try:
        entries = [json.loads(e.message) for e in store.log() if e.leaf == "evt"]
        calls = store.records("call")
    finally:
        store.close()
    ids = sorted((e["board"], e["seq"]) for e in entries)
    assert ids == sorted((b, seq) for seq in range(1, per_board + 1) for b in BOARDS.values())
    assert len(calls) == len(BOARDS) * per_board // 2  # a pull applied twice would be a repeat
    assert all(c["repeats"] == 0 and c["resolved"] is not None for c in calls)
    check = subprocess.run(andon("replay", "--config", str(config_path), "--check"), check=False)
    assert check.returncode == 0


def test_an_alert_is_marked_sent_once_the_broker_has_it(running):
    w = running.watcher
    w.publish(topic("S01", "status"), birth(BOARDS["S01"], 1))
    will = json.dumps({"board": BOARDS["S01"], "boot": 1, "online": False}).encode()
    w.publish(topic("S01", "status"), will)  # a Will counts for the current session's boot
    alert = w.wait_for(lambda t, b: t == f"andon/v1/{SITE}/alert")
    assert alert["kind"] == "station_offline" and alert["station"] == "S01"

    def unsent() -> list:
        store = SqliteStore(running.config.gateway.database)
        try:
            return store.unsent()
        finally:
            store.close()

    wait_for(
        "the alert marked sent", lambda: unsent() == []
    )  # its PUBACK reached the worker, which marked it


def test_the_cli_reads_the_plant_and_its_event_log_from_the_database(tmp_path, broker):
    from typer.testing import CliRunner

    from andon.cli import app
    from andon.config import load_plant
    from andon.runtime.service import Gateway

    path = write_plant_toml(tmp_path, broker)
    watcher = Watcher(broker)
    gateway = Gateway(load_plant(path))
    try:
        gateway.start()
        watcher.wait_for(lambda t, b: t == "andon/v1/gateway/status" and b.get("online"))
        watcher.publish(topic("S01"), evt(1, "cord_pulled"))
        watcher.publish(topic("S02"), evt(1, "cord_pulled", board=BOARDS["S02"]))
        watcher.publish(topic("S01"), evt(2, "cord_reset"))
        watcher.wait_for(lambda t, b: t == topic("S01", "ack") and b["seq"] == 2)
        watcher.wait_for(lambda t, b: t == topic("S02", "ack") and b["seq"] == 1)
    finally:
        gateway.stop()
        watcher.close()
    runner = CliRunner()

    events = runner.invoke(app, ["events", "--config", str(path), "--since", "1h"])
    assert events.exit_code == 0, events.output
    lines = [line for line in events.output.splitlines() if "cord_" in line]
    assert len(lines) == 3
    assert "S01" in lines[0] and "cord_pulled" in lines[0]
    assert "S01" in lines[2] and "cord_reset" in lines[2]

    bad = runner.invoke(app, ["events", "--config", str(path), "--since", "last tuesday"])
    assert bad.exit_code == 2

    status = runner.invoke(app, ["status", "--config", str(path)])
    assert status.exit_code == 0, status.output
    rows = {line.split()[1]: line for line in status.output.splitlines() if "│ S0" in line}
    assert "called" in rows["S02"] and "called" not in rows["S01"]


@pytest.mark.parametrize(
    "backlogs_before, waiting, joins",
    [(1, 150, True), (0, 150, False), (1, 5, False)],
    ids=["behind", "one-stall", "trickle"],
)
def test_a_batch_gathers_what_arrives_soon_only_while_the_worker_is_behind(
    tmp_path, monkeypatch, backlogs_before, waiting, joins
):
    from andon.runtime import service

    class NoBroker:
        host, port = "127.0.0.1", 1

    # a long gather time, ended by the full batch: a slow machine cannot make "late" too late
    monkeypatch.setattr(service, "BACKLOG_GATHER_S", 30.0)
    gateway = service.Gateway(plant_config(tmp_path, NoBroker), batch_max=151)
    try:
        for _ in range(backlogs_before):
            for i in range(1, 150):
                gateway._inbox.put(i)
            assert len(gateway._gather(0)) == 150
        for i in range(1, waiting):
            gateway._inbox.put(i)
        late = threading.Timer(0.05, gateway._inbox.put, ["late"])
        late.start()
        batch = gateway._gather(0)
        late.join()
    finally:
        gateway.store.close()
    assert batch[:waiting] == list(range(waiting))
    assert ("late" in batch) is joins


@pytest.mark.parametrize("stage", ["decode", "store", "apply"])
def test_a_poison_message_at_any_stage_is_dead_lettered_and_the_gateway_goes_on(
    running, monkeypatch, stage
):
    from tests.gateway.test_intake import FAULTS

    fault, reason = FAULTS[["decode", "store", "apply"].index(stage)]
    fault(monkeypatch)  # each fails on S01's seq 2
    w = running.watcher
    w.publish(topic("S01"), evt(1, "cord_pulled"))
    w.publish(topic("S01"), evt(2, "cord_reset"))
    w.publish(topic("S02"), evt(1, "cord_pulled", board=BOARDS["S02"]))  # the next valid one
    w.wait_for(lambda t, b: t == topic("S02", "state") and b["state"] == "called")
    wait_for("the poison dead-lettered", lambda: running.gateway.rejected.get(reason) == 1)
    assert running.gateway.running and running.gateway.failed is None
    assert running.gateway.view()["lines"][0]["stations"][0]["state"] == "called"


def retained_now(broker) -> dict[str, bytes]:
    """Every retained message under andon/v1 now: what a board subscribing now would get."""
    got: queue.Queue = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="retained-reader")
    client.on_message = lambda _c, _u, m: got.put((m.topic, m.payload, m.retain))
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.subscribe("andon/v1/#", qos=1)[1]
        found: dict[str, bytes] = {}
        marker = b"end of the retained messages"
        client.publish("andon/v1/test/marker", marker, qos=1).wait_for_publish(5)
        while True:  # the broker sends what it holds before what is published after
            t, payload, retain = got.get(timeout=10)
            if payload == marker:
                return found
            if retain:
                found[t] = payload
    finally:
        client.loop_stop()
        client.disconnect()


def test_the_gateway_clears_strangers_retained_downlinks_and_overwrites_its_own(tmp_path, broker):
    from andon.runtime.service import Gateway

    config = plant_config(tmp_path, broker)
    garbage = {
        f"andon/v1/{SITE}/L9/S99/state": b'{"state": "stopped"}',  # no such station
        f"andon/v1/{SITE}/L9/state": b"junk",  # no such line
        f"andon/v1/{SITE}/L1/S01/ack": json.dumps(  # a forged ack: the board has no progress
            {"board": BOARDS["S01"], "boot": 1, "seq": 10**6}
        ).encode(),
        topic("S02", "state"): b'{"state": "offline"}',
        "andon/v1/gateway/status": b'{"online": false}',
        "andon/v1/SITE2/L1/S01/state": b'{"state": "running"}',  # another site's gateway's
    }
    watcher = Watcher(broker)
    for t, payload in garbage.items():
        watcher.client.publish(t, payload, qos=1, retain=True).wait_for_publish(5)
    gateway = Gateway(config)
    try:
        gateway.start()
        watcher.wait_for(lambda t, b: t == "andon/v1/gateway/status" and b.get("online"))
        wait_for(
            "the strangers' retained messages cleared",
            lambda: (
                not {t for t in garbage if "/L9/" in t or t.endswith("S01/ack")}
                & retained_now(broker).keys()
            ),
        )
        held = retained_now(broker)
    finally:
        gateway.stop()
        watcher.close()
    assert json.loads(held[topic("S02", "state")])["state"] == "running"
    assert held["andon/v1/SITE2/L1/S01/state"] == garbage["andon/v1/SITE2/L1/S01/state"]
    assert held[topic("S01", "state")]
    assert json.loads(held["andon/v1/gateway/status"])["online"] is True


def test_health_is_503_while_the_broker_is_down_and_a_fresh_birth_follows_its_return(
    running, broker
):
    from fastapi.testclient import TestClient

    from andon.runtime.api import make_app

    api = TestClient(make_app(running.config, running.gateway))
    assert api.get("/api/v1/health").status_code == 200
    online = lambda t, b: t == "andon/v1/gateway/status" and b.get("online")  # noqa: E731
    first = running.watcher.wait_for(online)["since"]
    broker.kill()
    wait_for("health names the broker", lambda: api.get("/api/v1/health").status_code == 503)
    assert "the broker is unreachable" in api.get("/api/v1/health").json()["reasons"]
    broker.start()
    wait_for("health is back", lambda: api.get("/api/v1/health").status_code == 200, timeout=30)
    # each (re)connect publishes a fresh birth: boards resend what is unacknowledged at once
    running.watcher.wait_for(lambda t, b: online(t, b) and b["since"] > first, timeout=30)
