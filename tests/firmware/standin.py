"""An end-to-end ack stand-in: records every event boards send and acks them as the gateway will.

It subscribes to `andon/v1/+/+/+/evt` at QoS 1, keeps each board's events by (boot, seq), and
publishes the retained `…/ack` with the highest contiguous seq it holds for that board, counting
everything below the event's `base` as stored (docs/protocol.md). A re-delivery is acked again,
as the gateway does, so a board whose ack the broker lost learns its progress anyway.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from andon.sim.mosquitto import Broker

EVENTS = "andon/v1/+/+/+/evt"


@dataclass
class BoardLog:
    """What one board sent: every delivery in arrival order, and each event once by its seq."""

    deliveries: list[dict[str, Any]] = field(default_factory=list)
    by_seq: dict[int, dict[str, Any]] = field(default_factory=dict)
    changed: list[int] = field(default_factory=list)  # seqs re-sent with another content
    progress: int = 0  # highest contiguous seq stored

    def record(self, event: dict[str, Any]) -> None:
        self.deliveries.append(event)
        seq = event["seq"]
        first = self.by_seq.setdefault(seq, event)
        if _identity(first) != _identity(event):
            self.changed.append(seq)
        self.progress = max(self.progress, event["base"] - 1)
        while self.progress + 1 in self.by_seq:
            self.progress += 1

    def events(self) -> list[dict[str, Any]]:
        return [self.by_seq[s] for s in sorted(self.by_seq)]


def _identity(event: dict[str, Any]) -> dict[str, Any]:
    # What must not change when an event is sent again: all but base and age, which describe
    # the send, not the event.
    return {k: v for k, v in event.items() if k not in ("base", "age")}


class AckStandIn:
    """Use as a context manager: connected and subscribed on entry, disconnected on exit."""

    def __init__(self, broker: Broker, acking: bool = True) -> None:
        self.acking = acking
        self.boards: dict[str, BoardLog] = {}
        self.rejected: list[tuple[str, bytes]] = []
        self._acks: dict[str, tuple[str, str]] = {}  # board -> (ack topic, last payload)
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ack-standin")
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda c, u, mid, codes, props: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(0.1, 1)  # back soon after a broker restart
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise AssertionError("ack stand-in: no SUBACK from the broker")

    def __enter__(self) -> AckStandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()

    def _on_connect(self, client, userdata, flags, reason, props) -> None:
        # Every (re)connect: the session is clean, so subscribe again.
        client.subscribe(EVENTS, qos=1)

    def _on_message(self, client, userdata, msg) -> None:
        try:
            event = json.loads(msg.payload)
            board = event["board"]
            log = self.boards.setdefault(board, BoardLog())
        except (ValueError, KeyError, TypeError):
            self.rejected.append((msg.topic, msg.payload))
            return
        with self._cond:
            log.record(event)
            body = {"board": board, "boot": log.by_seq.get(log.progress, event)["boot"]}
            body["seq"] = log.progress
            self._acks[board] = (msg.topic[: -len("evt")] + "ack", json.dumps(body))
            self._cond.notify_all()
        if self.acking:
            self._publish_ack(board)

    def _publish_ack(self, board: str) -> None:
        topic, payload = self._acks[board]
        self._client.publish(topic, payload, qos=1, retain=True)

    def ack_now(self) -> None:
        """Start acking, and ack what every board sent so far."""
        self.acking = True
        for board in list(self._acks):
            self._publish_ack(board)

    def log(self, board: str) -> BoardLog:
        with self._cond:
            return self.boards.setdefault(board, BoardLog())

    def wait(self, cond: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
        """Until cond() holds (checked whenever an event arrives); fails after timeout s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not cond():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"ack stand-in: {what or cond} not within {timeout}s")
                self._cond.wait(min(left, 0.2))
