"""Observability (issue #14, finding 6): Prometheus `/metrics` on the gateway's HTTP server,
read from its state at scrape time, and `--log-format json` lines for calls, stops, alerts."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import urllib.request
from collections import Counter

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from andon.config import PlantConfig, hash_token
from andon.core.effects import Alert, CallRecord, LineChanged
from andon.runtime.api import ApiServer
from andon.runtime.logs import BURST, JsonFormatter, log_effects
from andon.runtime.service import Gateway
from andon.sim.mosquitto import free_port
from andon.sim.observe import wait_for
from andon.sim.rig import andon_command
from tests.gateway.test_service import BOARDS, Watcher, evt, plant_config, topic


def _with_http(config: PlantConfig) -> PlantConfig:
    http = {"host": "127.0.0.1", "port": free_port()}
    data = config.model_dump()
    data["gateway"]["http"] = http
    data["api_tokens"] = [{"name": "t", "hash": hash_token("t" * 16)}]
    return PlantConfig.model_validate(data)


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_what_the_gateway_accepted_rejected_and_what_boards_report(tmp_path, broker):
    config = _with_http(plant_config(tmp_path, broker))
    gateway = Gateway(config)
    api = ApiServer(config, gateway)
    watcher = Watcher(broker)
    url = f"http://127.0.0.1:{config.gateway.http.port}/metrics"
    try:
        gateway.start()
        api.start()
        watcher.wait_for(lambda t, b: t == "andon/v1/gateway/status" and b.get("online"))
        watcher.publish(topic("S01"), evt(1, "cord_pulled"))
        watcher.publish(topic("S01"), b'{"kind": "nonsense"}')
        health = {"board": BOARDS["S02"], "boot": 1, "uptime_s": 60, "heap_free": 71000}
        health |= {"outbox": 3, "reconnects": 0, "rssi": -61}
        watcher.publish(topic("S02", "telemetry"), json.dumps(health).encode())
        watcher.wait_for(lambda t, b: t == topic("S01", "ack") and b["seq"] == 1)

        def scraped() -> dict | None:
            metrics = _scrape(url)
            where = (("board", BOARDS["S02"]), ("line", "L1"), ("station", "S02"))
            return metrics if ("andon_board_outbox", where) in metrics else None

        metrics = wait_for("S02's telemetry in /metrics", scraped)
    finally:
        watcher.close()
        api.stop()
        gateway.stop()
    where = (("board", BOARDS["S02"]), ("line", "L1"), ("station", "S02"))
    assert metrics["andon_log_entries_total", ()] >= 1
    rejected = {
        labels: v for (name, labels), v in metrics.items() if name == "andon_rejected_total"
    }
    assert sum(rejected.values()) == 1
    assert metrics["andon_board_outbox", where] == 3
    assert metrics["andon_board_rssi_dbm", where] == -61
    assert metrics["andon_board_heap_free_bytes", where] == 71000
    assert metrics["andon_commit_seconds_count", ()] >= 1
    assert metrics["andon_open_calls", ()] == 1
    assert ("andon_queue_depth", ()) in metrics
    assert ("andon_boards_online", (("line", "L1"),)) in metrics
    assert metrics["andon_webhooks_pending", ()] == 0
    assert metrics["andon_webhooks_failed_total", ()] == 0


def test_a_gateway_on_postgresql_shows_the_telemetry_another_gateway_stored(
    tmp_path, broker, postgres
):
    data = plant_config(tmp_path, broker).model_dump()
    data["store"] = {"url": postgres}
    owner_config = _with_http(PlantConfig.model_validate(data))
    other_config = _with_http(owner_config)  # the same plant, another HTTP port
    owner, other = Gateway(owner_config, name="a"), Gateway(other_config, name="b")
    api = ApiServer(other_config, other)
    watcher = Watcher(broker)
    where = (("board", BOARDS["S02"]), ("line", "L1"), ("station", "S02"))
    try:
        owner.start()  # owns L1, the plant's one line, once this returns
        other.start()
        api.start()
        # one telemetry message, not sent again: only once a's intake listens to L1
        wait_for("a subscribed to L1", lambda: owner.health()["intake_up"])
        health = {"board": BOARDS["S02"], "boot": 1, "uptime_s": 60, "heap_free": 52000}
        health |= {"outbox": 7, "reconnects": 0, "rssi": None}
        watcher.publish(topic("S02", "telemetry"), json.dumps(health).encode())
        url = f"http://127.0.0.1:{other_config.gateway.http.port}/metrics"

        def scraped() -> dict | None:
            metrics = _scrape(url)
            return metrics if ("andon_board_outbox", where) in metrics else None

        metrics = wait_for("S02's telemetry in the other gateway's /metrics", scraped)
        with psycopg.connect(postgres) as db:
            leases = db.execute("SELECT line, owner FROM lease").fetchall()
    finally:
        watcher.close()
        api.stop()
        other.stop()
        owner.stop()
    assert leases == [("L1", "a")]  # b owns no line: it read what a stored
    assert metrics["andon_board_outbox", where] == 7
    assert metrics["andon_board_heap_free_bytes", where] == 52000
    assert ("andon_board_rssi_dbm", where) not in metrics
    assert metrics["andon_webhooks_pending", ()] == 0


def test_json_logs_give_one_line_per_call_line_stop_and_alert(caplog):
    call = CallRecord(
        "P1", "C-000001", "L1", "S03", "cord", 1000, None, None, 5000, None, None, None, 0, 0,
        None, None,
    )  # fmt: skip
    stop = LineChanged("P1", "L1", "stopped", ("S03",), (), 5000)
    alert = Alert("P1", "station_offline", "L1/S04 offline: check its power", 6000, "L1", "S04")
    with caplog.at_level(logging.INFO, logger="andon.plant"):
        log_effects([call, stop, alert])
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    assert [(x["event"], x["level"]) for x in lines] == [
        ("call", "info"),
        ("line", "info"),
        ("alert", "warning"),
    ]
    assert lines[0]["phase"] == "stopped the line" and lines[0]["call"] == "C-000001"
    assert lines[1]["state"] == "stopped" and lines[1]["stopped"] == ["S03"]
    assert lines[2]["kind"] == "station_offline" and "power" in lines[2]["msg"]


def test_a_burst_of_changes_is_logged_as_one_summary_and_its_alerts_one_by_one(caplog):
    # A catch-up after an outage: thousands of changes a batch; journald would drop lines
    # past its rate limit at random, so the burst is one line and every alert its own.
    calls = [
        CallRecord(
            "P1", f"C-L1-{n:06}", "L1", f"S{n:02}", "cord", 1000, None, None,
            5000 if n % 2 else None, 9000 if n % 3 == 0 else None, None, None, 0, 0, None, None,
        )
        for n in range(1, BURST + 1)
    ]  # fmt: skip
    lines = [LineChanged("P1", "L1", "called", (), ("S01",), 1000)]
    lines.append(LineChanged("P1", "L1", "stopped", ("S01",), (), 5000))
    alert = Alert("P1", "station_offline", "L1/S04 offline: check its power", 6000, "L1", "S04")
    with caplog.at_level(logging.INFO, logger="andon.plant"):
        log_effects([*calls, *lines, alert])
    logged = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    assert [x["event"] for x in logged] == ["burst", "alert"]
    burst = logged[0]
    phases = Counter(("resolved" if n % 3 == 0 else "stopped the line" if n % 2 else "opened")
                     for n in range(1, BURST + 1))  # fmt: skip
    assert burst["calls"] == dict(phases) and sum(phases.values()) == BURST
    assert burst["lines"] == {"L1": "stopped"}  # a line's last state in the batch
    assert f"a burst of {BURST + 2} changes" in burst["msg"]


def test_andon_gateway_log_format_json_writes_only_json_lines(tmp_path, broker):
    from tests.gateway.test_service import write_plant_toml

    path = write_plant_toml(tmp_path, broker)
    log = tmp_path / "gateway.log"
    watcher = Watcher(broker)
    with log.open("w") as out:
        gateway = subprocess.Popen(
            andon_command("gateway", "--config", str(path), "--log-format", "json"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        watcher.wait_for(lambda t, b: t == "andon/v1/gateway/status" and b.get("online"))
        watcher.publish(topic("S01"), evt(1, "cord_pulled"))
        wait_for("the call in the log", lambda: '"event": "call"' in log.read_text())
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(timeout=30) == 0
    finally:
        watcher.close()
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    call = next(x for x in lines if x.get("event") == "call")
    assert (call["phase"], call["line"], call["station"]) == ("opened", "L1", "S01")
