"""Properties of the core over random record sequences: invariants, replay, restore, timers."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from andon.core import Plant
from andon.core.effects import OrderRecord, Replenish
from tests.gateway.corekit import CARD1, CARD2, JONAS, MARIA, SHIFT_START, Feed, of, plant_config

STATIONS = ["L1/S1", "L1/S2", "L1/S3", "L2/S1", "L2/S2"]
TAGS = [CARD1, CARD2, MARIA, JONAS, "DEADBEEF"]
GAPS = [0, 1, 700, 5_000, 29_000, 61_000, 600_000, 3_600_000, 30 * 3_600_000]
ACTIONS = ["pull", "reset", "call", "ack", "post", "receive", "badge", "cycle", "birth", "will"]

step = st.tuples(
    st.sampled_from(GAPS),
    st.sampled_from(ACTIONS),
    st.sampled_from(STATIONS),
    st.sampled_from(TAGS),
    st.sampled_from([0, 0, 0, 2_000, 400_000, None]),  # how late the event arrives
    st.integers(1, 3),  # the board's boot, for births and Wills
)
# The plant's knobs: (offline_stops_line, L1's stop seconds: a fixed position, or immediate)
knobs = st.tuples(st.booleans(), st.sampled_from([60, 0]))
scenario = st.tuples(knobs, st.lists(step, min_size=5, max_size=80))


def _play(feed: Feed, steps) -> None:
    t = SHIFT_START - 2 * 3_600_000
    for gap, action, where, tag, late, boot in steps:
        t += gap
        ts = None if late is None else t - late
        if action == "birth":
            feed.birth(t, boot, where=where)
        elif action == "will":
            feed.will(t, boot, where=where)
        elif action in ("post", "receive", "badge"):
            feed.event(t, where, "scan", ts=ts, reader=action, role=action, uid=tag)
        elif action == "call":
            feed.event(t, where, "call", ts=ts, input="maint", reason="maintenance")
        else:
            kind = {"pull": "cord_pulled", "reset": "cord_reset"}.get(action, action)
            feed.event(t, where, kind, ts=ts, input="in")


def _recorded(knobs: tuple[bool, int], steps) -> Feed:
    feed = Feed(plant_config(*knobs))
    _play(feed, steps)
    return feed


def _replay(feed: Feed, plant: Plant, records, advances=()) -> list:
    """Apply records to `plant`, advancing first to each of `advances` that falls before one."""
    effects, pending = [], sorted(advances)
    for record in records:
        while pending and pending[0] <= record.received:
            effects += plant.advance(pending.pop(0))
        effects += plant.apply(record)
    return effects


def _check_invariants(plant: Plant, offline_stops_line: bool) -> None:
    view = plant.view()
    stopping_calls = {(c["line"], c["station"]) for c in view["calls"] if c["stopped"]}
    for line in view["lines"]:
        stopping = [
            s["id"]
            for s in line["stations"]
            if (line["id"], s["id"]) in stopping_calls or (offline_stops_line and not s["online"])
        ]
        assert line["stopped"] == stopping
        assert (line["state"] == "stopped") == bool(stopping)
        shown = {s["id"]: s["state"] for s in line["stations"]}
        assert all(shown[s] in ("stopped", "offline") for s in line["stopped"])
        assert all(shown[s] in ("called", "acknowledged", "offline") for s in line["called"])


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(scenario)
def test_a_line_is_stopped_iff_one_of_its_stations_stops_it(case):
    knobs, steps = case
    feed = Feed(plant_config(*knobs))
    records = _recorded(knobs, steps).records
    for record in records:
        feed.plant.apply(record)
        _check_invariants(feed.plant, offline_stops_line=knobs[0])


@PROPERTY
@given(scenario)
def test_every_order_is_received_or_open_and_triggered_once(case):
    knobs, steps = case
    feed = Feed(plant_config(*knobs))
    effects = _replay(feed, feed.plant, _recorded(knobs, steps).records)
    last = {r.id: r for r in of(effects, OrderRecord)}
    open_ids = {o["id"] for o in feed.plant.view()["orders"]}
    assert {i for i, r in last.items() if r.received is None} == open_ids
    triggers = [r.order for r in of(effects, Replenish)]
    assert sorted(triggers) == sorted(last) and len(set(triggers)) == len(triggers)
    ordered_cards = {o["card"] for o in feed.plant.view()["orders"]}
    assert len(ordered_cards) == len(open_ids)  # one open order per card at most


@PROPERTY
@given(scenario, st.lists(st.integers(0, 40 * 3_600_000), max_size=30))
def test_replay_with_any_advance_granularity_gives_the_same_state_and_effects(case, offsets):
    knobs, steps = case
    original = _recorded(knobs, steps)
    config = original.config
    plain = Plant(config)
    effects = _replay(original, plain, original.records)
    advanced = Plant(config)
    start = SHIFT_START - 2 * 3_600_000
    more = _replay(original, advanced, original.records, [start + o for o in offsets])
    assert plain.snapshot() == original.plant.snapshot() == advanced.snapshot()
    assert more == effects


@PROPERTY
@given(scenario, st.integers(0, 60))
def test_snapshot_restore_behaves_the_same(case, split):
    knobs, steps = case
    original = _recorded(knobs, steps)
    config, records = original.config, original.records
    split = min(split, len(records))
    head = Plant(config)
    _replay(original, head, records[:split])
    snap = json.loads(json.dumps(head.snapshot()))  # what storage keeps is JSON
    assert snap == head.snapshot()
    restored = Plant.restore(config, snap)
    assert restored.snapshot() == snap
    assert restored.next_deadline() == head.next_deadline()
    tail_restored = _replay(original, restored, records[split:])
    tail_head = _replay(original, head, records[split:])
    assert tail_restored == tail_head
    assert restored.snapshot() == original.plant.snapshot()
    end = (records[-1].received if records else SHIFT_START) + 10 * 86_400_000
    assert restored.advance(end) == head.advance(end)
    assert restored.view() == head.view()
