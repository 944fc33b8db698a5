"""The core's calls: station transitions, fixed-position line stops, escalation, records."""

from __future__ import annotations

import pytest

from andon import contract
from andon.core import Plant, Record, UnknownStation, date_event
from andon.core.effects import Alert, CallRecord, LineChanged, StationChanged
from andon.core.plant import LATE_GRACE_MS
from tests.gateway.corekit import (
    MARIA,
    SHIFT_START,
    TAKT_MS,
    WEBHOOK,
    Feed,
    of,
    plant_config,
)

T = SHIFT_START + 3_600_000  # 07:00, inside L2's shift


def _station(effects) -> list[tuple[str, str, str | None, int, bool]]:
    return [(e.station, e.state, e.call, e.since, e.material) for e in of(effects, StationChanged)]


def _line(effects) -> list[tuple[str, str, tuple, tuple, int]]:
    return [(e.line, e.state, e.stopped, e.called, e.since) for e in of(effects, LineChanged)]


def _last_call(effects) -> CallRecord:
    return of(effects, CallRecord)[-1]


def test_cord_call_acknowledged_then_reset():
    feed = Feed()
    opened = feed.pull(T)
    assert _station(opened) == [("S1", "called", "cord", T, False)]
    assert _line(opened) == [("L1", "called", (), ("S1",), T)]
    assert _last_call(opened).id == "C-L1-000001" and _last_call(opened).acknowledged is None

    acked = feed.ack(T + 12_000)
    assert _station(acked) == [("S1", "acknowledged", "cord", T + 12_000, False)]
    assert _line(acked) == []  # the line is still "called" by S1: nothing to publish
    assert _last_call(acked).response_ms == 12_000

    done = feed.reset(T + 40_000)
    assert _station(done) == [("S1", "running", None, T + 40_000, False)]
    assert _line(done) == [("L1", "running", (), (), T + 40_000)]
    record = _last_call(done)
    assert (record.resolution, record.repair_ms, record.stopped) == ("cord_reset", 40_000, None)


def test_repeat_pull_is_not_a_new_call_and_shows_nothing():
    feed = Feed()
    feed.pull(T)
    assert feed.pull(T + 1_000) == []
    feed.call(T + 1_500)
    assert feed.call(T + 2_000) == []  # a repeat of the quality call: one call per cause
    calls = {c["cause"]: (c["id"], c["repeats"]) for c in feed.plant.view()["calls"]}
    assert calls == {"cord": ("C-L1-000001", 1), "quality": ("C-L1-000002", 1)}
    feed.reset(T + 3_000)
    assert _last_call(feed.pull(T + 4_000)).id == "C-L1-000003"


def test_cord_reset_resolves_without_acknowledgement_but_not_a_button_call():
    feed = Feed()
    feed.pull(T)
    assert _last_call(feed.reset(T + 5_000)).acknowledged is None
    feed.call(T + 10_000, reason="maintenance")
    assert feed.reset(T + 11_000) == []
    assert feed.plant.view()["calls"][0]["cause"] == "maintenance"


def test_button_call_second_ack_press_resolves():
    feed = Feed()
    opened = feed.call(T, reason="maintenance")
    assert _station(opened) == [("S1", "called", "maintenance", T, False)]
    feed.ack(T + 20_000)
    done = feed.ack(T + 50_000)
    record = _last_call(done)
    assert (record.acknowledged, record.resolved, record.resolution) == (
        T + 20_000,
        T + 50_000,
        "ack_button",
    )
    assert record.acknowledged_by is None
    assert _station(done) == [("S1", "running", None, T + 50_000, False)]


def test_badge_taps_acknowledge_then_resolve_with_who():
    feed = Feed()
    feed.call(T, where="L1/S2", reason="quality")
    acked = feed.scan(T + 9_000, MARIA, "badge", where="L1/S2")
    assert _last_call(acked).acknowledged_by == "Maria"
    done = feed.scan(T + 30_000, MARIA, "badge", where="L1/S2")
    record = _last_call(done)
    assert (record.resolved_by, record.resolution, record.repair_ms) == ("Maria", "badge", 30_000)


def test_badge_does_not_resolve_a_cord_call_the_cord_must_be_reset():
    feed = Feed()
    feed.pull(T)
    feed.scan(T + 1_000, MARIA, "badge")
    assert feed.scan(T + 2_000, MARIA, "badge") == []
    assert feed.ack(T + 3_000) == []
    assert feed.plant.view()["calls"][0]["acknowledged_by"] == "Maria"


def test_ack_and_badge_without_a_call_change_nothing():
    feed = Feed()
    assert feed.ack(T) == []
    assert feed.scan(T + 1, MARIA, "badge") == []
    assert feed.reset(T + 2) == []


def test_fixed_position_stop_after_configured_seconds():
    feed = Feed()
    feed.call(T, reason="quality")
    feed.ack(T + 10_000)
    assert feed.plant.next_deadline() == T + 60_000
    assert _station(feed.plant.advance(T + 59_999)) == []
    stop = feed.plant.advance(T + 75_000)  # late advance: stamped with the deadline anyway
    assert _station(stop) == [("S1", "stopped", "quality", T + 60_000, False)]
    assert _line(stop) == [("L1", "stopped", ("S1",), (), T + 60_000)]
    assert _last_call(stop).stopped == T + 60_000

    feed.pull(T + 80_000, where="L1/S2")
    both = feed.plant.advance(T + 140_000)
    assert _line(both) == [("L1", "stopped", ("S1", "S2"), (), T + 60_000)]
    end_first = feed.ack(T + 150_000)  # second press resolves S1's button call
    assert _line(end_first) == [("L1", "stopped", ("S2",), (), T + 60_000)]
    end = feed.reset(T + 200_000, where="L1/S2")
    assert _line(end) == [("L1", "running", (), (), T + 200_000)]
    line = feed.plant.view()["lines"][0]
    assert line["downtime_ms"] == {"quality": 140_000}  # booked to the first stop's cause


def test_an_immediate_stop_comes_with_the_call_but_a_late_call_still_gets_its_grace():
    feed = Feed(plant_config(stop_s=0))
    stop = feed.pull(T)
    assert _station(stop) == [("S1", "stopped", "cord", T, False)]
    assert _line(stop) == [("L1", "stopped", ("S1",), (), T)]
    assert _last_call(stop).stopped == T
    assert feed.plant.next_deadline() != T  # nothing left to fire for it
    assert _line(feed.reset(T + 5_000)) == [("L1", "running", (), (), T + 5_000)]

    back = T + 600_000  # a pull from an outbox replay: the reset that followed may come next
    feed.event(back, "L1/S2", "cord_pulled", ts=back - 400_000, input="cord")
    assert feed.plant.next_deadline() == back + LATE_GRACE_MS


def test_fixed_position_stop_at_the_end_of_the_takt_cycle():
    feed = Feed()
    opened = SHIFT_START + 2 * TAKT_MS + 25_000  # 25 s into the third cycle
    feed.pull(opened, where="L2/S1")
    assert feed.plant.view()["calls"][0]["stop_at"] == SHIFT_START + 3 * TAKT_MS
    stop = feed.plant.advance(SHIFT_START + 10 * TAKT_MS)
    assert _line(stop)[0] == ("L2", "stopped", ("S1",), (), SHIFT_START + 3 * TAKT_MS)


def test_takt_stop_outside_the_shift_waits_one_takt():
    feed = Feed()
    night = SHIFT_START - 3_600_000
    feed.pull(night, where="L2/S1")
    deadlines = {feed.plant.next_deadline()}
    assert deadlines == {night + 30_000}  # the first escalation tier comes first
    stop = feed.plant.advance(night + TAKT_MS)
    assert _station(stop)[0][1:4] == ("stopped", "cord", night + TAKT_MS)


def test_resolved_before_the_deadline_never_stops():
    feed = Feed()
    feed.pull(T, where="L2/S1")
    feed.reset(T + 10_000, where="L2/S1")
    later = feed.plant.advance(T + 3_600_000)
    assert of(later, StationChanged) == [] and of(later, Alert) == []
    assert feed.plant.view()["calls"] == []


def test_escalation_tiers_while_unacknowledged():
    feed = Feed()
    feed.call(T, reason="maintenance")
    alerts = of(feed.plant.advance(T + 200_000), Alert)
    assert [(a.kind, a.tier, a.to, a.ts, a.webhooks) for a in alerts] == [
        ("escalation", 1, "team_leader", T + 30_000, (WEBHOOK,)),
        ("escalation", 2, "supervisor", T + 120_000, (WEBHOOK,)),
    ]
    assert alerts[0].text == "maintenance call at L1/S1 unacknowledged for 30 s"
    assert (alerts[0].line, alerts[0].station) == ("L1", "S1")


def test_acknowledgement_stops_escalation():
    feed = Feed()
    feed.call(T, where="L1/S2")
    feed.scan(T + 45_000, MARIA, "badge", where="L1/S2")
    alerts = of(feed.plant.advance(T + 600_000), Alert)
    assert alerts == []  # tier 1 fired before the ack, during the scan's own advance
    assert _last_call(feed.scan(T + 700_000, MARIA, "badge", where="L1/S2")).tier == 1


def test_late_events_from_an_outbox_replay_get_a_grace_period():
    feed = Feed()
    back = T + 600_000  # the board was offline; its pull and reset arrive together
    feed.event(back, "L1/S1", "cord_pulled", ts=T, input="cord")
    assert feed.plant.next_deadline() == back + LATE_GRACE_MS
    effects = feed.event(back + 300, "L1/S1", "cord_reset", ts=T + 20_000, input="cord")
    assert not any(e.state == "stopped" for e in of(effects, StationChanged))
    assert _last_call(effects).repair_ms == 20_000


def test_unknown_station_is_a_clear_error_and_changes_nothing():
    feed = Feed()
    before = feed.plant.snapshot()
    will = contract.Will(board="B99", boot=1, online=False)
    with pytest.raises(UnknownStation, match="L9/S1"):
        feed.plant.apply(Record(T, "L9", "S1", will, T))
    assert feed.plant.snapshot() == before


def test_input_fault_alerts_once_until_cleared():
    feed = Feed()
    first = feed.event(T, "L1/S1", "input_fault", input="cord2", fault="open")
    assert [(a.kind, a.station) for a in of(first, Alert)] == [("input_fault", "S1")]
    assert feed.event(T + 1, "L1/S1", "input_fault", input="cord2", fault="short") == []
    assert feed.plant.view()["lines"][0]["stations"][0]["faults"] == ["cord2"]
    feed.event(T + 2, "L1/S1", "input_fault", input="cord2", fault="clear")
    assert feed.plant.view()["lines"][0]["stations"][0]["faults"] == []


def test_an_rfid_reader_that_stops_answering_alerts_until_it_recovers():
    feed = Feed()
    first = feed.event(T, "L1/S1", "input_fault", input="post", fault="reader")
    alerts = of(first, Alert)
    assert [(a.kind, a.station) for a in alerts] == [("input_fault", "S1")]
    assert alerts[0].text == "input post at L1/S1: not answering"
    assert feed.plant.view()["lines"][0]["stations"][0]["faults"] == ["post"]
    feed.event(T + 1, "L1/S1", "input_fault", input="post", fault="clear")
    assert feed.plant.view()["lines"][0]["stations"][0]["faults"] == []


@pytest.mark.parametrize(
    ("ts", "age", "expected"),
    [(5_000, None, 5_000), (None, 700, 9_300), (None, None, 10_000), (12_000, None, 10_000)],
)
def test_date_event(ts, age, expected):
    event = contract.CordPulled(
        board="B1", boot=1, seq=1, base=1, ts=ts, age=age, kind="cord_pulled", input="cord"
    )
    assert date_event(event, 10_000) == expected


def test_states_lists_every_station_and_line_for_the_retained_topics():
    plant = Plant(Feed().config)
    states = plant.states()
    assert len(of(states, StationChanged)) == 5 and len(of(states, LineChanged)) == 2
    assert {e.state for e in states} == {"running"}
