"""The board's link to the broker (firmware/lib/andon/link.py), in the MicroPython VM against a
real Mosquitto: birth, Will, subscriptions, reconnect with backoff, TLS."""

import datetime
import subprocess
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from andon.sim.mosquitto import free_port, start_broker
from andon.sim.vm import vm_command, vm_env
from tests.firmware.paho_watch import Watcher, json_on
from tests.firmware.test_station import CORD_UP, STATION, station_config, vboard

STATUS = "andon/v1/P1/L1/S1/status"
STATE = "andon/v1/P1/L1/S1/state"

# Helpers every script starts with: a Link whose births are numbered, and a recorder of the
# backoff delays it chose.
PRELUDE = (
    f"STATUS = {STATUS!r}\nSTATE = {STATE!r}\n"
    + """
import asyncio, json, os
import hal
from andon import link as linkmod
from andon.link import Link
from vtest import run, until as wait_until

births = []
got = []
ups = []
delays = []
_backoff = linkmod.backoff_ms

def recorded(attempt):
    d = _backoff(attempt)
    delays.append([attempt, d])
    return d

linkmod.backoff_ms = recorded

def birth():
    births.append(1)
    return (STATUS, json.dumps({"online": True, "n": len(births)}))

def make(broker, client_id="S1"):
    return Link(broker, client_id, will=(STATUS, '{"online": false}'), birth=birth,
                subscriptions=[STATE],
                on_message=lambda t, p, r: got.append([t, p.decode(), r]),
                on_up=lambda: ups.append(1))

async def until(cond, ms=30000):  # a link's reconnects take seconds
    return await wait_until(cond, ms, 20)

def exists(name):
    try:
        os.stat(name)
        return True
    except OSError:
        return False
"""
)


def broker_cfg(host: str, port: int, **extra: object) -> str:
    return repr({"host": host, "port": port, "keepalive": 2, **extra})


def test_backoff_doubles_from_half_a_second_to_30_s_with_25_percent_jitter(mpy):
    result = mpy.run(
        """
from andon.link import backoff_ms
from vtest import emit
emit([[backoff_ms(a) for _ in range(30)] for a in range(12)])
"""
    )
    for attempt, samples in enumerate(result.data):
        base = min(500 * 2**attempt, 30000)
        assert all(0.75 * base <= d <= 1.25 * base for d in samples), (attempt, samples)
        assert len(set(samples)) > 1, "no jitter"


def test_link_waits_for_wifi_then_comes_up_with_birth_and_subscriptions(mpy, broker):
    with Watcher(broker, client_id="setter") as paho:
        paho.publish(STATE, b'{"state": "running"}', retain=True)
    with Watcher(broker, STATUS) as paho:
        result = mpy.run(
            PRELUDE
            + f"""
async def main():
    l = make({broker_cfg(broker.host, broker.port)})
    task = asyncio.create_task(l.run())
    await asyncio.sleep_ms(300)
    before = [l.state, l.client.up, await l.publish("x/y", "z")]
    hal.wifi_start("plant-iot", "secret")
    await until(lambda: l.state == "up" and got)
    pid = await l.publish("andon/v1/P1/L1/S1/evt", "{{}}", qos=1)
    acked = await l.client.wait_ack(pid)
    task.cancel()
    await asyncio.sleep_ms(0)
    return {{"before": before, "got": got, "ups": len(ups), "births": len(births), "pid": pid,
            "acked": acked, "after": [l.state, await l.publish("x/y", "z")]}}

run(main())
"""
        )
        paho.wait(json_on(STATUS, online=True, n=1))
    assert result.data == {
        "before": ["no_wifi", False, None],
        "got": [[STATE, '{"state": "running"}', True]],
        "ups": 1,
        "births": 1,
        "pid": 3,  # 1 was the birth, 2 the SUBSCRIBE
        "acked": True,
        "after": ["connecting", None],
    }


def test_the_will_is_published_when_the_board_process_is_killed(tmp_path, broker):
    flash = tmp_path / "flash"
    flash.mkdir()
    script = flash / "board.py"
    script.write_text(
        PRELUDE
        + f"""
async def main():
    hal.wifi_start("plant-iot", "secret")
    await make({broker_cfg(broker.host, broker.port)}).run()

run(main())
"""
    )
    with Watcher(broker, STATUS) as paho:
        proc = subprocess.Popen(
            vm_command(script), cwd=flash, env=vm_env(), stdout=subprocess.DEVNULL
        )
        try:
            paho.wait(json_on(STATUS, online=True, n=1))
            proc.kill()  # SIGKILL: no DISCONNECT, the broker's Will fires
            paho.wait(json_on(STATUS, online=False))
        finally:
            proc.kill()
            proc.wait()
    with Watcher(broker, STATUS, client_id="late") as late:  # and it stays, retained
        assert late.wait(lambda m: m[0] == STATUS) == (STATUS, b'{"online": false}', True, 1)


def test_reconnects_with_backoff_after_a_broker_crash_and_republishes_the_birth(mpy, broker):
    outcome: dict = {}

    def board() -> None:
        try:
            outcome["result"] = mpy.run(
                PRELUDE
                + f"""
async def main():
    hal.wifi_start("plant-iot", "secret")
    l = make({broker_cfg(broker.host, broker.port)})
    task = asyncio.create_task(l.run())
    # "done" comes once the test saw the second birth (or gave up): the board's backoff after
    # the crash may reach 16 s, so its own wait must not run out before the test's does
    await until(lambda: exists("done"), 80000)
    await until(lambda: l.reconnects >= 1 and l.state == "up", 10000)  # its subscription
    task.cancel()
    return {{"reconnects": l.reconnects, "births": len(births), "ups": len(ups),
            "delays": delays, "state": l.state, "error": l.last_error}}

run(main())
""",
                timeout=90,
            )
        except Exception as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    vm = threading.Thread(target=board)
    vm.start()
    try:
        with Watcher(broker, STATUS) as paho:
            paho.wait(json_on(STATUS, online=True, n=1))
        broker.kill()
        broker.start()
        with Watcher(broker, STATUS, client_id="after") as paho:
            paho.wait(json_on(STATUS, online=True, n=2), timeout=40)
    finally:
        (mpy.flash / "done").write_text("")
        vm.join()
    if "error" in outcome:
        raise outcome["error"]
    data = outcome["result"].data
    # the whole record in each message: a failure under load then shows its interleaving
    assert data["reconnects"] == 1, data
    assert data["births"] == 2 and data["ups"] == 2, data
    assert data["state"] == "up", data
    attempts = [a for a, _ in data["delays"]]
    assert attempts == list(range(len(attempts)))  # doubling while the broker was away
    for attempt, delay in data["delays"]:
        base = min(500 * 2**attempt, 30000)
        assert 0.75 * base <= delay <= 1.25 * base


def test_wifi_down_on_a_virtual_board_drops_its_connection_until_wifi_is_back(tmp_path, broker):
    status_topic, evt = STATION + "/status", STATION + "/evt"
    board = vboard(tmp_path / "flash", station_config(broker.port))
    with Watcher(broker, status_topic, evt, client_id="watch") as watch:
        try:
            board.start(inputs=CORD_UP)
            watch.wait(json_on(status_topic, online=True))
            boot = board.status()["boot"]
            board.call("wifi", up=False)
            # The broker saw the connection end: it published the board's Will.
            watch.wait(json_on(status_topic, online=False, boot=boot))
            dropped = board.status()
            board.pull_cord()  # on flash; nothing can carry it out now
            board.call("wifi", up=True)
            watch.wait(json_on(status_topic, online=True))  # a new session: its birth
            sent_while_down = [m for m in watch.seen if json_on(evt, kind="cord_pulled")(m)]
            watch.wait(json_on(evt, kind="cord_pulled"))  # sent once Wi-Fi is back
            back = board.status()
        finally:
            board.stop()
    assert dropped["link"] == "no_wifi"
    assert sent_while_down == []
    assert back["link"] == "up" and back["reconnects"] == 1


def test_retrying_a_dead_port_never_blocks_the_loop(mpy):
    result = mpy.run(
        PRELUDE
        + f"""
from time import ticks_diff, ticks_ms

async def main():
    hal.wifi_start("plant-iot", "secret")
    l = make({broker_cfg("127.0.0.1", free_port())})
    task = asyncio.create_task(l.run())
    ticks, max_gap, states = 0, 0, set()
    last = start = ticks_ms()
    while ticks_diff(ticks_ms(), start) < 3200:
        await asyncio.sleep_ms(10)
        now = ticks_ms()
        max_gap = max(max_gap, ticks_diff(now, last))
        last = now
        ticks += 1
        states.add(l.state)
    task.cancel()
    return {{"ticks": ticks, "max_gap": max_gap, "states": sorted(states), "delays": delays,
            "error": l.last_error, "reconnects": l.reconnects}}

run(main())
"""
    )
    data = result.data
    assert data["states"] == ["connecting"]
    assert data["reconnects"] == 0  # never connected: nothing to re-connect
    assert "111" in data["error"]  # ECONNREFUSED
    assert [a for a, _ in data["delays"]][:3] == [0, 1, 2]
    # The loop kept ticking through every attempt and backoff: a blocking connect or sleep
    # would leave a gap at least as long as the shortest backoff (375 ms).
    assert data["ticks"] > 50
    assert data["max_gap"] < 375


def _cert(name: str, key, issuer: x509.Name, issuer_key, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        import ipaddress

        san = x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("broker.plant")]
        )
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _make_ca(name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return key, subject, _cert(name, key, subject, key, ca=True)


def test_tls_link_checks_the_brokers_certificate(mpy, tmp_path):
    ca_key, ca_name, ca = _make_ca("plant CA")
    _, _, stranger = _make_ca("someone else")
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert("broker", srv_key, ca_name, ca_key, ca=False)
    (tmp_path / "srv.pem").write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "srv.key").write_bytes(
        srv_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (mpy.flash / "ca.der").write_bytes(ca.public_bytes(serialization.Encoding.DER))
    (mpy.flash / "stranger.der").write_bytes(stranger.public_bytes(serialization.Encoding.DER))
    tls_port = free_port()
    conf = (
        f"allow_anonymous true\nlistener {tls_port} 127.0.0.1\n"
        f"certfile {tmp_path / 'srv.pem'}\nkeyfile {tmp_path / 'srv.key'}\n"
    )
    with start_broker(tmp_path / "broker", extra_conf=conf):
        result = mpy.run(
            PRELUDE
            + f"""
async def main():
    hal.wifi_start("plant-iot", "secret")
    good = make({broker_cfg("127.0.0.1", tls_port, tls=True)})
    bad = make({broker_cfg("127.0.0.1", tls_port, tls=True, ca="stranger.der")}, "S2")
    named = make({broker_cfg("127.0.0.1", tls_port, tls=True, server_name="broker.plant")}, "S3")
    misnamed = make({broker_cfg("127.0.0.1", tls_port, tls=True, server_name="mqtt.plant")}, "S4")
    links = (good, bad, named, misnamed)
    tasks = [asyncio.create_task(link.run()) for link in links]
    await until(lambda: good.state == named.state == "up" and bad.last_error
                and misnamed.last_error)
    pid = await good.publish("andon/v1/P1/L1/S1/evt", "{{}}", qos=1)
    acked = await good.client.wait_ack(pid)
    for t in tasks:
        t.cancel()
    return {{"good": good.state, "acked": acked, "bad": bad.state, "why": bad.last_error,
            "misnamed": misnamed.state, "misnamed_why": misnamed.last_error,
            "births": len(births)}}

run(main())
"""
        )
    data = result.data
    assert data["good"] == "up" and data["acked"] is True
    # A CA that did not sign the broker's certificate: the handshake fails, the link never
    # comes up and keeps retrying.
    assert data["bad"] == "connecting"
    assert data["births"] == 2  # the good link's and the named one's
    assert "not correctly signed by the trusted CA" in data["why"]
    # Connected by address, checked by name: the name must be one the certificate carries.
    assert data["misnamed"] == "connecting"
    assert "Common Name (CN) does not match" in data["misnamed_why"]
