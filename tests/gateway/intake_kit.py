"""The gateway's worker without a broker: messages in, what it publishes and acks out.

`Worker` builds a real `Gateway` on a real SQLite store, with stand-ins for the paho client and
the intake, and feeds batches straight to the worker's `_process`: the same code the worker thread
runs.
"""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt

from andon.config import PlantConfig
from andon.runtime.intake import Inbound
from andon.runtime.replay import rebuild
from andon.runtime.service import Gateway
from tests.gateway.test_service import BOARDS, SITE, one_line

NOW = time.time_ns() // 1_000_000


def plant_config(tmp_path, **gateway) -> PlantConfig:
    return PlantConfig.model_validate(
        {
            "site": SITE,
            "gateway": {"database": str(tmp_path / "andon.db"), **gateway},
            "broker": {"host": "127.0.0.1", "port": 1},
            "escalation": {"tiers": [{"after_s": 60, "to": "team_leader"}]},
            "lines": one_line(600),
        }
    )


class StubClient:
    """What the worker asks of paho: publish; recorded."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, bool]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False):
        self.published.append((topic, payload, retain))
        return mqtt.MQTTMessageInfo(len(self.published))

    def is_connected(self) -> bool:
        return False


class StubIntake:
    """What the worker asks of its intake: acks, recorded."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, mids: list[int]) -> None:
        self.acked += mids


def topic(station: str, leaf: str = "evt") -> str:
    return f"andon/v1/{SITE}/L1/{station}/{leaf}"


def event(seq: int, kind: str = "cord_pulled", *, station="S01", base=None, boot=1, ts=None):
    body = {
        "board": BOARDS[station],
        "boot": boot,
        "seq": seq,
        "base": base or seq,
        "ts": NOW if ts is None else ts,
        "age": None,
        "kind": kind,
        "input": "cord",
    }
    return topic(station), json.dumps(body).encode()


def presence(station: str, boot: int, online: bool, outbox_cap: int = 400):
    body: dict = {"board": BOARDS[station], "boot": boot, "online": online}
    if online:
        body |= {"fw": "0.1.0", "reset_cause": 1, "outbox": 0, "outbox_cap": outbox_cap}
        body["outbox_near_full"] = False
    return topic(station, "status"), json.dumps(body).encode()


class Worker:
    def __init__(self, config: PlantConfig) -> None:
        self.config = config
        self.gateway = Gateway(config)
        self.client = StubClient()
        self.gateway._client = self.client
        self.intake = StubIntake()
        self.gateway._intake = self.intake
        self.gateway.plant, self.gateway._pos, _ = rebuild(config, self.gateway.store)
        self.gateway._since_snapshot = 0
        self._mid = 0

    def feed(self, *messages: tuple[str, bytes]) -> list[int]:
        """One batch; the mids given to its messages."""
        batch = []
        for t, payload in messages:
            self._mid += 1
            batch.append(Inbound(self._mid, 1, t, payload))
        self.gateway._process(batch)
        return [m.mid for m in batch]

    def tick(self) -> None:
        self.gateway._process([])

    def published(self, leaf: str) -> list[dict]:
        return [json.loads(p) for t, p, _ in self.client.published if t.endswith(leaf) and p]

    def station(self, station: str) -> dict:
        line = self.gateway.view()["lines"][0]
        return next(s for s in line["stations"] if s["id"] == station)

    def calls(self) -> list[dict]:
        return self.gateway.store.records("call")

    def close(self) -> None:
        self.gateway.store.close()
