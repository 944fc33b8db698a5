"""SNTP without blocking the loop, against a small NTP server in the test (in the VM)."""

import json
import socket
import struct
import threading
import time

import pytest
from cryptography.hazmat.primitives import serialization

from andon.sim.mosquitto import free_port

NTP_TO_UNIX_S = 2208988800


@pytest.fixture
def ntp_server():
    """Answers every request with a fixed time (2026-11-26 12:00:00.250 UTC), or garbage: always
    with `garbage`, and for the first `garbage_first` requests."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    state = {"garbage": False, "garbage_first": 0, "answers": 0, "stop": False}
    unix_s = 1795694400

    def serve():
        while not state["stop"]:
            try:
                _, peer = sock.recvfrom(64)
            except TimeoutError:
                continue
            reply = bytearray(48)
            if state["garbage"] or state["answers"] < state["garbage_first"]:
                reply[0] = 0x1B  # a client packet, not a server answer
            else:
                reply[0] = 0x1C  # version 3, mode 4 (server)
                reply[40:48] = struct.pack("!II", unix_s + NTP_TO_UNIX_S, 1 << 30)
            time.sleep(0.05)  # the answer takes a while: the loop must go on meanwhile
            sock.sendto(bytes(reply), peer)
            state["answers"] += 1

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1], state, unix_s * 1000 + 250
    state["stop"] = True
    thread.join()
    sock.close()


SCRIPT = """
import asyncio, hal, time
from vdevices import bench
from andon import ntp
import vtest

async def ticker(n):
    while True:
        n[0] += 1
        await asyncio.sleep_ms(5)

async def main():
    bench.clock_set = False
    before = hal.wall_ms()
    ticks = [0]
    t = asyncio.create_task(ticker(ticks))
    ms = await ntp.query("127.0.0.1", PORT, timeout_ms=TIMEOUT)
    t.cancel()
    if ms is not None:
        hal.set_wall_ms(ms)
    return {"before": before, "ms": ms, "wall": hal.wall_ms(), "ticks": ticks[0]}

vtest.run(main())
"""


def run(mpy, port, timeout_ms=2000):
    return mpy.run(SCRIPT.replace("PORT", str(port)).replace("TIMEOUT", str(timeout_ms))).data


def test_the_clock_is_set_from_ntp_while_the_loop_keeps_running(mpy, ntp_server):
    port, state, server_ms = ntp_server
    data = run(mpy, port)
    assert data["before"] is None  # no clock until NTP answers: events carry ts null
    # the server's time plus half a round trip of about 50 ms
    assert server_ms <= data["ms"] <= server_ms + 1000
    assert server_ms <= data["wall"] <= server_ms + 2000
    assert data["ticks"] >= 3  # other tasks ran while the answer was on its way
    assert state["answers"] == 1


def test_a_garbage_answer_or_silence_leaves_the_clock_unset(mpy, ntp_server):
    port, state, _ = ntp_server
    state["garbage"] = True
    assert run(mpy, port, timeout_ms=300)["wall"] is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        data = run(mpy, silent.getsockname()[1], timeout_ms=300)
    assert data["ms"] is None and data["wall"] is None
    assert data["ticks"] >= 10  # waiting for nobody never blocked the loop


TLS_BOOT = """
import asyncio, json
import hal
from vdevices import bench
from vtest import emit
from andon import app, config

bench.clock_set = False  # the RTC after power-on: 2000-01-01, no certificate is valid yet
bench.wifi_started = True
app.NTP_RETRY_MS = 200
with open("config.json") as f:
    station = app.start(config.validate(json.load(f)))
client = station.link.client
attempts = []
_connect = client.connect

async def connect():
    attempts.append(hal.wall_ms())
    return await _connect()

client.connect = connect

async def main():
    asyncio.create_task(station.run(hal.WDT(timeout=8000)))
    waiting = {}  # what was seen before the first attempt -> how often
    for _ in range(1000):
        if attempts:
            break
        tower = station.tower.modes
        seen = (station.link.state, tower["white"], tower["green"], hal.wall_ms())
        waiting[seen] = waiting.get(seen, 0) + 1
        await asyncio.sleep_ms(10)
    return {"waiting": [list(k) + [n] for k, n in waiting.items()],
            "first_attempt_at": attempts[0] if attempts else None}

emit(asyncio.run(main()))
"""


def test_a_tls_board_takes_the_time_before_its_first_tls_connect(mpy, ntp_server):
    from tests.firmware.test_link import _make_ca
    from tests.firmware.test_station import station_config

    port, state, server_ms = ntp_server
    state["garbage_first"] = 2  # the NTP server does not answer sanely at first
    _, _, ca = _make_ca("plant CA")
    (mpy.flash / "ca.der").write_bytes(ca.public_bytes(serialization.Encoding.DER))
    cfg = station_config(free_port())  # nobody listens there: an attempt is refused
    cfg["broker"] |= {"tls": True, "port": free_port()}
    cfg["ntp"] = f"127.0.0.1:{port}"
    (mpy.flash / "config.json").write_text(json.dumps(cfg))

    data = mpy.run(TLS_BOOT).data

    # Until NTP answered: no TLS connect, and the tower says "waiting for the time".
    before_the_time = {
        (link, white, green): n for link, white, green, wall, n in data["waiting"] if wall is None
    }
    # (the tower is dark until its first refresh)
    assert set(before_the_time) <= {("no_time", "slow", "slow"), ("no_time", "off", "off")}
    assert before_the_time[("no_time", "slow", "slow")] >= 10  # through two NTP retries
    assert state["answers"] >= 3  # two garbage answers, then the time
    # Its first connect comes once the clock is set from NTP.
    assert server_ms <= data["first_attempt_at"] <= server_ms + 60000
