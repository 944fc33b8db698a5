"""Provision a plant, flash a virtual serial board through the real mpremote, and watch that
board boot from what was flashed onto a Mosquitto that enforces the generated accounts and ACL."""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from andon.config import load_plant
from andon.firmware_build import FIRMWARE
from andon.maint.flash import build_firmware, flash_board, mpremote, sha256_of
from andon.maint.provision import GATEWAY_USER
from andon.sim.mosquitto import Broker, free_port, start_broker
from andon.sim.serial import SerialBoard
from tests.gateway.test_flash import BOARD_1, BOARD_2, Plant, _flash, make_plant

OWN = "andon/v1/P1/L1/S01"
OTHER = "andon/v1/P1/L1/S02"
# Run on the board (mpremote exec): its own MQTT client and account (from its config.json)
# publish on another station's topic, then, on a new connection, on its own. It prints whether
# the broker acknowledged each (Mosquitto ends the connection of a publish the ACL refuses).
ATTEMPT = """
import asyncio, json
from andon.mqtt import MQTTClient
with open('config.json') as f:
    b = json.load(f)['broker']
async def send(topic):
    c = MQTTClient('attempt', b['host'], b['port'], b['username'], b['password'])
    await c.connect()
    asyncio.create_task(c.serve())
    acked = await c.wait_ack(await c.publish(topic, '{"attempt": 1}', qos=1))
    c.close()
    return acked
print(asyncio.run(send('OTHER/evt')), asyncio.run(send('OWN/evt')))
""".replace("OTHER", OTHER).replace("OWN", OWN)


class Subscriber:
    """The gateway's account on the broker, recording what reaches it."""

    def __init__(self, port: int, password: str, topics: list[str]) -> None:
        self.arrived: queue.Queue[tuple[str, dict]] = queue.Queue()
        subscribed: queue.Queue[bool] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-test")
        self.client.username_pw_set(GATEWAY_USER, password)
        self.client.on_message = lambda c, u, m: self.arrived.put((m.topic, json.loads(m.payload)))
        self.client.on_subscribe = lambda c, u, mid, codes, props: subscribed.put(True)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe([(t, 1) for t in topics])
        subscribed.get(timeout=10)

    def wait(self, topic: str, timeout: float = 30.0) -> tuple[list[str], dict]:
        """(topics seen before it, payload) of the first message on `topic`."""
        before = []
        while True:
            got, payload = self.arrived.get(timeout=timeout)
            if got == topic:
                return before, payload
            before.append(got)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@contextlib.contextmanager
def secured_broker(tmp_path: Path) -> Iterator[tuple[Plant, Broker, dict[str, str]]]:
    """A provisioned plant, and a Mosquitto enforcing its accounts and ACL: (plant, broker,
    the accounts' passwords)."""
    port = free_port()
    plant = make_plant(tmp_path, broker_port=port)
    secrets = json.loads((plant.provisioned / "secrets.json").read_text())
    conf = (plant.provisioned / "mosquitto" / "andon.conf").read_text()
    with start_broker(tmp_path / "broker", port=port, extra_conf=conf) as broker:
        yield plant, broker, secrets


@pytest.fixture
def board(tmp_path):
    with SerialBoard(tmp_path / "flash", uid=BOARD_1) as b:
        yield b


def test_a_flashed_board_boots_into_the_broker_under_its_own_account(tmp_path, board):
    with secured_broker(tmp_path) as (plant, broker, secrets):
        gateway = Subscriber(broker.port, secrets[GATEWAY_USER], ["andon/v1/P1/+/+/#"])
        try:
            done = _flash(plant, "--port", board.port, "--all")  # the board says who it is
            assert done.exit_code == 0, done.output
            assert f"board {BOARD_1} (uid {BOARD_1}" in done.output
            assert "firmware 0.1.0 running" in done.output

            # It holds compiled modules, its sources stay off it, and it boots from them.
            lib = board.flash / "lib"
            modules = len(list((FIRMWARE / "lib").rglob("*.py")))
            assert sorted(p.suffix for p in lib.rglob("*.*")) == [".mpy"] * modules
            assert (board.flash / "config.json").read_bytes() == (
                plant.provisioned / "boards" / BOARD_1 / "config.json"
            ).read_bytes()
            _, birth = gateway.wait(f"{OWN}/status")
            assert (birth["board"], birth["fw"], birth["online"]) == (BOARD_1, "0.1.0", True)
            # Its inputs are unwired on the bench: the cord reads as pulled (fail-safe).
            _, event = gateway.wait(f"{OWN}/evt")
            assert (event["board"], event["kind"]) == (BOARD_1, "cord_pulled")

            # Its account may not publish for another station: the broker drops it.
            assert mpremote(board.port, "exec", ATTEMPT).split()[-1] == "True"  # its own
            before, attempt = gateway.wait(f"{OWN}/evt")
            while attempt != {"attempt": 1}:  # the firmware's own events may come first
                more, attempt = gateway.wait(f"{OWN}/evt")
                before += more
            assert f"{OTHER}/evt" not in before
        finally:
            gateway.close()


def test_reflashing_copies_only_what_changed(tmp_path, board):
    plant = make_plant(tmp_path)
    config = load_plant(plant.config)
    source = tmp_path / "firmware"
    shutil.copytree(FIRMWARE, source)
    build = tmp_path / "build"

    def flash(dry_run: bool = False):
        return flash_board(config, plant.provisioned, board.port, BOARD_1, dry_run, source, build)

    first = flash()
    # every module, main.py and boot.py, and the board's config.json (not manifest.py: it
    # builds an image with the modules frozen in, and is no file of the board's)
    board_files = [p for p in source.rglob("*.py") if p.name != "manifest.py"]
    assert len(first.plan.copy) == len(board_files) + 1
    assert first.running == "0.1.0"
    assert flash(dry_run=True).summary().endswith("nothing to change")
    assert flash().plan.copy == []

    health = source / "lib" / "andon" / "health.py"
    health.write_text(health.read_text() + "\nFLASH_TEST_MARK = 1\n")
    assert flash(dry_run=True).plan.copy == ["lib/andon/health.mpy"]
    assert "would copy lib/andon/health.mpy" in flash(dry_run=True).summary()
    again = flash()
    assert again.plan.copy == ["lib/andon/health.mpy"]
    firmware = build_firmware(plant.provisioned / "boards" / BOARD_1 / "config.json", source, build)
    on_board: Path = board.flash / "lib" / "andon" / "health.mpy"
    assert sha256_of(on_board) == sha256_of(firmware.files["lib/andon/health.mpy"])


def test_flash_all_flashes_each_board_as_the_board_it_says_it_is(tmp_path):
    plant = make_plant(tmp_path)
    with (
        SerialBoard(tmp_path / "flash1", uid=BOARD_1) as one,
        SerialBoard(tmp_path / "flash2", uid=BOARD_2) as two,
    ):
        # Ports in any order: each board is flashed by the id it reports, not by its port; a
        # port with no board fails alone, after the others were flashed.
        gone = str(tmp_path / "ttyUSB9")
        done = _flash(plant, "--port", two.port, "--port", gone, "--port", one.port, "--all")
        assert done.exit_code == 1, done.output
        assert gone in done.output
        for board, flash in ((BOARD_1, one.flash), (BOARD_2, two.flash)):
            assert f"board {board} (uid {board}" in done.output
            on_board = json.loads((flash / "config.json").read_text())
            assert (on_board["board"], on_board["profile"]) == (
                board,
                "esp32-devkitc" if board == BOARD_1 else "esp32-s3-devkitc-1",
            )
        assert done.output.count("firmware 0.1.0 running") == 2
