"""The firmware's side of the wire contract, run inside the MicroPython VM."""

import json

from tests.vectors.load import load, raw_payload

EVENTS = load("events")
DOWNLINK = load("downlink")


def test_firmware_encodes_every_event_vector(mpy):
    st = EVENTS["station"]
    records = [v["record"] for v in EVENTS["valid"]]
    result = mpy.run(
        f"""
import json
from andon import wire
from vtest import emit
t = wire.Topics({st["site"]!r}, {st["line"]!r}, {st["station"]!r})
records = json.loads({json.dumps(json.dumps(records))})
emit([[t.evt, json.loads(wire.event_payload(r))] for r in records])
"""
    )
    for vector, (topic, payload) in zip(EVENTS["valid"], result.data, strict=True):
        assert topic == vector["topic"], vector["name"]
        assert payload == vector["payload"], vector["name"]
        assert len(json.dumps(payload)) <= 512


def test_firmware_decodes_downlink_and_ignores_garbage(mpy):
    st = DOWNLINK["station"]
    cases = [[m["topic"], json.dumps(m["payload"])] for m in DOWNLINK["messages"]]
    cases += [[m["topic"], raw_payload(m).decode()] for m in DOWNLINK["ignored"]]
    result = mpy.run(
        f"""
import json
from andon import wire
from vtest import emit
t = wire.Topics({st["site"]!r}, {st["line"]!r}, {st["station"]!r})
cases = json.loads({json.dumps(json.dumps(cases))})
emit([wire.decode(t, {st["board"]!r}, topic, payload) for topic, payload in cases])
"""
    )
    expected = [m["decoded"] for m in DOWNLINK["messages"]] + [None] * len(DOWNLINK["ignored"])
    names = [m["name"] for m in DOWNLINK["messages"] + DOWNLINK["ignored"]]
    for name, got, want in zip(names, result.data, expected, strict=True):
        assert got == want, name
