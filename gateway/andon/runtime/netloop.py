"""paho's network I/O on a thread of ours, through paho's external-loop interface.

paho's own thread (`loop_start`) is woken through a socket pair for every packet another
thread queues: under load each PUBACK and state publish of the worker costs a syscall and a
switch to that thread. Through the external-loop interface (`loop_read`, `loop_write`,
`loop_misc` and `on_socket_register_write`) paho says only when its output queue stops being
empty: one wake for a whole batch of packets. The thread also does what `loop_forever` would:
(re)connect with a doubling backoff, keepalive pings, and flushing a DISCONNECT at the end.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

log = logging.getLogger("andon.mqtt")

_TICK_S = 1.0  # select timeout: keepalive pings and the stop flag are looked at this often
READ_CHUNK = 65536  # bytes one recv may take: a burst's packets in one system call
READ_BURST = 1000  # packets read in a row from what is buffered, before writing again
WRITE_CHUNK = 65536  # bytes of queued packets gathered into one send
_DISCONNECT = 0xE0  # paho closes the socket once this packet is "sent": it must really be


def no_delay(_client, _userdata, sock) -> None:
    """Turn off Nagle's algorithm: it holds a small packet back until the previous one is
    acknowledged, which adds milliseconds to every state publish."""
    with contextlib.suppress(OSError, AttributeError):  # not TCP (a unix socket, a proxy)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def prepare(client: mqtt.Client, broker: dict) -> None:
    """Credentials and TLS as the plant file's `[broker]` says; Nagle off."""
    if broker["username"]:
        client.username_pw_set(broker["username"], broker["password"])
    if broker["tls"]:
        client.tls_set()
    client.on_socket_open = no_delay  # a state or an ack goes out now, not with the next


class BufferedClient(mqtt.Client):
    """paho's client, reading and writing its socket in large chunks.

    paho reads each packet's type byte, length and body with a `recv` each: three system calls
    per message, and on a busy gateway three waits to retake the interpreter lock from the
    worker after each. Here one `recv` serves many packets; `buffered()` tells the network
    loop what is read and not yet taken. paho also sends each packet it writes (a PUBACK per
    event, a board's ack, a station's state) with a `send` of its own; here the packets queued
    behind one are gathered and go out with the last in one `send`.

    `_sock_recv`, `_sock_send` and `_out_packet` are paho's own (2.x): a paho that no longer
    reads and writes through them reads and writes as before, and `buffered()` stays 0."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._chunk = b""
        self._offset = 0
        self._chunk_of: object = None  # the socket the chunk came from
        self._held = bytearray()  # packets paho counts as sent, to go out with the next one
        self._held_of: object = None

    def buffered(self) -> int:
        """Bytes of the current connection read from the socket and not yet parsed."""
        return len(self._chunk) - self._offset if self._chunk_of is self.socket() else 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self.buffered():
            chunk = super()._sock_recv(max(bufsize, READ_CHUNK))  # raises as paho expects
            self._chunk, self._offset, self._chunk_of = chunk, 0, self.socket()
            if not chunk:
                return b""  # the broker closed the connection
        start = self._offset
        self._offset = min(start + bufsize, len(self._chunk))
        return self._chunk[start : self._offset]

    def _sock_send(self, buf: bytes | bytearray) -> int:
        if self._held_of is not self.socket():  # a new connection: the old one's bytes died
            self._held, self._held_of = bytearray(), self.socket()
        if self._out_packet and len(self._held) < WRITE_CHUNK and buf[0] & 0xF0 != _DISCONNECT:
            self._held += buf  # paho's write loop pops the next packet at once
            return len(buf)
        if not self._held:
            return super()._sock_send(buf)
        held = len(self._held)
        sent = super()._sock_send(self._held + buf)  # raising, it sent nothing: all stays held
        del self._held[:sent]
        if sent <= held:
            raise BlockingIOError  # this packet not begun: paho queues it again, writes later
        return sent - held


class NetworkLoop:
    """Drives one paho client: `start()` after `connect_async`; `stop()` disconnects.
    `after_read` is called on its thread after each round's reads, before its writes."""

    def __init__(
        self,
        client: BufferedClient,
        backoff_s: tuple[float, float] = (0.2, 5.0),
        after_read: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = client
        self._after_read = after_read
        self._backoff_min, self._backoff_max = backoff_s
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = threading.Event()
        self._stop_timeout = 10.0
        self._thread = threading.Thread(target=self._run, name="andon-mqtt", daemon=True)
        client.on_socket_register_write = lambda *_: self.wake()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, disconnect, and end the thread."""
        self._stop_timeout = timeout
        self._stopping.set()
        self.wake()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout + 1)
        self._wake_r.close()
        self._wake_w.close()

    def wake(self) -> None:
        """End the thread's wait: it has something to do (from another thread)."""
        with contextlib.suppress(BlockingIOError, OSError):  # already awake, or closed
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        delay = self._backoff_min
        while not self._stopping.is_set():
            sock = self._client.socket()
            if sock is None:
                if not self._reconnect():
                    self._stopping.wait(delay)
                    delay = min(2 * delay, self._backoff_max)
                continue
            if self._client.is_connected():
                delay = self._backoff_min
            if self._serve(sock) != mqtt.MQTT_ERR_SUCCESS:  # paho closed the socket
                self._stopping.wait(delay)  # a refused CONNECT too: back off as for a refusal
                delay = min(2 * delay, self._backoff_max)
        if self._client.socket() is not None:
            self._client.disconnect()
            self._flush(time.monotonic() + self._stop_timeout)

    def _flush(self, deadline: float) -> None:
        """Write out what paho has queued, up to its DISCONNECT (then paho closes the socket)."""
        while (sock := self._client.socket()) is not None and self._client.want_write():
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("the broker did not take our last packets in time")
                return
            select.select([], [sock], [], left)
            if self._client.loop_write() != mqtt.MQTT_ERR_SUCCESS:
                return

    def _reconnect(self) -> bool:
        try:
            self._client.reconnect()
        except OSError as exc:
            client = self._client
            log.warning("cannot reach the broker at %s:%s: %s", client.host, client.port, exc)
            return False
        return True

    def _serve(self, sock) -> mqtt.MQTTErrorCode:
        """One select round: read, write what paho has queued, then its timers."""
        pending = sock.pending() if hasattr(sock, "pending") else 0  # TLS: already decrypted
        writing = [sock] if self._client.want_write() else []
        ready = pending or self._client.buffered()
        readable, _, _ = select.select([sock, self._wake_r], writing, [], 0 if ready else _TICK_S)
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                self._wake_r.recv(4096)
        rc = mqtt.MQTT_ERR_SUCCESS
        if sock in readable or pending:
            rc = self._client.loop_read()
        for _ in range(READ_BURST):  # what a recv brought is parsed without a select each
            if rc != mqtt.MQTT_ERR_SUCCESS or not self._client.buffered():
                break
            rc = self._client.loop_read()
        self._after_read()
        if rc == mqtt.MQTT_ERR_SUCCESS and self._client.want_write():
            rc = self._client.loop_write()
        if rc == mqtt.MQTT_ERR_SUCCESS:
            rc = self._client.loop_misc()
        return rc
