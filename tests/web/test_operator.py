"""A console action's path from the HTTP route to the event log: the gateway's worker checks
it, logs it as an operator record (who, when, what), applies it, answers the caller, and tells
the live board; a replay of the log gives the same plant."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import pytest

from andon import contract
from andon.config import PlantConfig
from andon.runtime.replay import rebuild
from andon.runtime.service import Gateway
from andon.runtime.store import SqliteStore
from andon.sim.observe import wait_for

BOARD = "B0000000001"


def plant(tmp_path, broker) -> PlantConfig:
    return PlantConfig.model_validate(
        {
            "site": "P1",
            "gateway": {"database": str(tmp_path / "andon.db"), "client_id": "gw-operator"},
            "broker": {"host": broker.host, "port": broker.port},
            "lines": [
                {
                    "id": "L1",
                    "name": "Line 1",
                    "stations": [
                        {"id": "S01", "name": "S01", "board": BOARD, "profile": "esp32-devkitc"}
                    ],
                }
            ],
        }
    )


def quality_call(broker) -> None:
    """A quality call button pressed at S01, as the board publishes it, once the gateway is
    online: it subscribes before it publishes its birth, so it then gets the event."""
    body = {"board": BOARD, "boot": 1, "seq": 1, "base": 1, "ts": time.time_ns() // 1_000_000}
    body |= {"age": None, "kind": "call", "input": "qual", "reason": "quality"}
    statuses: list[dict] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="board-S01")
    client.on_message = lambda _c, _u, m: statuses.append(json.loads(m.payload))
    client.connect(broker.host, broker.port)
    client.subscribe(contract.GATEWAY_STATUS, qos=1)
    client.loop_start()
    try:
        wait_for("the gateway online", lambda: any(s.get("online") for s in statuses))
        client.publish("andon/v1/P1/L1/S01/evt", json.dumps(body), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.mark.broker
def test_an_operator_action_is_logged_applied_answered_and_replayed(tmp_path, broker):
    config = plant(tmp_path, broker)
    gateway = Gateway(config)
    told = []
    gateway.watch(lambda: told.append(1))
    gateway.start()
    try:
        quality_call(broker)
        [call] = wait_for("the quality call open", lambda: gateway.view()["calls"])
        ack = contract.Operator(action="acknowledge", by="spoofed", call=call["id"])
        assert gateway.operate(ack, "boss").result(10) is None
        [acked] = gateway.view()["calls"]
        assert acked["acknowledged"] is not None
        assert told  # the live board was told
        again = gateway.operate(ack, "boss").result(10)
        assert isinstance(again, str) and again  # refused, with the reason
        unknown = contract.Operator(action="resolve", by="x", call="C-L1-999999")
        assert gateway.operate(unknown, "boss").result(10)
    finally:
        gateway.stop()
    store = SqliteStore(config.gateway.database)
    try:
        logged = [e for e in store.log() if e.leaf == "operator"]
        assert len(logged) == 1  # refusals are not logged
        assert json.loads(logged[0].message)["by"] == "boss"  # the token's name, not the body's
        replayed, _, _ = rebuild(config, store, from_scratch=True)
        assert replayed.view()["calls"][0]["acknowledged"] == acked["acknowledged"]
    finally:
        store.close()
