"""Hostile input, generated: payloads and topics thrown at the decoder and at a running gateway
on a real broker. Nothing may raise but a rejection, the gateway stays up, and the plant changes
only through valid events: it is always what its log of validated entries rebuilds."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from andon import contract
from andon.runtime.replay import rebuild
from andon.runtime.store import SqliteStore
from andon.sim.observe import wait_for
from tests.gateway.test_service import BOARDS, SITE, running, topic  # noqa: F401

NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, 2**31, 2**53 - 1, 2**53, 2**62, 2**63, 2**64, -1]),
    st.floats(allow_nan=False, allow_infinity=False),
)
VALUES = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=40))
KINDS = ["cord_pulled", "cord_reset", "call", "ack", "cycle", "scan", "input_fault", "boom"]


def _message(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if v is not ...}


FIELD = st.one_of(VALUES, st.just(...))  # ... drops the field
EVENTS = st.builds(
    _message,
    st.fixed_dictionaries(
        {
            "board": st.one_of(st.sampled_from(list(BOARDS.values())), st.text(max_size=40)),
            "boot": st.one_of(st.integers(1, 5), FIELD),
            "seq": st.one_of(st.integers(1, 40), FIELD),
            "base": st.one_of(st.integers(1, 40), FIELD),
            "ts": st.one_of(st.none(), NUMBERS),
            "age": st.one_of(st.none(), NUMBERS, st.just(...)),
            "kind": st.one_of(st.sampled_from(KINDS), FIELD),
            "input": st.one_of(st.sampled_from(["cord", "ack", "b"]), FIELD),
            "reason": st.one_of(st.sampled_from(["quality", "lunch"]), st.just(...)),
            "online": st.one_of(st.booleans(), st.just(...)),
            "fw": st.one_of(st.just("0.1.0"), st.just(...)),
            "reset_cause": st.one_of(NUMBERS, st.just(...)),
            "outbox": st.one_of(NUMBERS, st.just(...)),
            "outbox_cap": st.one_of(NUMBERS, st.just(...)),
            "outbox_near_full": st.one_of(st.booleans(), st.just(...)),
        }
    ),
)
PAYLOADS = st.one_of(
    EVENTS.map(lambda m: json.dumps(m).encode()),
    st.binary(max_size=700),
    st.recursive(VALUES, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)).map(
        lambda v: json.dumps(v).encode()
    ),
)


def _valid_event(station: str, boot: int, seq: int, back: int, ts, kind: str) -> tuple:
    body = {"board": BOARDS[station], "boot": boot, "seq": seq, "base": max(1, seq - back)}
    body |= {"ts": ts, "age": None, "kind": kind, "input": "cord"}
    if kind == "call":
        body["reason"] = "quality"
    return topic(station), json.dumps(body).encode()


# events a board could send, in any order and numbering: these may change the plant
VALID = st.builds(
    _valid_event,
    st.sampled_from(["S01", "S02"]),
    st.integers(1, 3),
    st.integers(1, 30),
    st.integers(0, 5),
    st.one_of(st.none(), st.integers(0, 2**53 - 1)),
    st.sampled_from(["cord_pulled", "cord_reset", "call", "ack", "cycle"]),
)
LEAVES = st.sampled_from(["evt", "status", "telemetry", "state", "ack"])
NAMES = st.one_of(
    st.sampled_from(["L1", "S01", "S02", SITE]),
    st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True),
)
TOPICS = st.one_of(
    st.builds(lambda s, leaf: topic(s, leaf), st.sampled_from(["S01", "S02", "S99"]), LEAVES),
    st.builds(lambda *p: "andon/v1/" + "/".join(p), NAMES, NAMES, NAMES, LEAVES),
    # any topic a client may publish to (the broker drops a client that sends control
    # characters, wildcards or "$" topics: that is the broker's rule, not the gateway's)
    st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0x24F, blacklist_characters="+#").filter(
            lambda c: not 0x7F <= ord(c) <= 0x9F
        ),
        min_size=1,
        max_size=80,
    ).filter(lambda t: not t.startswith("$")),
)


def _exact(value) -> bool:
    """No number the decoder lets through is inexact in JSON."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, int):
        return -(2**53) < value < 2**53
    return math.isfinite(value)


@settings(max_examples=600, deadline=None)
@given(TOPICS, PAYLOADS)
def test_the_decoder_only_ever_returns_a_valid_message_or_rejects(t, payload):
    try:
        _, message = contract.decode_uplink(t, payload)
    except contract.Rejected as exc:
        assert exc.reason in {"topic", "size", "json", "schema"}
        return
    assert all(_exact(v) for v in message.model_dump().values())
    at, _ = contract.dating(getattr(message, "ts", None), getattr(message, "age", None), 10**12)
    assert 10**12 - contract.TS_BEHIND_MS <= at <= 10**12


def dead_payloads(config) -> list[bytes]:
    store = SqliteStore(config.gateway.database)
    try:
        return [payload for _, _, payload, _, _ in store.dead_letters()]
    finally:
        store.close()


def plant_of_log(config) -> dict:
    store = SqliteStore(config.gateway.database)
    try:
        plant, _, _ = rebuild(config, store, from_scratch=True)
    finally:
        store.close()
    return plant.snapshot()


@settings(
    max_examples=4,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # shrinking through a live gateway takes minutes
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(st.lists(st.one_of(st.tuples(TOPICS, PAYLOADS), VALID), min_size=20, max_size=60))
def test_a_running_gateway_takes_any_input_and_changes_only_through_valid_events(
    running,  # noqa: F811
    messages,
):
    w = running.watcher
    for t, payload in messages:
        w.client.publish(t, payload, qos=1).wait_for_publish(5)
    # a sentinel: once it is dead-lettered, everything published before it is committed
    sentinel = f"sentinel {len(messages)} {id(messages)}".encode()
    w.client.publish(topic("S01"), sentinel, qos=1).wait_for_publish(5)
    gateway = running.gateway
    wait_for(
        "the sentinel dead-lettered",
        lambda: sentinel in dead_payloads(running.config) or not gateway.running,
        timeout=30,
    )
    assert gateway.running and gateway.failed is None
    with gateway._state:
        live = gateway.plant.snapshot()
    rebuilt = plant_of_log(running.config)
    for key in ("stations", "lines", "calls", "orders", "counters"):
        assert live[key] == rebuilt[key], key
