"""The firmware's MQTT client (firmware/lib/andon/mqtt.py), run in the MicroPython VM against a
real Mosquitto and against fake servers (asyncio.start_server in the same VM) that misbehave."""

import json

import pytest

from andon.sim.mosquitto import free_port
from tests.firmware.paho_watch import Watcher

CONNACK = b"\x20\x02\x00\x00"


def header(first: int, n: int) -> bytes:
    """A fixed header, encoded here independently of the firmware."""
    out = bytearray([first])
    while True:
        n, b = n >> 7, n & 0x7F
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first: int, body: bytes) -> bytes:
    return header(first, len(body)) + body


def publish(
    topic: bytes, payload: bytes, qos: int = 0, pid: int = 0, retain: bool = False
) -> bytes:
    head = len(topic).to_bytes(2, "big") + topic + (pid.to_bytes(2, "big") if qos else b"")
    return packet(0x30 | qos << 1 | retain, head + payload)


# A fake broker in the VM: each connection reads CONNECT, sends CHUNKS one by one (None: hang
# up, an int: pause that many ms), then records everything the client sends until it hangs up.
# A ticker task proves the loop kept running.
FAKE_SERVER = """
import asyncio
from time import ticks_diff, ticks_ms
from andon.mqtt import MQTTClient, MQTTError, ConnectRefused
from vtest import run

received = []

async def handler(r, w):
    got = bytearray(await r.read(256))
    try:
        for c in CHUNKS:
            if c is None:
                return
            if isinstance(c, int):
                await asyncio.sleep_ms(c)
                continue
            w.write(c)
            await w.drain()
            await asyncio.sleep_ms(2)
        while True:
            d = await r.read(256)
            if not d:
                break
            got += d
    except OSError:
        pass
    finally:
        received.append(got)
        w.s.close()

class Ticker:
    def __init__(self):
        self.ticks = 0
        self.max_gap = 0
        self.task = asyncio.create_task(self.run())

    async def run(self):
        last = ticks_ms()
        while True:
            await asyncio.sleep_ms(10)
            now = ticks_ms()
            self.max_gap = max(self.max_gap, ticks_diff(now, last))
            self.ticks += 1
            last = now

def client(**kw):
    got = []
    on_message = lambda t, p, r: got.append([t, p.decode(), r])
    c = MQTTClient("fake-test", "127.0.0.1", PORT, on_message=on_message, **kw)
    return c, got
"""


def fake_script(chunks: list[str], body: str) -> str:
    """`chunks`: Python expressions (bytes or None) evaluated in the VM."""
    return f"PORT = {free_port()}\nCHUNKS = [{', '.join(chunks)}]\n" + FAKE_SERVER + body


def test_remaining_length_uses_one_to_four_bytes(mpy):
    sizes = [0, 127, 128, 16383, 16384, 2097151, 2097152, 268435455]
    result = mpy.run(
        f"""
from andon.mqtt import put_header
from vtest import emit
buf = bytearray(5)
out = [list(buf[: put_header(buf, 0x30, n)]) for n in {sizes}]
try:
    put_header(buf, 0x30, 268435456)
    out.append("accepted")
except ValueError as e:
    out.append(str(e))
emit(out)
"""
    )
    assert result.data[:-1] == [list(header(0x30, n)) for n in sizes]
    assert [len(x) for x in result.data[:-1]] == [2, 2, 3, 3, 4, 4, 5, 5]
    assert result.data[-1] == "MQTT packet too long"


def test_subscribe_receives_a_retained_message_from_paho(mpy, broker):
    state = b'{"state": "stopped", "call": "cord", "since": 1, "material": false}'
    with Watcher(broker, client_id="setter") as paho:
        paho.publish("andon/v1/P1/L1/S1/state", state, retain=1)
    result = mpy.run(
        f"""
import asyncio
from andon.mqtt import MQTTClient
from vtest import run
got = []
arrived = asyncio.Event()

def on_message(topic, payload, retained):
    got.append([topic, payload.decode(), retained])
    arrived.set()

async def main():
    c = MQTTClient("S1", {broker.host!r}, {broker.port}, keepalive=10, on_message=on_message)
    await c.connect()
    serving = asyncio.create_task(c.serve())
    await c.subscribe(["andon/v1/P1/L1/S1/state", "andon/v1/P1/L1/S1/ack"])
    await asyncio.wait_for_ms(arrived.wait(), 10000)
    c.close()
    return {{"got": got, "ended": await serving, "up": c.up}}

run(main())
"""
    )
    assert result.data["got"] == [["andon/v1/P1/L1/S1/state", state.decode(), True]]
    assert result.data["ended"] == "closed"
    assert result.data["up"] is False


def test_qos1_publish_reaches_a_paho_subscriber_and_its_puback_is_tracked(mpy, broker):
    payload = json.dumps({"kind": "cord_pulled", "pad": "x" * 300})  # a 2-byte remaining length
    topic = "andon/v1/P1/L1/S1/evt"
    with Watcher(broker, topic) as paho:
        result = mpy.run(
            f"""
import asyncio
from andon.mqtt import MQTTClient, MQTTError
from vtest import run

async def main():
    c = MQTTClient("S1", {broker.host!r}, {broker.port}, keepalive=10)
    try:
        await c.publish("x", "y")
        refused = None
    except MQTTError as e:
        refused = str(e)
    await c.connect()
    # Published before anything reads the socket, so the PUBACK cannot have been taken yet.
    pid = await c.publish({topic!r}, {payload!r}, qos=1)
    pending = c.pending(pid)
    serving = asyncio.create_task(c.serve())
    acked = await c.wait_ack(pid)
    qos0 = await c.publish({topic!r}, "{{}}")
    c.close()
    await serving
    return {{"refused": refused, "pid": pid, "pending": pending, "acked": acked,
             "after": c.pending(pid), "qos0": qos0}}

run(main())
"""
        )
        arrived = paho.wait(lambda m: m[0] == topic)
        assert arrived == (topic, payload.encode(), False, 1)
        paho.wait(lambda m: m[1] == b"{}")
    assert result.data == {
        "refused": "not connected",
        "pid": 1,
        "pending": True,
        "acked": True,
        "after": False,
        "qos0": 0,
    }


def test_pings_keep_an_idle_connection_past_one_and_a_half_keepalives(mpy, broker):
    # Mosquitto drops a client silent for 1.5 keepalives (checked every few seconds, so we
    # idle for 6.5): the silent control, which never pings, shows that it does.
    result = mpy.run(
        f"""
import asyncio
from andon.mqtt import MQTTClient
from vtest import run

async def main():
    pinging = MQTTClient("pinging", {broker.host!r}, {broker.port}, keepalive=1)
    silent = MQTTClient("silent", {broker.host!r}, {broker.port}, keepalive=1)
    await pinging.connect()
    await silent.connect()
    serving = asyncio.create_task(pinging.serve())
    await asyncio.sleep_ms(6500)
    silent_end = await silent.serve()  # only now reads: the broker has hung up
    pid = await pinging.publish("idle/check", "still here", qos=1)
    acked = await pinging.wait_ack(pid)
    up = pinging.up
    pinging.close()
    return {{"up": up, "acked": acked, "pings": pinging.pings, "silent": silent_end,
             "ended": await serving}}

run(main())
"""
    )
    data = result.data
    assert data["up"] is True and data["acked"] is True
    assert data["pings"] >= 3  # one per half keepalive of idleness
    assert data["silent"] == "connection closed by the broker"
    assert data["ended"] == "closed"


def test_partial_reads_long_lengths_and_an_oversized_message(mpy):
    # A retained QoS 1 message dribbled one byte at a time; a 20 kB one (3-byte length) larger
    # than the client's buffer: drained, counted, acknowledged, not delivered; then a QoS 0 one.
    first = publish(b"s/state", b"A" * 200, qos=1, pid=7, retain=1)
    big_head = publish(b"s/big", b"", qos=1, pid=8)[2:]  # topic and packet id, no header
    big_len = header(0x32, len(big_head) + 20000)
    chunks = [repr(CONNACK)]
    chunks += [repr(first[i : i + 1]) for i in range(len(first))]
    chunks += [f"{big_len + big_head!r} + bytes(20000)", repr(publish(b"s/x", b"after"))]
    result = mpy.run(
        fake_script(
            chunks,
            """
async def main():
    srv = await asyncio.start_server(handler, "127.0.0.1", PORT)
    c, got = client(keepalive=0)
    await c.connect()
    serving = asyncio.create_task(c.serve())
    while len(got) < 2:
        await asyncio.sleep_ms(20)
    await asyncio.sleep_ms(50)  # the PUBACKs reach the server
    c.close()
    await serving
    while not received:
        await asyncio.sleep_ms(10)
    srv.close()
    return {"got": got, "dropped": c.dropped, "sent": list(received[0])}

run(main())
""",
        )
    )
    data = result.data
    assert data["got"] == [["s/state", "A" * 200, True], ["s/x", "after", False]]
    assert data["dropped"] == 1
    puback = list(b"\x40\x02\x00\x07\x40\x02\x00\x08")
    assert data["sent"][-len(puback) :] == puback


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"\x40\x05\x00\x01\x00\x00\x00", "unexpected packet 0x40 of 5 bytes"),
        (b"\x30\xff\xff\xff\xff\x01", "malformed remaining length"),
        (packet(0x36, b"\x00\x01a\x00\x01"), "PUBLISH with QoS 3, we subscribe at QoS 1"),
        (packet(0x30, b"\x00\x09ab"), "malformed PUBLISH"),
        (b"\xf0\x00", "unexpected packet 0xf0 of 0 bytes"),
        (CONNACK, "unexpected packet 0x20 of 2 bytes"),
        (publish(b"\xff\xfe", b"{}"), "PUBLISH topic is not UTF-8"),
        (b"\x30\x10\x00", "connection closed by the broker"),  # then hangs up mid-packet
    ],
    ids=[
        "puback-length",
        "5-byte-length",
        "qos3",
        "topic-overrun",
        "reserved",
        "connack",
        "utf8",
        "eof",
    ],
)
def test_malformed_packets_end_the_connection_cleanly(mpy, garbage, reason):
    result = mpy.run(
        fake_script(
            [repr(CONNACK), repr(garbage), "None"],
            """
async def main():
    srv = await asyncio.start_server(handler, "127.0.0.1", PORT)
    c, got = client(keepalive=0)
    ends = []
    for _ in range(2):  # the same client connects again after each bad peer
        await c.connect()
        ends.append(await c.serve())
    srv.close()
    return {"ends": ends, "up": c.up, "got": got}

run(main())
""",
        )
    )
    assert result.data["ends"] == [reason, reason]
    assert result.data["up"] is False
    assert result.data["got"] == []


def test_a_peer_that_stops_answering_pings_is_dropped(mpy):
    result = mpy.run(
        fake_script(
            [repr(CONNACK)],
            """
async def main():
    srv = await asyncio.start_server(handler, "127.0.0.1", PORT)
    c, got = client(keepalive=1)
    await c.connect()
    end = await c.serve()
    while not received:
        await asyncio.sleep_ms(10)
    srv.close()
    return {"end": end, "pings": c.pings, "sent": list(received[0])}

run(main())
""",
        )
    )
    assert result.data["end"] == "no PINGRESP within 500 ms"
    assert result.data["pings"] == 1
    assert result.data["sent"][-2:] == [0xC0, 0x00]


@pytest.mark.parametrize(
    ("code", "why"),
    [(2, "client id rejected"), (4, "bad user name or password"), (5, "not authorised")],
)
def test_connack_refusals_raise_a_clear_error(mpy, code, why):
    result = mpy.run(
        fake_script(
            [repr(bytes([0x20, 2, 0, code]))],
            """
async def main():
    srv = await asyncio.start_server(handler, "127.0.0.1", PORT)
    c, got = client()
    try:
        await c.connect()
        out = "connected"
    except ConnectRefused as e:
        out = [e.code, str(e)]
    srv.close()
    return {"out": out, "up": c.up}

run(main())
""",
        )
    )
    assert result.data == {
        "out": [code, f"broker refused the connection ({code}: {why})"],
        "up": False,
    }


def test_a_silent_server_times_out_the_connect_without_blocking_the_loop(mpy):
    result = mpy.run(
        fake_script(
            [],
            """
async def main():
    srv = await asyncio.start_server(handler, "127.0.0.1", PORT)
    ticker = Ticker()
    c, got = client(timeout_ms=1000)
    try:
        await c.connect()
        out = "connected"
    except MQTTError as e:
        out = str(e)
    srv.close()
    return {"out": out, "up": c.up, "ticks": ticker.ticks, "max_gap": ticker.max_gap}

run(main())
""",
        )
    )
    data = result.data
    assert data["out"] == "connect failed: TimeoutError()"
    assert data["up"] is False
    # Ticks kept coming while the CONNACK never did: no wait shorter than the whole timeout
    # shows the loop was never held by the connect.
    assert data["ticks"] >= 10
    assert data["max_gap"] < 1000


def test_a_refused_subscription_raises(mpy):
    suback = packet(0x90, b"\x00\x01\x01\x80")  # pid 1: the first topic granted, the second not
    result = mpy.run(
        fake_script(
            [repr(CONNACK), "300", repr(suback)],
            """
async def main():
    srv = await asyncio.start_server(handler, "127.0.0.1", PORT)
    c, got = client(keepalive=0)
    await c.connect()
    serving = asyncio.create_task(c.serve())
    try:
        await c.subscribe(["a/b", "not/allowed"])
        out = "subscribed"
    except MQTTError as e:
        out = str(e)
    c.close()
    await serving
    srv.close()
    return out

run(main())
""",
        )
    )
    assert result.data == "broker refused a subscription"
