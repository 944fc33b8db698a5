"""Gateway benchmark through a real Mosquitto, with 1,000 simulated boards.

Prints: sustained events/s with durable commits and its ratio to a bare paho subscriber that
only decodes JSON (same run, same queued backlog); p50/p99 from an event's publish to the
state publish it causes, at 1,000 events/s; restart time with 1,000,000 events in the log.
Ends with one JSON line. Run: .venv/bin/python bench/gateway.py [--log-events N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections import defaultdict, deque
from pathlib import Path

import paho.mqtt.client as mqtt

from andon import contract
from andon.config import PlantConfig
from andon.core import Plant, Record
from andon.mosquitto import start_broker
from andon.service import Gateway, entry_of
from andon.store import Projection, SqliteStore

SITE = "BENCH"
LINES, STATIONS = 10, 100  # 1,000 boards


def bench_config(workdir: Path, broker, client_id: str = "gw-bench") -> PlantConfig:
    lines = [
        {
            "id": f"L{li}",
            "name": f"Line {li}",
            "stations": [
                {"id": f"S{si:03}", "name": "s", "board": board(li, si), "profile": "p"}
                for si in range(STATIONS)
            ],
        }
        for li in range(LINES)
    ]
    return PlantConfig.model_validate(
        {
            "site": SITE,
            "gateway": {"database": str(workdir / "andon.db"), "client_id": client_id},
            "broker": {"host": broker.host, "port": broker.port},
            "lines": lines,
        }
    )


def board(li: int, si: int) -> str:
    return f"B{li:02}{si:03}"


def events(rounds: int, ts: int):
    """(topic, payload) for every board, `rounds` events each, alternating pull and reset."""
    for seq in range(1, rounds + 1):
        kind = "cord_pulled" if seq % 2 else "cord_reset"
        for li in range(LINES):
            for si in range(STATIONS):
                yield (
                    contract.Station(SITE, f"L{li}", f"S{si:03}").topic("evt"),
                    json.dumps(
                        {"board": board(li, si), "boot": 1, "seq": seq, "base": 1, "ts": ts,
                         "age": None, "kind": kind, "input": "cord"}
                    ).encode(),
                )  # fmt: skip


def client(broker, client_id: str, clean: bool = True) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    c.max_inflight_messages_set(1000)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def publish_all(broker, messages) -> int:
    pub = client(broker, "bench-pub")
    infos = [pub.publish(t, p, qos=1) for t, p in messages]
    for info in infos:
        info.wait_for_publish(60)
    pub.loop_stop()
    pub.disconnect()
    return len(infos)


def bare_rate(broker, rounds: int) -> float:
    """Events/s a paho subscriber that only decodes JSON drains from a queued backlog."""
    done, count, total = threading.Event(), [0], [0]

    def on_message(_c, _u, msg):
        json.loads(msg.payload)
        count[0] += 1
        if count[0] == total[0]:
            done.set()

    sub = client(broker, "bench-bare", clean=False)
    sub.subscribe("andon/v1/+/+/+/evt", qos=1)
    time.sleep(0.5)
    sub.loop_stop()
    sub.disconnect()
    total[0] = publish_all(broker, events(rounds, wall_ms()))
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare", clean_session=False)
    sub.on_message = on_message
    start = time.perf_counter()
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    done.wait(120)
    elapsed = time.perf_counter() - start
    sub.loop_stop()
    sub.disconnect()
    return count[0] / elapsed


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def acks_watcher(broker, expect_seq: int, boards: int):
    """A client that sets its event once every board's ack reached `expect_seq`."""
    done, reached = threading.Event(), set()

    def on_message(_c, _u, msg):
        body = json.loads(msg.payload)
        if body["seq"] >= expect_seq:
            reached.add(body["board"])
            if len(reached) == boards:
                done.set()

    w = client(broker, f"bench-acks-{expect_seq}")
    w.on_message = on_message
    w.subscribe(f"andon/v1/{SITE}/+/+/ack", qos=1)
    time.sleep(0.3)
    return w, done


def gateway_rate(workdir: Path, broker, rounds: int) -> float:
    config = bench_config(workdir, broker)
    gw = Gateway(config)  # first run: creates the persistent session and its subscriptions
    gw.start()
    time.sleep(1.0)
    gw.stop()
    n = publish_all(broker, events(rounds, wall_ms()))
    watcher, done = acks_watcher(broker, rounds, LINES * STATIONS)
    gw = Gateway(config)
    start = time.perf_counter()
    gw.start()
    done.wait(300)
    elapsed = time.perf_counter() - start
    gw.stop()
    watcher.loop_stop()
    watcher.disconnect()
    return n / elapsed


def latency(workdir: Path, broker, rate: int, seconds: float) -> list[float]:
    """Publish at `rate` events/s; ms from each publish to the station state it causes."""
    config = bench_config(workdir / "lat", broker, "gw-lat")
    gw = Gateway(config)
    gw.start()
    sent: dict[str, deque] = defaultdict(deque)
    got: list[float] = []
    lock = threading.Lock()

    def on_message(_c, _u, msg):
        station = msg.topic.rsplit("/", 1)[0] + "/evt"
        with lock:
            if sent[station]:
                got.append((time.perf_counter() - sent[station].popleft()) * 1000)

    sub = client(broker, "bench-lat-sub")
    sub.on_message = on_message
    time.sleep(1.0)  # the gateway's initial state publishes go by first
    sub.subscribe(f"andon/v1/{SITE}/+/+/state", qos=1)
    time.sleep(0.5)
    with lock:
        got.clear()
    pub = client(broker, "bench-lat-pub")
    stream = list(events(max(1, int(rate * seconds) // (LINES * STATIONS)) + 1, wall_ms()))
    stream = stream[: int(rate * seconds)]
    start = time.perf_counter()
    for i, (t, p) in enumerate(stream):
        while time.perf_counter() < start + i / rate:
            time.sleep(0.0002)
        with lock:
            sent[t].append(time.perf_counter())
        pub.publish(t, p, qos=1)
    time.sleep(2.0)
    gw.stop()
    for c in (pub, sub):
        c.loop_stop()
        c.disconnect()
    return got


def restart_time(workdir: Path, broker, log_events: int) -> float:
    """Fill a log as the gateway would (core applied, projections), then time a start."""
    config = bench_config(workdir / "big", broker, "gw-big")
    store = SqliteStore(config.gateway.database)
    plant, now = Plant(config), wall_ms() - log_events
    rounds = log_events // (LINES * STATIONS)
    batch = []
    for t, p in events(rounds, now):
        batch.append((t, p))
        if len(batch) == 5000:
            now = fill(store, plant, config, batch, now)
            batch = []
    if batch:
        fill(store, plant, config, batch, now)
    store.close()
    start = time.perf_counter()
    gw = Gateway(config)
    gw.start()
    ready = time.perf_counter() - start
    gw.stop()
    return ready


def fill(store, plant, config, batch, now) -> int:
    with store.transaction() as tx:
        for t, p in batch:
            now += 1
            _, msg = contract.decode_uplink(t, p)
            line, st = config.station_of_board(msg.board)
            entry = entry_of(now, line, st, msg)
            pos = tx.append(entry)
            plant.apply(Record(now, line, st, msg, entry.at))
        tx.set_clock(now)
        tx.save_projection(Projection(pos, now, plant.snapshot()))
    return now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="events per board, throughput")
    parser.add_argument("--log-events", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with start_broker(workdir / "broker") as broker:
            bare = bare_rate(broker, args.rounds)
            print(f"bare paho subscriber (decode JSON): {bare:,.0f} events/s")
            rate = gateway_rate(workdir, broker, args.rounds)
            print(f"gateway, durable commits: {rate:,.0f} events/s ({rate / bare:.2f} of bare)")
            lat = latency(workdir, broker, rate=1000, seconds=5)
            q = statistics.quantiles(lat, n=100)
            print(f"publish -> state at 1,000 events/s: p50 {q[49]:.2f} ms, p99 {q[98]:.2f} ms")
            restart = restart_time(workdir, broker, args.log_events)
            print(f"restart with {args.log_events:,} events in the log: {restart:.2f} s")
    print(
        json.dumps(
            {
                "bench": "gateway",
                "bare_events_per_s": round(bare),
                "gateway_events_per_s": round(rate),
                "ratio": round(rate / bare, 3),
                "latency_samples": len(lat),
                "p50_ms": round(q[49], 2),
                "p99_ms": round(q[98], 2),
                "log_events": args.log_events,
                "restart_s": round(restart, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
