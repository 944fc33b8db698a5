"""The gateway's network thread (`andon.runtime.netloop`) against a real Mosquitto: what paho's own
`loop_start` thread did (connect, reconnect, keepalive, a clean disconnect) it must do too."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt

from andon.runtime.netloop import BufferedClient, NetworkLoop
from andon.sim.mosquitto import start_broker
from andon.sim.observe import wait_for

WILL = "test/will"


class Listener:
    """A plain paho client on its own thread that collects what arrives."""

    def __init__(self, broker, topic: str) -> None:
        self.got: queue.Queue = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="listener")
        self.client.on_message = lambda _c, _u, m: self.got.put((m.topic, m.payload))
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert subscribed.wait(5), "no SUBACK"

    def take(self, timeout: float = 5.0) -> tuple[str, bytes] | None:
        try:
            return self.got.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@contextmanager
def looped(
    broker, keepalive: int = 60, clean: bool = True, on_message=None
) -> Iterator[tuple[BufferedClient, NetworkLoop, list]]:
    """A client with a Last Will, driven by a NetworkLoop; yields it, its loop and the log of
    its connects. The loop is stopped at the end unless the test stopped it. `on_message` is
    set before the loop starts: a queued session's messages may arrive at the first read."""
    client = BufferedClient(
        mqtt.CallbackAPIVersion.VERSION2, client_id="looped", clean_session=clean
    )
    client.will_set(WILL, b"gone", qos=1)
    client.max_inflight_messages_set(0)  # as the gateway's: paho holds no publish back
    client.on_message = on_message
    connects: list[float] = []
    client.on_connect = lambda *_: connects.append(time.monotonic())
    loop = NetworkLoop(client, backoff_s=(0.1, 0.5))
    client.connect_async(broker.host, broker.port, keepalive=keepalive)
    loop.start()
    try:
        yield client, loop, connects
    finally:
        loop.stop(2)


def test_publishes_from_another_thread_all_arrive_in_order(broker):
    listener = Listener(broker, "test/n")
    try:
        with looped(broker) as (client, _loop, connects):
            wait_for("connected", lambda: connects)
            infos = [client.publish("test/n", str(i).encode(), qos=1) for i in range(500)]
            for info in infos:
                info.wait_for_publish(5)
            got = [listener.take() for _ in range(500)]
    finally:
        listener.close()
    assert [payload for _, payload in got] == [str(i).encode() for i in range(500)]


def test_a_backlog_is_read_many_packets_a_recv_and_every_message_delivered_in_order(
    broker, monkeypatch
):
    # paho reads each packet in three recv calls; the gateway's client reads chunks, and the
    # loop parses what a chunk holds before it selects again.
    reads = {"looped": 0}
    paho_recv = mqtt.Client._sock_recv

    def counted(self, bufsize):
        reads[self._client_id.decode()] = reads.get(self._client_id.decode(), 0) + 1
        return paho_recv(self, bufsize)

    monkeypatch.setattr(mqtt.Client, "_sock_recv", counted)
    got: queue.Queue = queue.Queue()
    with looped(broker, clean=False) as (client, _loop, connects):  # the session to queue in
        client.on_subscribe = lambda *_: got.put("subscribed")
        wait_for("connected", lambda: connects)
        client.subscribe("test/backlog", qos=1)
        assert got.get(timeout=5) == "subscribed"
    publisher = Listener(broker, "test/unused")
    try:
        for info in [
            publisher.client.publish("test/backlog", b"%d" % i, qos=1) for i in range(300)
        ]:
            info.wait_for_publish(5)
    finally:
        publisher.close()
    reads["looped"] = 0
    with looped(broker, clean=False, on_message=lambda _c, _u, m: got.put(m.payload)):
        received = [got.get(timeout=10) for _ in range(300)]
    assert received == [b"%d" % i for i in range(300)]
    assert reads["looped"] < 100  # paho's own reading takes at least 900 for 300 messages


class ChokedSocket:
    """A socket that takes at most `most` bytes a send, and refuses every other send (a full
    kernel buffer), as a slow link does."""

    def __init__(self, sock: socket.socket, most: int) -> None:
        self._sock, self._most, self._sends = sock, most, 0

    def send(self, data) -> int:
        self._sends += 1
        if self._sends % 2 == 0:
            raise BlockingIOError
        return self._sock.send(bytes(data[: self._most]))

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


def publish_held_back(client: BufferedClient, count: int) -> list[bytes]:
    """Publish `count` messages while the network loop is held before its next write, so that
    they are all queued when it writes: as when the worker publishes a batch's acks and states
    while the network thread is busy reading."""
    release = threading.Event()
    paho_write = client.loop_write

    def held_write():
        release.wait(5)
        return paho_write()

    client.loop_write = held_write
    payloads = [b"%d" % i for i in range(count)]
    for payload in payloads:
        client.publish("test/gathered", payload, qos=1)
    release.set()
    return payloads


def sends_of(monkeypatch, client_id: str) -> list[int]:
    """The sizes of what paho's own send puts on that client's socket."""
    sizes: list[int] = []
    paho_send = mqtt.Client._sock_send

    def counted(self, buf):
        sent = paho_send(self, buf)
        if self._client_id == client_id.encode():
            sizes.append(sent)
        return sent

    monkeypatch.setattr(mqtt.Client, "_sock_send", counted)
    return sizes


def send_held_back(broker, monkeypatch, most: int | None = None):
    """300 messages published while the loop is held (`publish_held_back`), through a socket
    that takes at most `most` bytes a send if given: (what was published, what the listener
    got, the sizes of the sends)."""
    listener = Listener(broker, "test/gathered")
    try:
        with looped(broker) as (client, _loop, connects):
            wait_for("connected", lambda: connects)
            if most is not None:
                client._sock = ChokedSocket(client.socket(), most)  # read and written through
            sizes = sends_of(monkeypatch, "looped")
            payloads = publish_held_back(client, 300)
            got = [listener.take() for _ in range(300)]
    finally:
        listener.close()
    return payloads, [payload for _, payload in got], sizes


def test_queued_packets_go_out_together_in_order(broker, monkeypatch):
    published, got, sizes = send_held_back(broker, monkeypatch)
    assert got == published
    assert 1 <= len(sizes) < 10  # paho's own writing sends each of the 300 alone


def test_a_socket_that_takes_little_at_a_time_still_gets_every_packet_in_order(broker, monkeypatch):
    published, got, sizes = send_held_back(broker, monkeypatch, most=100)
    assert got == published
    assert max(sizes) <= 100 and sum(sizes) > 300 * 10  # every byte, in pieces


def test_stop_disconnects_cleanly_so_the_broker_drops_the_will(broker):
    listener = Listener(broker, WILL)
    try:
        with looped(broker) as (client, loop, connects):
            wait_for("connected", lambda: connects)
            loop.stop(2)
            assert client.socket() is None  # the DISCONNECT went out and paho closed the socket
        assert listener.take(timeout=1.5) is None
    finally:
        listener.close()


def test_a_dropped_connection_publishes_the_will_then_the_loop_reconnects(broker):
    listener = Listener(broker, WILL)
    try:
        with looped(broker) as (client, _loop, connects):
            wait_for("connected", lambda: connects)
            client.socket().close()  # the link dies under paho, as a cable pull would
            assert listener.take() == (WILL, b"gone")
            wait_for("reconnected", lambda: len(connects) == 2)
            assert client.is_connected()
    finally:
        listener.close()


def test_it_connects_once_the_broker_comes_up_and_again_after_a_restart(broker):
    broker.stop()
    with looped(broker) as (client, _loop, connects):
        time.sleep(0.5)  # a few refused attempts, with backoff
        assert connects == []
        broker.start()
        wait_for("connected", lambda: connects)
        broker.restart()
        wait_for("reconnected after the restart", lambda: len(connects) == 2)
        assert client.is_connected()


def silent_client(broker) -> socket.socket:
    """A client that connects with keepalive 1 s and then never says a word."""
    sock = socket.create_connection((broker.host, broker.port), timeout=5)
    client_id = b"silent"
    variable = b"\x00\x04MQTT\x04\x02\x00\x01"  # MQTT 3.1.1, clean session, keepalive 1 s
    body = variable + len(client_id).to_bytes(2, "big") + client_id
    sock.sendall(bytes((0x10, len(body))) + body)
    return sock


def dropped(sock: socket.socket) -> bool:
    """Has the broker closed this connection (after its CONNACK)?"""
    try:
        while sock.recv(64):  # the CONNACK, then nothing until the broker hangs up
            pass
    except TimeoutError:
        return False
    return True


def test_an_idle_connection_is_kept_alive_by_pings(broker):
    # Mosquitto drops a client silent for 1.5 keepalives, checking every few seconds: the
    # silent control shows that 6.5 s is long enough, so only the loop's pings keep it up.
    silent = silent_client(broker)
    try:
        with looped(broker, keepalive=1) as (client, _loop, connects):
            wait_for("connected", lambda: connects)
            time.sleep(6.5)
            assert client.is_connected()
            assert len(connects) == 1
        silent.settimeout(1)
        assert dropped(silent)
    finally:
        silent.close()


def test_a_refused_login_is_retried_with_a_doubling_backoff(tmp_path):
    with start_broker(tmp_path / "closed", extra_conf="allow_anonymous false\n") as closed:
        refusals: list[float] = []
        with looped(closed) as (client, _loop, _connects):
            client.on_connect = lambda _c, _u, _f, reason, _p: refusals.append(reason.is_failure)
            time.sleep(2.0)
    # backoff 0.1, 0.2, 0.4, then 0.5 s: some 6 tries in 2 s, where a fixed 0.1 s makes 20
    assert refusals and all(refusals)
    assert len(refusals) <= 8
