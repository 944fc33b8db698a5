"""What the line shows from outside: every message on the broker, and the gateway's records.

An `Observer` is a plain MQTT client subscribed to `andon/v1/#` that keeps the latest payload
per topic (the retained states) and every message in arrival order (triggers, alerts). It
reconnects by itself, so it survives a broker restart.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from andon import contract


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic() on arrival
    topic: str
    body: dict[str, Any] | None  # None: not a JSON object


class Observer:
    def __init__(
        self,
        host: str,
        port: int,
        client_id: str = "andon-observer",
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._latest: dict[str, dict[str, Any] | None] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, *_: c.subscribe(f"{contract.ROOT}/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 1)
        self.client.connect_async(host, port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            body = None
        seen = Seen(time.monotonic(), msg.topic, body if isinstance(body, dict) else None)
        with self._lock:
            self._seen.append(seen)
            self._latest[msg.topic] = seen.body

    def latest(self, topic: str) -> dict[str, Any] | None:
        with self._lock:
            return self._latest.get(topic)

    def seen(self, topic: str | None = None, since: float = 0.0) -> list[Seen]:
        with self._lock:
            return [s for s in self._seen if s.at >= since and topic in (None, s.topic)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_for(what: str, cond: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll `cond` until it is true, and return it; AssertionError naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.02)
