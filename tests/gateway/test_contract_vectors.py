"""The gateway's side of the wire contract, against the vectors the firmware is tested with."""

import json

import pytest

from andon import contract
from tests.vectors.load import load, raw_payload

EVENTS = load("events")
DOWNLINK = load("downlink")


@pytest.mark.parametrize("vector", EVENTS["valid"], ids=lambda v: v["name"])
def test_gateway_decodes_what_the_firmware_encodes(vector):
    station, event = contract.decode_uplink(vector["topic"], json.dumps(vector["payload"]).encode())
    st = EVENTS["station"]
    assert station == contract.Station(st["site"], st["line"], st["station"])
    record = vector["record"]
    assert event.kind == record["kind"]
    assert (event.board, event.boot, event.seq, event.base) == (
        record["board"],
        record["boot"],
        record["seq"],
        record["base"],
    )
    assert (event.ts, event.age) == (record["ts"], record["age"])
    assert event.model_dump(include=set(record["data"])) == record["data"]


@pytest.mark.parametrize("vector", EVENTS["invalid"], ids=lambda v: v["name"])
def test_gateway_rejects_bad_uplinks_with_a_reason(vector):
    with pytest.raises(contract.Rejected) as exc:
        contract.decode_uplink(vector["topic"], raw_payload(vector))
    assert exc.value.reason == vector["reason"]


def test_status_birth_and_will_are_told_apart():
    topic = "andon/v1/PLANT1/L1/S03/status"
    _, birth = contract.decode_uplink(
        topic,
        b'{"board":"B1","boot":4,"online":true,"fw":"0.1.0","reset_cause":1,'
        b'"outbox":0,"outbox_cap":400,"outbox_near_full":false}',
    )
    _, will = contract.decode_uplink(topic, b'{"board":"B1","boot":3,"online":false}')
    assert isinstance(birth, contract.Birth) and birth.boot == 4
    assert isinstance(will, contract.Will) and will.boot == 3


@pytest.mark.parametrize("message", DOWNLINK["messages"], ids=lambda m: m["name"])
def test_gateway_encodes_downlink_vectors(message):
    p = message["payload"]
    st = DOWNLINK["station"]
    station = contract.Station(st["site"], st["line"], st["station"])
    levels = message["topic"].split("/")
    leaf = levels[-1]
    if levels[2] == "gateway" and leaf == "status":  # the plant's one gateway, or one of several
        name = levels[3] if len(levels) == 5 else None
        assert contract.Presence(st["site"], name).status_topic == message["topic"]
        encoded = contract.gateway_birth(p["since"]) if p["online"] else contract.GATEWAY_WILL
    elif message["topic"] == contract.line_owner_topic(st["site"], st["line"]):
        encoded = contract.line_owner(p["gateway"], p["epoch"], p["since"])
    elif message["topic"] == station.line_topic:
        encoded = contract.line_state(p["state"], p["stopped"], p["called"], p["since"])
    elif leaf == "state":
        encoded = contract.station_state(p["state"], p["call"], p["since"], p["material"])
    else:
        encoded = contract.ack(p["board"], p["boot"], p["seq"])
    assert json.loads(encoded) == p


@pytest.mark.parametrize("case", EVENTS["dating"]["cases"], ids=lambda c: c["name"])
def test_the_gateway_dates_events_within_its_window(case):
    received = EVENTS["dating"]["received"]
    at, redated = contract.dating(case["ts"], case["age"], received)
    assert (at, redated) == (case["at"], case["redated"])
