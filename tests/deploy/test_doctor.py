"""`andon doctor` against real brokers (issue #14): each check says OK or FAIL, what is wrong
and how to fix it, and any FAIL exits 1."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import struct
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import tomli_w

from andon.config import PlantConfig, load_plant
from andon.maint.doctor import (
    NTP_EPOCH_OFFSET,
    Check,
    check_clock,
    firmware_version,
    run_checks,
)
from andon.maint.provision import GATEWAY_USER
from andon.runtime.service import Gateway
from andon.sim.mosquitto import free_port
from andon.sim.observe import wait_for
from andon.sim.rig import andon_command
from tests.e2e.test_flash import secured_broker
from tests.gateway.test_service import BOARDS, Watcher, plant_config, topic


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def _logged_in(config: PlantConfig, password: str | None) -> PlantConfig:
    broker = config.broker.model_copy(update={"username": GATEWAY_USER, "password": password})
    return config.model_copy(update={"broker": broker})


def test_a_provisioned_broker_passes_its_login_checks(tmp_path):
    with secured_broker(tmp_path) as (plant, _broker, secrets):
        config = _logged_in(load_plant(plant.config), secrets[GATEWAY_USER])
        checks = by_name(run_checks(config, plant.provisioned))
        wrong = by_name(run_checks(_logged_in(config, "not-the-password")))
    assert checks["broker reachable"].ok, checks["broker reachable"]
    assert checks["logins enforced"].ok, checks["logins enforced"]
    assert checks["board accounts"].ok, checks["board accounts"]
    assert checks["database writable"].ok  # not created yet, its directory writable
    assert not checks["boards online"].ok and checks["boards online"].fix
    refused = wrong["broker reachable"]
    assert not refused.ok and f"refused {GATEWAY_USER}" in refused.found
    assert "secrets.json" in refused.fix


def test_an_anonymous_broker_fails_the_login_check(tmp_path, broker):
    checks = by_name(run_checks(plant_config(tmp_path, broker)))
    assert checks["broker reachable"].ok
    enforced = checks["logins enforced"]
    assert not enforced.ok and "accepts an anonymous client" in enforced.found
    assert "allow_anonymous false" in enforced.fix


def test_an_unreachable_broker_is_named_with_its_port(tmp_path, broker):
    config = plant_config(tmp_path, broker)
    port = free_port()
    moved = config.model_copy(update={"broker": config.broker.model_copy(update={"port": port})})
    check = by_name(run_checks(moved))["broker reachable"]
    assert not check.ok and f"127.0.0.1:{port} unreachable" in check.found
    assert "start Mosquitto" in check.fix


def _birth(board: str, fw: str) -> bytes:
    return json.dumps(
        {"board": board, "boot": 1, "online": True, "fw": fw, "reset_cause": 1}
        | {"outbox": 0, "outbox_cap": 512, "outbox_near_full": False}
    ).encode()


def _births_logged(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database)) as db:
        return db.execute("SELECT count(*) FROM log WHERE kind = 'birth'").fetchone()[0]


def test_doctor_names_offline_boards_and_old_firmware_and_exits_1(tmp_path, broker):
    config = plant_config(tmp_path, broker)
    gateway = Gateway(config)
    watcher = Watcher(broker)
    try:
        gateway.start()
        watcher.wait_for(lambda t, b: t == "andon/v1/gateway/status" and b.get("online"))
        watcher.publish(topic("S01", "status"), _birth(BOARDS["S01"], firmware_version()))
        watcher.publish(topic("S02", "status"), _birth(BOARDS["S02"], "0.0.9"))
        # a station counts as online until a Will: only the log tells the births came
        wait_for("both births logged", lambda: _births_logged(config.gateway.database) == 2)
    finally:
        gateway.stop()
        watcher.close()
    data = json.loads(config.model_dump_json(exclude_none=True))
    path = tmp_path / "plant.toml"
    path.write_text(tomli_w.dumps(data))

    run = subprocess.run(
        andon_command("doctor", "--config", str(path)), capture_output=True, text=True
    )
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    assert any(x.startswith("OK   database writable") for x in lines)
    assert any(x.startswith("FAIL logins enforced") for x in lines)  # anonymous broker
    firmware = next(x for x in lines if "firmware versions" in x)
    assert firmware.startswith("FAIL") and "0.0.9 on 1" in firmware
    fix = lines[lines.index(firmware) + 1]
    assert fix.strip().startswith("fix: andon flash") and BOARDS["S02"] in fix

    as_json = subprocess.run(
        andon_command("doctor", "--config", str(path), "--json"), capture_output=True, text=True
    )
    checks = {c["name"]: c for c in json.loads(as_json.stdout)}
    assert as_json.returncode == 1 and checks["clock in sync"]["ok"]


class SntpServer:
    """A one-socket SNTP server on loopback whose clock is `skew_s` off this machine's."""

    def __init__(self, skew_s: float) -> None:
        self.skew_s = skew_s
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):  # closed
            while True:
                _, client = self.sock.recvfrom(48)
                now = time.time() + self.skew_s + NTP_EPOCH_OFFSET
                stamp = struct.pack("!II", int(now), int((now % 1) * 2**32))
                self.sock.sendto(b"\x24" + 39 * b"\0" + stamp, client)

    def close(self) -> None:
        self.sock.close()


def test_the_clock_check_asks_the_ntp_server(tmp_path, broker):
    config = plant_config(tmp_path, broker)
    skewed, right = SntpServer(-30.0), SntpServer(0.0)
    try:
        off = check_clock(config, skewed.address)
        fine = check_clock(config, right.address)
    finally:
        skewed.close()
        right.close()
    assert not off.ok and "+30." in off.found and "NTP" in off.found and "timedatectl" in off.fix
    assert fine.ok, fine


def _on_postgres(config: PlantConfig, url: str) -> PlantConfig:
    return config.model_copy(update={"store": config.store.model_copy(update={"url": url})})


def _births(url: str) -> int:
    with psycopg.connect(url) as db:
        return db.execute("SELECT count(*) FROM log WHERE kind = 'birth'").fetchone()[0]


def test_on_postgresql_doctor_checks_the_database_the_gateways_share(tmp_path, broker, postgres):
    config = _on_postgres(plant_config(tmp_path, broker), postgres)
    before = by_name(run_checks(config))
    gateway = Gateway(config, name="a")
    watcher = Watcher(broker)
    try:
        gateway.start()
        watcher.wait_for(lambda t, b: t == "andon/v1/gateway/status" and b.get("online"))
        watcher.publish(topic("S02", "status"), _birth(BOARDS["S02"], "0.0.9"))
        wait_for("the birth in PostgreSQL", lambda: _births(postgres))
    finally:
        gateway.stop()
        watcher.close()
    checks = by_name(run_checks(config))
    unreachable = f"postgresql://andon@127.0.0.1:{free_port()}/andon"
    down = by_name(run_checks(_on_postgres(config, unreachable)))

    assert before["database writable"].ok and "no tables yet" in before["database writable"].found
    assert not before["firmware versions"].ok and before["firmware versions"].found == (
        "no database yet"
    )
    assert not config.gateway.database.exists()  # every check below read PostgreSQL
    written = checks["database writable"]
    assert (
        written.ok and written.found.startswith("PostgreSQL") and "no tables" not in written.found
    )
    firmware = checks["firmware versions"]
    assert not firmware.ok and "0.0.9 on 1" in firmware.found and BOARDS["S02"] in firmware.fix
    assert checks["clock in sync"].found == "not behind the gateway's last clock"
    assert "S02" not in checks["boards online"].found  # online, from the log in PostgreSQL
    assert not down["database writable"].ok and "[store] url" in down["database writable"].fix
    unread = down["firmware versions"]  # a check that reads the store fails, it does not raise
    assert not unread.ok and unread.found.startswith("cannot read the store: connection failed")
