"""A paho client on the test's side of the broker: publishes, and records what arrives."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from andon.sim.mosquitto import Broker

Message = tuple[str, bytes, bool, int]  # topic, payload, retained, qos


class Watcher:
    """Subscribed (QoS 1) to `topics` once constructed; use as a context manager."""

    def __init__(self, broker: Broker, *topics: str, client_id: str = "watcher") -> None:
        self.seen: list[Message] = []
        self._arrived: queue.Queue[Message] = queue.Queue()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.on_message = lambda c, u, m: self._arrived.put(
            (m.topic, m.payload, bool(m.retain), m.qos)
        )
        self._client.on_subscribe = lambda c, u, mid, codes, props: self._subscribed.set()
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        if topics:
            self._client.subscribe([(t, 1) for t in topics])
            if not self._subscribed.wait(10):
                self.close()
                raise AssertionError(f"paho watcher: no SUBACK for {topics}")

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(10)

    def wait(self, match: Callable[[Message], bool], timeout: float = 20.0) -> Message:
        """The first message (from now on) that `match` accepts; fails after `timeout` s."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self._arrived.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(msg)
            if match(msg):
                return msg
        raise AssertionError(f"no matching message within {timeout}s; saw {self.seen}")


def json_on(topic: str, **fields: object) -> Callable[[Message], bool]:
    """Matches a JSON message on `topic` whose fields include `fields`."""

    def match(msg: Message) -> bool:
        if msg[0] != topic:
            return False
        try:
            body = json.loads(msg[1])
        except ValueError:
            return False
        return isinstance(body, dict) and all(body.get(k) == v for k, v in fields.items())

    return match
