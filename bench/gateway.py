"""Gateway benchmark through a real Mosquitto, with 1,000 simulated boards.

The gateway runs as it does in a plant: `andon gateway --config plant.toml`, a process of its
own. This process plays the boards and the observers. Prints:

- sustained events/s with durable commits: a backlog of events waits at the broker for the
  gateway's persistent session; timed from the end of its first quarter (every board's round
  k acknowledged) until every board's `…/ack` reports its last event. Its ratio to a bare paho
  subscriber that only decodes JSON, draining the same backlog just before it on the same
  broker and timed over the same three quarters (goal: at least 0.5); as the median of
  `--pairs` such pairs, since the baseline swings from run to run. Connecting is left out of
  both: the gateway announces itself once its intake is subscribed, and the broker may send
  the intake much of the backlog before that SUBACK. The backlog is 80 rounds (80,000 events)
  by default: under a backlog the gateway commits a batch (up to 5,000 events) while it
  applies the next, so the first acknowledgement timed may come as late as that next batch's
  end. Over 60,000 events that error is under a tenth; over 15,000 it was up to a third;
- p50/p99 from an event's publish to the station state publish it causes, at 1,000 events/s
  (goal: p99 under 10 ms). Every state waits for a durable commit (an fsync), so the disk's
  own commit latency is measured before and after, in the same directory: a disk that stalls
  for 100 ms stalls a hundred events;
- restart time with 1,000,000 events in the log (goal: under 5 s): from starting the process
  until its retained online status. The log is built by the gateway's own code, in batches of
  `SNAPSHOT_EVERY` events: each event validated by the contract, logged by the store and
  applied to the real core, with a projection (snapshot) after each batch as the gateway takes
  one every `SNAPSHOT_EVERY` entries, except the last `SNAPSHOT_EVERY - 1` events (the worst
  tail a restart replays). Only MQTT is skipped while building it.

On PostgreSQL (a throwaway cluster, `andon.sim.postgres`), several gateways sharing it:

- `ratio_postgres`: the same pairs with the gateway on PostgreSQL (it owns every line);
- `takeover_p99_s`: two gateways on 4 lines; kill -9 one, time until the other holds its
  lines' leases (lease 3 s), restart it; over `--kills` kills (3 by default, 20 for the goal);
- `scaling`: aggregate events/s with 1, 2 and 4 gateways on 4 lines of 250 boards, published
  live by this process (which shares the cores: on a small machine it bounds the figure).

Ends with one JSON line. Run: .venv/bin/python -m bench.gateway [--rounds N] [--pairs N]
[--log-events N] [--kills N] [--scaling-rounds N] [--parts throughput,latency,...]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import tomli_w

from andon import contract
from andon.config import PlantConfig, load_plant
from andon.core import Plant, Record
from andon.runtime.netloop import no_delay
from andon.runtime.replay import SNAPSHOT_EVERY
from andon.runtime.service import entry_of
from andon.runtime.store import Projection, SqliteStore, connect, open_store
from andon.runtime.store_pg import PgStore
from andon.sim.mosquitto import start_broker
from andon.sim.postgres import start_postgres

SITE = "BENCH"
LINES, STATIONS = 10, 100  # 1,000 boards
BOARDS = LINES * STATIONS
# Mosquitto holds small packets back for Nagle's algorithm unless told: milliseconds on every
# state publish. A plant's broker wants the same line.
# Mosquitto drops a session's QoS 1 messages past max_queued_messages (1,000 by default): the
# gateway then waits behind the gap for the board's resend, which these simulated boards never
# make. A plant's broker should queue more for the gateway too.
BROKER_CONF = "allow_anonymous true\nmax_queued_messages 100000\n"
# Long enough that the gateway takes a projection (SNAPSHOT_EVERY entries) during it.
LATENCY_S = SNAPSHOT_EVERY // 1000 + 5
# The first quarter of a backlog is left out of a drain rate: a subscriber's connect, and for
# the gateway its intake's start and the first batches, are not its sustained rate.
WARM_UP = 0.25
SCALING_SHAPE = (4, 250)  # lines, stations per line: 1,000 boards the gateways split


def plant_toml(
    workdir: Path,
    broker,
    client_id: str,
    store_url: str | None = None,
    shape: tuple[int, int] = (LINES, STATIONS),
) -> Path:
    """A plant of 1,000 stations (`shape`: lines, stations per line) for this broker, on SQLite
    or on the PostgreSQL `store_url`, written where `andon gateway` reads it."""
    lines = [
        {
            "id": f"L{li}",
            "name": f"Line {li}",
            "stations": [
                {"id": f"S{si:03}", "name": "s", "board": board(li, si), "profile": "p"}
                for si in range(shape[1])
            ],
        }
        for li in range(shape[0])
    ]
    data = {
        "site": SITE,
        "gateway": {"database": str(workdir / "andon.db"), "client_id": client_id},
        "broker": {"host": broker.host, "port": broker.port},
        "lines": lines,
    }
    if store_url:
        data["store"] = {"url": store_url}
    PlantConfig.model_validate(data)  # fail here, not in the gateway process
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "plant.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def board(li: int, si: int) -> str:
    return f"B{li:02}{si:03}"


def events(
    rounds: int, ts: int, shape: tuple[int, int] = (LINES, STATIONS), first: int = 1
) -> Iterator[tuple[str, bytes]]:
    """(topic, payload) for every board, events `first`..`rounds` each, alternating pull and
    reset."""
    for seq in range(first, rounds + 1):
        kind = "cord_pulled" if seq % 2 else "cord_reset"
        for li in range(shape[0]):
            for si in range(shape[1]):
                yield (
                    contract.Station(SITE, f"L{li}", f"S{si:03}").topic("evt"),
                    json.dumps(
                        {"board": board(li, si), "boot": 1, "seq": seq, "base": 1, "ts": ts,
                         "age": None, "kind": kind, "input": "cord"}
                    ).encode(),
                )  # fmt: skip


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@contextmanager
def mqtt_client(
    broker,
    client_id: str,
    subscribe: list[str] = (),
    on_message: Callable[[mqtt.MQTTMessage], None] | None = None,
    clean: bool = True,
) -> Iterator[mqtt.Client]:
    """A connected client (subscribed, when asked) for the length of the block."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    c.max_inflight_messages_set(0)
    c.on_socket_open = no_delay
    subscribed = threading.Event()
    if on_message:
        c.on_message = lambda _c, _u, msg: on_message(msg)
    c.on_subscribe = lambda *_: subscribed.set()
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        if subscribe:
            c.subscribe([(t, 1) for t in subscribe])
            if not subscribed.wait(10):
                raise RuntimeError(f"{client_id}: no SUBACK")
        yield c
    finally:
        c.loop_stop()
        c.disconnect()


def publish_all(broker, messages) -> int:
    """Publish at QoS 1, waiting for each 30,000: a client has 65,535 message ids in flight."""
    count = 0
    with mqtt_client(broker, "bench-pub") as pub:
        pending = iter(messages)
        while chunk := list(itertools.islice(pending, 30_000)):
            infos = [pub.publish(t, p, qos=1) for t, p in chunk]
            for info in infos:
                info.wait_for_publish(60)
            count += len(infos)
    return count


def bare_rate(broker, rounds: int) -> float:
    """Events/s a paho subscriber that only decodes JSON drains from a queued backlog, from
    the end of its first `WARM_UP` of the backlog to the last event."""
    done, count, total = threading.Event(), [0], [0]
    warm = [0, 0.0]  # events, perf_counter at the end of the warm-up

    def on_message(msg):
        json.loads(msg.payload)
        count[0] += 1
        if count[0] == warm[0]:
            warm[1] = time.perf_counter()
        if count[0] == total[0]:
            done.set()

    with mqtt_client(broker, "bench-bare", ["andon/v1/+/+/+/evt"], clean=False):
        pass  # the persistent session that will hold the backlog
    total[0] = publish_all(broker, events(rounds, wall_ms()))
    warm[0] = warm_up(rounds) * BOARDS
    with mqtt_client(broker, "bench-bare", on_message=on_message, clean=False):
        if not done.wait(300):
            raise RuntimeError(f"bare subscriber: {count[0]} of {total[0]} events")
        elapsed = time.perf_counter() - warm[1]
    # End the persistent session: else the broker queues the gateway's backlog for it too
    with mqtt_client(broker, "bench-bare", clean=True):
        pass
    return (count[0] - warm[0]) / elapsed


def warm_up(rounds: int) -> int:
    """The rounds of a backlog left out of a rate: connecting, and the first batches."""
    return max(1, round(rounds * WARM_UP))


class GatewayStatus:
    """Watches `andon/v1/gateway/status`: when the gateway came online (a birth since the
    last `expect()`, not an older retained one)."""

    def __init__(self) -> None:
        self.online_at: float | None = None
        self._online = threading.Event()
        self._after = 0

    def on_message(self, msg: mqtt.MQTTMessage) -> None:
        status = json.loads(msg.payload)
        if msg.topic == contract.GATEWAY_STATUS and status.get("since", -1) >= self._after:
            self.online_at = time.perf_counter()
            self._online.set()

    def expect(self) -> None:
        self._after = wall_ms()
        self.online_at = None
        self._online.clear()

    def wait(self, timeout: float = 120) -> float:
        if not self._online.wait(timeout):
            raise RuntimeError(f"the gateway did not come online within {timeout} s")
        return self.online_at


@contextmanager
def gateway_process(config: Path, status: GatewayStatus | None, name: str = "") -> Iterator[float]:
    """`andon gateway` running until the end of the block (then SIGTERM); yields when it
    started (perf_counter). Its log goes next to the configuration."""
    with gateways(config, [name], status) as running:
        yield running[name].started


@dataclass
class _Process:
    proc: subprocess.Popen
    started: float


@contextmanager
def gateways(config: Path, names: list[str], status: GatewayStatus | None = None):
    """`andon gateway` processes (`--name`d unless the name is empty) for the block."""
    if status is not None:
        status.expect()
    log = (config.parent / "gateway.log").open("ab")
    running: dict[str, _Process] = {}
    try:
        for name in names:
            running[name] = spawn(config, name, log)
        yield running
    finally:
        for each in running.values():
            stop(each.proc)
        log.close()


def spawn(config: Path, name: str, log) -> _Process:
    andon = str(Path(sys.executable).with_name("andon"))
    named = ["--name", name] if name else []
    started = time.perf_counter()
    proc = subprocess.Popen([andon, "gateway", "--config", str(config), *named], stderr=log)
    return _Process(proc, started)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def gateway_rate(workdir: Path, broker, rounds: int, store_url: str | None = None) -> float:
    """Events/s the gateway drains from a backlog, durably committed and acknowledged, from
    the end of its first `WARM_UP` of the backlog to the last event.

    Timed by the last board's acks: the broker delivers the backlog in order and the gateway
    commits it in order, so when that board's round k is acknowledged, every board's round k
    is committed. The first ack at or past the warm-up starts the clock, the last event's stops
    it. Only that one board's acks are watched (an observer of all 1,000 would compete for the
    CPU the bare subscriber has to itself); every board's progress is checked in the database
    afterwards."""
    config = plant_toml(workdir / "rate", broker, "gw-bench", store_url)
    status, done = GatewayStatus(), threading.Event()
    last_board = board(LINES - 1, STATIONS - 1)
    last_ack = contract.Station(SITE, f"L{LINES - 1}", f"S{STATIONS - 1:03}").topic("ack")
    warm: list = [warm_up(rounds), None]  # the round reached, and when

    def on_message(msg):
        if msg.topic == last_ack:
            seq = json.loads(msg.payload)["seq"]
            if warm[1] is None and seq >= warm[0]:
                warm[:] = seq, time.perf_counter()
            if seq == rounds:
                done.set()
        else:
            status.on_message(msg)

    with mqtt_client(broker, "bench-acks", [contract.GATEWAY_STATUS, last_ack], on_message):
        with gateway_process(config, status):  # first run: the persistent session
            status.wait()
        publish_all(broker, events(rounds, wall_ms()))
        with gateway_process(config, status):
            if not done.wait(600):
                raise RuntimeError(f"the gateway did not acknowledge {last_board}'s last event")
            elapsed = time.perf_counter() - warm[1]
    store = open_store(load_plant(config))
    try:
        progress = store.progress()
    finally:
        store.close()
    behind = {b: p.seq for b, p in progress.items() if p.seq != rounds}
    missing = BOARDS - len(progress)
    if behind or missing:
        raise RuntimeError(f"boards not fully stored: {missing} missing, behind: {behind}")
    if warm[0] == rounds:
        raise RuntimeError("the backlog was done in one batch: raise --rounds")
    return (rounds - warm[0]) * BOARDS / elapsed


def latency(workdir: Path, broker, rate: int, seconds: float) -> list[float]:
    """Publish at `rate` events/s; ms from each publish to the station state it causes."""
    config = plant_toml(workdir / "lat", broker, "gw-lat")
    status = GatewayStatus()
    sent: dict[str, deque] = defaultdict(deque)
    got: list[float] = []
    lock = threading.Lock()

    def on_state(msg):
        arrived = time.perf_counter()
        station = msg.topic.rsplit("/", 1)[0] + "/evt"
        with lock:
            if sent[station]:
                got.append((arrived - sent[station].popleft()) * 1000)

    count = int(rate * seconds)
    stream = list(events(count // BOARDS + 1, wall_ms()))[:count]
    with (
        mqtt_client(broker, "bench-lat-status", [contract.GATEWAY_STATUS], status.on_message),
        gateway_process(config, status),
    ):
        status.wait()
        time.sleep(1.0)  # the gateway's initial state publishes go by first
        with (
            mqtt_client(broker, "bench-lat-sub", [f"andon/v1/{SITE}/+/+/state"], on_state),
            mqtt_client(broker, "bench-lat-pub") as pub,
        ):
            time.sleep(0.5)  # the retained states arrive
            with lock:
                got.clear()
            start = time.perf_counter()
            for i, (t, p) in enumerate(stream):
                while (ahead := start + i / rate - time.perf_counter()) > 0:
                    time.sleep(min(ahead, 0.0005))
                with lock:
                    sent[t].append(time.perf_counter())
                pub.publish(t, p, qos=1)
            time.sleep(2.0)
    if len(got) != count:
        raise RuntimeError(f"{count} events published, {len(got)} state publishes seen")
    return got


def disk_commits(workdir: Path, count: int = 500) -> list[float]:
    """ms per durable SQLite commit (WAL, synchronous=FULL, as the gateway's) in this directory,
    one every 2 ms: a slow fsync delays every state publish behind it."""
    db = connect(workdir / "disk.db")
    db.execute("CREATE TABLE IF NOT EXISTS t (x BLOB)")
    took = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?)", (bytes(2000),))
            db.execute("COMMIT")
            took.append((time.perf_counter() - start) * 1000)
            time.sleep(0.002)
    finally:
        db.close()
    return took


def restart_time(workdir: Path, broker, log_events: int) -> float:
    """Fill a log as the gateway would (see the module docstring), then time a restart."""
    config_path = plant_toml(workdir / "big", broker, "gw-big")
    config = load_plant(config_path)
    store = SqliteStore(config.gateway.database)
    plant, now = Plant(config), wall_ms() - log_events
    # the worst case: the last projection is SNAPSHOT_EVERY - 1 entries behind the log's end
    projected = log_events - (SNAPSHOT_EVERY - 1)
    stream = events(log_events // BOARDS, now)
    try:
        for start in range(0, projected, SNAPSHOT_EVERY):
            batch = itertools.islice(stream, min(SNAPSHOT_EVERY, projected - start))
            now = fill(store, plant, config, batch, now, project=True)
        fill(store, plant, config, stream, now, project=False)  # the tail to replay
    finally:
        store.close()
    status = GatewayStatus()
    with (
        mqtt_client(broker, "bench-big-status", [contract.GATEWAY_STATUS], status.on_message),
        gateway_process(config_path, status) as started,
    ):
        return status.wait() - started


def fill(
    store: SqliteStore, plant: Plant, config: PlantConfig, batch, now: int, project: bool
) -> int:
    """One batch into the log and the core, as the gateway's worker does; a projection after
    it when asked."""
    with store.transaction() as tx:
        for t, p in batch:
            now += 1
            _, msg = contract.decode_uplink(t, p)
            line, st = config.station_of_board(msg.board)
            entry = entry_of(now, line, st, msg)
            [(pos, _)] = tx.append(entry)  # in order: logged at once
            plant.apply(Record(now, line, st, msg, entry.at))
        tx.set_clock(now)
        if project:
            tx.save_projection(Projection(pos, now, plant.snapshot()))
    return now


def throughput(workdir: Path, rounds: int, pairs: int) -> list[tuple[float, float]]:
    """(bare, gateway) events/s, `pairs` times, each pair on a broker and in a directory of its
    own: on a shared machine the baseline itself swings from run to run, so one pair says
    little; their median ratio says more."""
    found = []
    for i in range(pairs):
        with start_broker(workdir / f"broker-{i}", extra_conf=BROKER_CONF) as broker:
            bare = bare_rate(broker, rounds)
            rate = gateway_rate(workdir / f"pair-{i}", broker, rounds)
        print(
            f"pair {i + 1}: bare paho subscriber (decode JSON) {bare:,.0f} events/s,"
            f" gateway with durable commits {rate:,.0f} events/s ({rate / bare:.2f} of bare)"
        )
        found.append((bare, rate))
    return found


def new_database(cluster, name: str) -> str:
    with psycopg.connect(cluster.url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    url = cluster.url.rsplit("/", 1)[0] + "/" + name
    PgStore(url).close()  # the schema, so that the leases can be watched from the start
    return url


def owners(url: str) -> dict[str, str]:
    """line -> the gateway whose lease on it is alive."""
    with psycopg.connect(url) as db:
        return dict(db.execute("SELECT line, owner FROM lease WHERE expires > now()").fetchall())


def wait_until(what: str, cond: Callable[[], bool], timeout: float = 60, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {timeout} s: {what}")
        time.sleep(every)


def postgres_throughput(workdir: Path, cluster, rounds: int, pairs: int) -> list[tuple]:
    """As `throughput`, with the gateway on PostgreSQL (one gateway, owning every line)."""
    found = []
    for i in range(pairs):
        url = new_database(cluster, f"pair{i}")
        with start_broker(workdir / f"pg-broker-{i}", extra_conf=BROKER_CONF) as broker:
            bare = bare_rate(broker, rounds)
            rate = gateway_rate(workdir / f"pg-pair-{i}", broker, rounds, url)
        print(
            f"pair {i + 1}: bare {bare:,.0f} events/s, gateway on PostgreSQL {rate:,.0f}"
            f" events/s ({rate / bare:.2f} of bare)"
        )
        found.append((bare, rate))
    return found


def takeover_times(workdir: Path, cluster, kills: int) -> list[float]:
    """Two gateways on 4 lines: kill -9 one, time until its lines are leased by the other
    (default lease 3 s); restart it, let them split the lines again; `kills` times."""
    url = new_database(cluster, "takeover")
    took = []
    with start_broker(workdir / "takeover-broker", extra_conf=BROKER_CONF) as broker:
        config = plant_toml(workdir / "takeover", broker, "gw-to", url, SCALING_SHAPE)
        split = lambda: sorted(set(owners(url).values())) == ["a", "b"]  # noqa: E731
        with gateways(config, ["a", "b"]) as running:
            for i in range(kills):
                try:
                    wait_until("the gateways split the lines", split, 120)
                except RuntimeError as exc:
                    raise RuntimeError(f"{exc}; the live leases: {owners(url)}") from None
                victim = "ab"[i % 2]
                lines = [line for line, owner in owners(url).items() if owner == victim]
                killed_at = time.perf_counter()
                running[victim].proc.kill()
                running[victim].proc.wait()
                wait_until(
                    "the lines taken over",
                    lambda victim=victim, lines=lines: all(
                        owners(url).get(line) not in (None, victim) for line in lines
                    ),
                )
                took.append(time.perf_counter() - killed_at)
                print(f"kill {i + 1}: {', '.join(lines)} taken over in {took[-1]:.2f} s")
                with (config.parent / "gateway.log").open("ab") as log:
                    running[victim] = spawn(config, victim, log)
    return took


def scaling(workdir: Path, cluster, rounds: int, counts=(1, 2, 4)) -> dict[str, float]:
    """Aggregate events/s with 1, 2, 4 gateways on 4 lines of 250 boards, on PostgreSQL."""
    found = {}
    for count in counts:
        found[str(count)] = gateways_rate(workdir / f"scaling-{count}", cluster, count, rounds)
        print(f"{count} gateway(s) on {SCALING_SHAPE[0]} lines: {found[str(count)]:,.0f} events/s")
    return found


def gateways_rate(workdir: Path, cluster, count: int, rounds: int) -> float:
    """The gateways split the lines first; a warm-up round (seq 1 of every board, acknowledged)
    shows each subscribed; then the other rounds are published at once and timed until every
    line's last board has its last ack. The publisher shares the machine: on few cores it
    bounds the figure."""
    lines, stations = SCALING_SHAPE
    url = new_database(cluster, f"scaling{count}")
    names = [f"g{i}" for i in range(count)]
    last_acks = [
        contract.Station(SITE, f"L{li}", f"S{stations - 1:03}").topic("ack") for li in range(lines)
    ]
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def on_ack(msg):
        with lock:
            seen[msg.topic] = max(seen.get(msg.topic, 0), json.loads(msg.payload)["seq"])

    def acked(seq: int) -> bool:
        with lock:
            return len(seen) == lines and min(seen.values()) >= seq

    share = [lines // count] * count
    with (
        start_broker(workdir / "broker", extra_conf=BROKER_CONF) as broker,
        mqtt_client(broker, "bench-scaling-acks", last_acks, on_ack),
    ):
        config = plant_toml(workdir, broker, "gw-sc", url, SCALING_SHAPE)
        with gateways(config, names):
            wait_until(
                "the lines split evenly",
                lambda: sorted(Counter(owners(url).values()).values()) == share,
            )
            for _ in range(20):  # a warm-up event published before a subscription is lost
                publish_all(broker, events(1, wall_ms(), SCALING_SHAPE))
                with contextlib.suppress(RuntimeError):
                    wait_until("the warm-up round acknowledged", lambda: acked(1), 5)
                    break
            start = time.perf_counter()
            n = publish_all(broker, events(rounds, wall_ms(), SCALING_SHAPE, first=2))
            wait_until("every event acknowledged", lambda: acked(rounds), 600, every=0.005)
            return n / (time.perf_counter() - start)


PARTS = ("throughput", "latency", "restart", "postgres", "takeover", "scaling")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=80, help="events per board, throughput")
    # the baseline swings by half from pair to pair: a median of 5 moves less than one of 3
    parser.add_argument("--pairs", type=int, default=5, help="bare/gateway throughput pairs")
    parser.add_argument("--log-events", type=int, default=1_000_000)
    parser.add_argument("--kills", type=int, default=3, help="gateway kills (20 for the p99)")
    parser.add_argument("--scaling-rounds", type=int, default=5, help="events per board")
    parser.add_argument("--parts", default=",".join(PARTS), help="which measures to run")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    found: dict = {"bench": "gateway", "boards": BOARDS}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        if "throughput" in parts:
            found.update(sqlite_throughput(workdir, args.rounds, args.pairs))
        if parts & {"latency", "restart"}:
            found.update(latency_and_restart(workdir, parts, args.log_events))
        if parts & {"postgres", "takeover", "scaling"}:
            cluster = stack.enter_context(start_postgres())
        if "postgres" in parts:
            pg = postgres_throughput(workdir, cluster, args.rounds, args.pairs)
            found["ratio_postgres"] = round(statistics.median(r / b for b, r in pg), 3)
            found["postgres_events_per_s"] = [round(r) for _, r in pg]
            print(f"gateway on PostgreSQL / bare, median: {found['ratio_postgres']:.2f}")
        if "takeover" in parts:
            took = takeover_times(workdir, cluster, args.kills)
            p99 = statistics.quantiles(took, n=100)[98] if len(took) > 1 else took[0]
            found["takeover_p99_s"] = round(p99, 2)
            found["takeovers"] = len(took)
            print(f"takeover after kill -9, p99 of {len(took)}: {p99:.2f} s")
        if "scaling" in parts:
            rates = scaling(workdir, cluster, args.scaling_rounds)
            found["scaling"] = {k: round(v) for k, v in rates.items()}
            found["cores"] = os.cpu_count()
    print(json.dumps(found))


def sqlite_throughput(workdir: Path, rounds: int, pairs: int) -> dict:
    found = throughput(workdir, rounds, pairs)
    ratios = [rate / bare for bare, rate in found]
    ratio = statistics.median(ratios)
    print(f"gateway / bare, median of {len(found)} pairs: {ratio:.2f}")
    return {
        "bare_events_per_s": [round(bare) for bare, _ in found],
        "gateway_events_per_s": [round(rate) for _, rate in found],
        "ratio": round(ratio, 3),
        "ratios": [round(r, 3) for r in ratios],
    }


def latency_and_restart(workdir: Path, parts: set[str], log_events: int) -> dict:
    found = {}
    with start_broker(workdir / "broker", extra_conf=BROKER_CONF) as broker:
        if "latency" in parts:
            disk = statistics.quantiles(disk_commits(workdir), n=100)
            print(f"disk: a durable commit p50 {disk[49]:.2f} ms, p99 {disk[98]:.2f} ms")
            lat = latency(workdir, broker, rate=1000, seconds=LATENCY_S)
            q = statistics.quantiles(lat, n=100)
            print(f"publish -> state at 1,000 events/s: p50 {q[49]:.2f} ms, p99 {q[98]:.2f} ms")
            disk_after = statistics.quantiles(disk_commits(workdir), n=100)
            print(f"disk after: a durable commit p99 {disk_after[98]:.2f} ms")
            found.update(
                latency_samples=len(lat),
                p50_ms=round(q[49], 2),
                p99_ms=round(q[98], 2),
                disk_commit_p99_ms=round(max(disk[98], disk_after[98]), 2),
            )
        if "restart" in parts:
            restart = restart_time(workdir, broker, log_events)
            print(f"restart with {log_events:,} events in the log: {restart:.2f} s")
            found.update(log_events=log_events, restart_s=round(restart, 3))
    return found


if __name__ == "__main__":
    main()
