"""The gateway's MQTT intake, in a process of its own.

Reading MQTT is most of what a bare subscriber does, and paho does it in Python: parsing each
packet, building its message (with a lock and a condition of its own) and matching its topic
cost about as much again as everything the worker does with the event after it. In the
gateway's process both would take turns under one interpreter lock. Here the intake reads the
boards' topics on a connection of its own (the gateway's persistent session, manual acks) and
hands what it read to the gateway in one pipe write per network round; the gateway's worker
validates, stores, applies and commits, and only then tells the intake which messages to
acknowledge. Persist before ack holds as before: what the intake handed over and was not
acknowledged, the broker delivers again to the session.

The gateway's own connection keeps the rest: its status (birth and Will), the retained
downlinks it publishes and scans. It announces itself only while the intake is subscribed
(its `up` callback), so a board that resends on the birth resends to a subscriber.

The pipe carries frames: a 4-byte length and a pickled `(kind, value)`, both ways, between two
processes of the same gateway. The child ignores SIGINT and SIGTERM: the gateway stops it
(`stop`), and its stdin's end of file (the gateway killed) stops it too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import BinaryIO, NamedTuple

import paho.mqtt.client as mqtt

from andon.runtime.netloop import BufferedClient, NetworkLoop, prepare

log = logging.getLogger("andon.intake")

_HEADER = struct.Struct(">I")


class Inbound(NamedTuple):
    """A board's message as the intake read it: acknowledged by `mid` once committed."""

    mid: int
    qos: int
    topic: str
    payload: bytes


class Lost(Exception):
    """The intake process ended without being asked to."""


def write_frame(out: BinaryIO, kind: str, value: object) -> None:
    body = pickle.dumps((kind, value), pickle.HIGHEST_PROTOCOL)
    out.write(_HEADER.pack(len(body)) + body)
    out.flush()


def read_frame(source: BinaryIO) -> tuple[str, object] | None:
    """The next frame, or None at the end of the pipe."""
    header = source.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    body = source.read(size)
    if len(body) < size:
        return None
    return pickle.loads(body)


def topic_of(msg: mqtt.MQTTMessage) -> str:
    try:
        return msg.topic
    except UnicodeDecodeError:  # brokers refuse such topics; should one pass, it is rejected
        return repr(msg._topic)


class Intake:
    """The gateway's side: `start()` the process, `ack`, `subscribe`, `unsubscribe`, `stop()`.
    Topics subscribed before `start()` are the process's first.

    From a reader thread of ours: what the process reads goes to `deliver` (`Inbound`
    messages, then `Lost` if the process ends unasked), and `up(True)` once it is connected
    and subscribed to every topic asked, `up(False)` once it is not connected."""

    def __init__(
        self,
        broker: dict,
        client_id: str,
        deliver: Callable[[object], None],
        up: Callable[[bool], None],
    ) -> None:
        self._hello = {"broker": broker, "client_id": client_id}
        self._topics: set[str] = set()
        self._deliver = deliver
        self._up = up
        self._proc: subprocess.Popen | None = None
        self._reader = threading.Thread(target=self._read, name="andon-intake", daemon=True)
        self._sending = threading.Lock()
        self._stopping = False

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "andon.runtime.intake"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._send("hello", {**self._hello, "topics": sorted(self._topics)})
        self._reader.start()

    def ack(self, mids: list[int]) -> None:
        if mids:
            self._send("ack", mids)

    def subscribe(self, topics: list[str]) -> None:
        self._topics.update(topics)
        if self._proc is not None:
            self._send("subscribe", topics)

    def unsubscribe(self, topics: list[str]) -> None:
        self._topics.difference_update(topics)
        if self._proc is not None:
            self._send("unsubscribe", topics)

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect, hand over what was read, and end. Commands after it go nowhere: what
        the worker does after it is not acknowledged to the broker, which delivers it again
        (the boards' progress makes that a no-op)."""
        if self._proc is None:
            return
        with self._sending, contextlib.suppress(OSError, ValueError):  # the process is gone
            self._stopping = True
            write_frame(self._proc.stdin, "stop", None)
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the intake did not stop in %.0f s: killed", timeout)
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout)
        self._proc.stdout.close()

    def _send(self, kind: str, value: object) -> None:
        # a dead process: its reader delivers `Lost`, which stops the worker with its reason
        with self._sending, contextlib.suppress(BrokenPipeError):
            if not self._stopping:
                write_frame(self._proc.stdin, kind, value)

    def _read(self) -> None:
        source = self._proc.stdout
        while (frame := read_frame(source)) is not None:
            kind, value = frame
            if kind == "messages":
                for message in value:
                    self._deliver(Inbound(*message))
            elif kind == "up":
                self._up(value)
            else:  # "log"
                log.log(*value)
        if not self._stopping:
            self._deliver(Lost(f"the intake process ended (exit code {self._proc.wait()})"))


# --- the intake process --------------------------------------------------------------------


class _Forward(logging.Handler):
    """The intake's log lines go to the gateway, which writes them as it writes its own."""

    def __init__(self, send: Callable[[str, object], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(OSError):
            self._send("log", (record.levelno, "intake: %s", record.getMessage()))


class _Reader:
    """The intake process: one paho client on the gateway's persistent session.

    The gateway's commands are relayed by the main thread and carried out on the network
    thread between its read and its write, so the acks of a batch go out in one send and a
    SUBACK is never matched against a SUBSCRIBE not yet counted."""

    def __init__(self, hello: dict, out: BinaryIO) -> None:
        self._out = out
        self._writing = threading.Lock()
        self._topics: set[str] = set(hello["topics"])
        self._read: list[tuple] = []  # this round's messages, handed over at its end
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._subscribing: set[int] = set()  # SUBSCRIBE mids awaiting their SUBACK
        client = BufferedClient(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=hello["client_id"],
            clean_session=False,
            manual_ack=True,
        )
        self._broker = hello["broker"]
        prepare(client, self._broker)
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *_: self.send("up", False)
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        self._network = NetworkLoop(client, after_read=self._after_read)

    def send(self, kind: str, value: object) -> None:
        with self._writing:
            write_frame(self._out, kind, value)

    def run(self, commands: BinaryIO) -> None:
        """Until the gateway says stop, or its end of the pipe closes."""
        self._client.connect_async(
            self._broker["host"], self._broker["port"], keepalive=self._broker["keepalive"]
        )
        self._network.start()
        while (frame := read_frame(commands)) is not None and frame[0] != "stop":
            self._commands.put(frame)
            self._network.wake()
        self._network.stop()

    def _after_read(self) -> None:
        """Hand over what this round read; carry out the gateway's commands."""
        if self._read:
            read, self._read = self._read, []
            self.send("messages", read)
        while True:
            try:
                kind, value = self._commands.get_nowait()
            except queue.Empty:
                return
            if kind == "ack":
                for mid in value:
                    self._client.ack(mid, 1)
            elif kind == "subscribe":
                self._topics.update(value)
                self._subscribe(value)
            else:  # "unsubscribe"
                self._topics.difference_update(value)
                self._client.unsubscribe(value)

    def _subscribe(self, topics: list[str] | set[str]) -> None:
        if not self._client.is_connected():
            return  # the connect subscribes to them all
        if not topics:
            self.send("up", True)
            return
        _, mid = self._client.subscribe([(topic, 1) for topic in sorted(topics)])
        self._subscribing.add(mid)

    def _on_connect(self, _client, _userdata, _flags, reason, _props) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        self._subscribing.clear()
        self._subscribe(self._topics)

    def _on_subscribe(self, _client, _userdata, mid: int, _reasons, _props) -> None:
        self._subscribing.discard(mid)
        if not self._subscribing:
            self.send("up", True)

    def _on_message(self, _client, _userdata, msg: mqtt.MQTTMessage) -> None:
        self._read.append((msg.mid, msg.qos, topic_of(msg), msg.payload))


def main() -> None:
    # The gateway stops its intake; a signal meant for the gateway (Ctrl-C, systemd's TERM to
    # the whole group) must not end it first, with messages handed over and not acknowledged.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not break a frame
    commands = sys.stdin.buffer
    frame = read_frame(commands)
    if frame is None:
        return
    reader = _Reader(frame[1], out)
    logging.basicConfig(level=logging.INFO, handlers=[_Forward(reader.send)], force=True)
    reader.run(commands)


if __name__ == "__main__":
    main()
