"""Issue 9's rules in the pure core: calls per cause, stop policy per cause, escalation to
resolution, alert routing, badge permissions, the console, kanban sizing, snapshots."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from andon import contract
from andon.core import Plant, Record
from andon.core.effects import Alert, AlertRecord, Annotation, CallRecord, StopRecord
from tests.gateway.corekit import (
    CARD1,
    CARD2,
    JONAS,
    MARIA,
    SHIFT_START,
    VISITOR,
    WEBHOOK,
    Feed,
    of,
    plant_config,
)

T = SHIFT_START + 3_600_000
S = 1_000
HOUR = 3_600_000
PAGER = "http://pager.example/hook"


def _station(feed: Feed, where: str = "L1/S1") -> dict:
    line, station = where.split("/")
    (line_view,) = [ln for ln in feed.plant.view()["lines"] if ln["id"] == line]
    return next(s for s in line_view["stations"] if s["id"] == station)


def _line_state(feed: Feed, line: str = "L1") -> str:
    return next(ln for ln in feed.plant.view()["lines"] if ln["id"] == line)["state"]


def _calls(feed: Feed) -> dict[str, dict]:
    return {c["cause"]: c for c in feed.plant.view()["calls"]}


# --- 1. a cord pull is never absorbed -------------------------------------------------------


def test_a_cord_pull_during_a_quality_call_keeps_the_line_stopped_until_the_cord_is_reset():
    feed = Feed()
    feed.call(T, reason="quality")
    feed.pull(T + 1 * S)
    assert set(_calls(feed)) == {"quality", "cord"}
    feed.scan(T + 2 * S, MARIA, "badge")  # acknowledges the cord call (the most severe)
    feed.scan(T + 3 * S, MARIA, "badge")  # acknowledges the quality call
    assert {c: v["acknowledged"] for c, v in _calls(feed).items()} == {
        "cord": T + 2 * S,
        "quality": T + 3 * S,
    }
    feed.plant.advance(T + 62 * S)  # both calls reach their fixed position
    assert _line_state(feed) == "stopped"
    feed.scan(T + 70 * S, MARIA, "badge")  # resolves the quality call, never the cord call
    assert set(_calls(feed)) == {"cord"}
    assert (_station(feed)["state"], _line_state(feed)) == ("stopped", "stopped")
    feed.reset(T + 80 * S)
    assert (_station(feed)["state"], _line_state(feed)) == ("running", "running")


def test_a_station_with_two_cords_runs_again_only_when_both_are_reset():
    feed = Feed()
    feed.event(T, "L1/S1", "cord_pulled", input="left")
    feed.event(T + S, "L1/S1", "cord_pulled", input="right")
    assert feed.event(T + 2 * S, "L1/S1", "cord_reset", input="left") == []
    assert _station(feed)["state"] == "called" and _station(feed)["cords_pulled"] == ["right"]
    done = feed.event(T + 3 * S, "L1/S1", "cord_reset", input="right")
    assert of(done, CallRecord)[-1].resolution == "cord_reset"
    assert _station(feed)["state"] == "running"


CORD_OPS = ["pull left", "pull right", "reset left", "reset right", "quality", "ack", "tap"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(CORD_OPS), st.sampled_from([1, 30 * S, 61 * S]))))
def test_a_pulled_cord_always_holds_a_cord_call_and_the_line_never_runs(ops):
    feed = Feed()
    t, pulled = T, set()
    for op, gap in ops:
        t += gap
        verb, _, cord = op.partition(" ")
        if verb in ("pull", "reset"):
            kind = "cord_pulled" if verb == "pull" else "cord_reset"
            feed.event(t, "L1/S1", kind, input=cord)
            (pulled.add if verb == "pull" else pulled.discard)(cord)
        elif verb == "quality":
            feed.call(t)
        elif verb == "ack":
            feed.ack(t)
        else:
            feed.scan(t, MARIA, "badge")
        assert ("cord" in _calls(feed)) == bool(pulled)
        if pulled:
            assert _station(feed)["state"] != "running" and _line_state(feed) != "running"


# --- 2. stop policy per cause ---------------------------------------------------------------


def test_maintenance_and_material_calls_never_stop_the_line_by_default_but_still_escalate():
    feed = Feed()
    feed.call(T, reason="maintenance")
    feed.call(T, where="L1/S2", reason="material")
    effects = feed.plant.advance(T + 10 * 60 * S)
    assert _line_state(feed) == "called"
    assert [a.tier for a in of(effects, Alert) if a.kind == "escalation"] == [1, 1, 2, 2]


def test_stop_policy_per_cause_from_the_plant_file():
    causes = {"quality": {"stop": {"after_s": 0}}, "cord": {"stop": "never"}, "safety": {}}
    feed = Feed(plant_config(causes=causes))
    feed.pull(T)
    feed.plant.advance(T + HOUR)
    assert _line_state(feed) == "called"  # cord: never
    feed.call(T + HOUR, where="L1/S2", reason="quality")
    assert _line_state(feed) == "stopped"  # quality: at once
    feed.call(T + HOUR, where="L1/S3", reason="safety")  # a cause the plant file adds
    assert _station(feed, "L1/S3")["call"] == "safety"


def test_the_station_shows_its_most_severe_call():
    feed = Feed()
    feed.call(T, reason="material")
    assert _station(feed)["call"] == "material"
    feed.call(T + S, reason="quality")
    assert _station(feed)["call"] == "quality"
    feed.ack(T + 2 * S)  # acknowledges the quality call: the material call is now the loudest
    assert (_station(feed)["state"], _station(feed)["call"]) == ("called", "material")


# --- 3. escalation to resolution, routing, notices ------------------------------------------


def test_an_acknowledged_call_left_open_escalates_on_unresolved_tiers():
    tiers = [
        {"after_s": 60, "to": "team_leader"},
        {"after_s": 900, "to": "manager", "on": "unresolved"},
    ]
    feed = Feed(plant_config(escalation={"tiers": tiers}))
    feed.call(T, reason="maintenance")
    feed.ack(T + 30 * S)
    alerts = of(feed.plant.advance(T + 2 * HOUR), Alert)
    assert [(a.kind, a.tier, a.to, a.ts) for a in alerts] == [
        ("escalation", 2, "manager", T + 900 * S)
    ]
    assert (alerts[0].call, alerts[0].cause, alerts[0].acknowledged) == (
        "C-L1-000001",
        "maintenance",
        T + 30 * S,
    )
    assert alerts[0].text == "maintenance call at L1/S1 open for 900 s"
    assert [a["kind"] for a in feed.plant.view()["alerts"]] == ["escalation"]
    feed.ack(T + 2 * HOUR + S)  # resolves it: its escalations close
    assert feed.plant.view()["alerts"] == []


def test_every_alert_kind_is_routed_to_its_destinations_and_notices_are_optional():
    alerts = {
        "destinations": {"pager": {"webhook": PAGER}, "log": {"webhook": WEBHOOK}},
        "routes": {"station_offline": ["pager"], "unknown_tag": ["pager", "log"]},
        "notices": ["log"],
    }
    feed = Feed(plant_config(alerts=alerts))
    feed.birth(T, boot=1)
    gone = of(feed.will(T + S, boot=1), Alert)
    assert [(a.kind, a.webhooks) for a in gone] == [("station_offline", (PAGER,))]
    unknown = of(feed.scan(T + 2 * S, "DEADBEEF", "post"), Alert)
    assert [a.webhooks for a in unknown] == [(PAGER, WEBHOOK)]
    lifecycle = of(feed.call(T + 3 * S) + feed.ack(T + 4 * S) + feed.ack(T + 5 * S), Alert)
    assert [(a.kind, a.call, a.webhooks) for a in lifecycle] == [
        ("call_opened", "C-L1-000001", (WEBHOOK,)),
        ("call_acknowledged", "C-L1-000001", (WEBHOOK,)),
        ("call_resolved", "C-L1-000001", (WEBHOOK,)),
    ]


def test_unrouted_alerts_still_reach_people_as_open_alerts_until_their_condition_clears():
    feed = Feed()
    feed.birth(T, boot=1)
    feed.will(T + S, boot=1)
    feed.event(T + 2 * S, "L1/S1", "input_fault", input="cord", fault="open")
    kinds = {a["kind"]: a for a in feed.plant.view()["alerts"]}
    assert set(kinds) == {"station_offline", "input_fault"}
    feed.birth(T + 3 * S, boot=2)
    feed.event(T + 4 * S, "L1/S1", "input_fault", input="cord", fault="clear")
    assert feed.plant.view()["alerts"] == []


def test_one_shot_alerts_count_repeats_and_close_after_keep_open_s():
    feed = Feed(plant_config(alerts={"keep_open_s": 600}))
    first = feed.scan(T, "DEADBEEF", "post")
    again = feed.scan(T + S, "DEADBEEF", "post")
    assert len(of(first, Alert)) == 1 and of(again, Alert) == []  # not sent twice
    (alert,) = feed.plant.view()["alerts"]
    assert (alert["kind"], alert["count"]) == ("unknown_tag", 2)
    closed = of(feed.plant.advance(T + 601 * S), AlertRecord)
    assert [(r.id, r.closed) for r in closed] == [(alert["id"], T + 600 * S)]


# --- 4. badge permissions -------------------------------------------------------------------


def test_a_visitor_badge_is_recorded_and_alerted_and_never_changes_the_call():
    feed = Feed()
    feed.call(T, reason="quality")
    effects = feed.scan(T + S, VISITOR, "badge")
    assert of(effects, CallRecord) == []
    (denied,) = of(effects, Alert)
    assert denied.kind == "badge_denied" and "Vera" in denied.text
    assert _calls(feed)["quality"]["acknowledged"] is None


def test_a_maintenance_badge_acknowledges_a_quality_call_only_if_allowed():
    feed = Feed()
    feed.call(T, reason="maintenance")
    feed.call(T, reason="quality")
    feed.scan(T + S, JONAS, "badge")  # may not touch quality: acknowledges maintenance
    assert _calls(feed)["maintenance"]["acknowledged_by"] == "Jonas"
    assert _calls(feed)["quality"]["acknowledged"] is None
    feed.scan(T + 2 * S, JONAS, "badge")  # resolves maintenance, the one he may resolve
    assert set(_calls(feed)) == {"quality"}
    denied = of(feed.scan(T + 3 * S, JONAS, "badge"), Alert)
    assert [a.kind for a in denied] == ["badge_denied"]


# --- the console ----------------------------------------------------------------------------


def _op(action: str, **fields) -> contract.Operator:
    return contract.Operator(action=action, by="supervisor-1", **fields)


def _operate(feed: Feed, t: int, op: contract.Operator) -> list:
    """A console action on no station of its own (a card, a closed call)."""
    return feed.plant.apply(Record.dated(t, "", "", op))


def test_console_actions_are_checked_then_applied_like_any_record():
    feed = Feed(plant_config(reason_codes={"tooling": "Tooling broke"}))
    feed.pull(T)
    feed.call(T, reason="quality")
    plant = feed.plant
    assert plant.check(_op("resolve", call="C-L1-000001")).startswith("a cord call is resolved")
    assert plant.check(_op("acknowledge", call="C-L1-000009")) == "call C-L1-000009 is not open"
    assert "unknown reason code" in plant.check(_op("annotate", call="C-L1-000001", reason="x"))
    feed.send(T + S, "L1/S1", _op("acknowledge", call="C-L1-000002"))
    assert _calls(feed)["quality"]["acknowledged_by"] == "supervisor-1"
    effects = feed.send(T + 2 * S, "L1/S1", _op("resolve", call="C-L1-000002"))
    assert of(effects, CallRecord)[-1].resolution == "console"
    feed.reset(T + 3 * S)
    note = _op("annotate", call="C-L1-000001", reason="tooling", comment="clamp")
    assert plant.check(note) is None  # a closed cord call takes a reason code
    (annotation,) = of(_operate(feed, T + 4 * S, note), Annotation)
    assert (annotation.id, annotation.reason, annotation.by) == (
        "C-L1-000001",
        "tooling",
        "supervisor-1",
    )


def test_console_marks_a_card_lost_and_found():
    feed = Feed()
    feed.pull(T)
    _operate(feed, T + S, _op("card_lost", card=CARD2))
    assert feed.plant.view()["kanban"][0]["cards"]["lost"] == 1
    _operate(feed, T + 2 * S, _op("card_found", card=CARD2))
    assert feed.plant.view()["kanban"][0]["cards"]["lost"] == 0


# --- line stops as records ------------------------------------------------------------------


def test_a_line_stop_is_a_record_booked_to_the_first_station_and_cause():
    feed = Feed()
    feed.pull(T)
    started = of(feed.plant.advance(T + 61 * S), StopRecord)
    assert [(r.id, r.station, r.cause, r.call, r.started, r.ended) for r in started] == [
        ("D-L1-000001", "S1", "cord", "C-L1-000001", T + 60 * S, None)
    ]
    ended = of(feed.reset(T + 90 * S), StopRecord)
    assert [(r.id, r.ended) for r in ended] == [("D-L1-000001", T + 90 * S)]


# --- 6. kanban sizing -----------------------------------------------------------------------


def _one_card_loop(**loop) -> list[dict]:
    base = {
        "part": "P-1", "bin_qty": 10, "cards": [CARD1], "supplier": "ACME",
        "lead_time_s": 86_400, "post": "L1/S1", "receive": "L1/S3",
    }  # fmt: skip
    return [{**base, **loop}]


def test_a_loop_short_of_cards_measures_its_real_demand_and_counts_the_bin_in_use():
    """One card, a 24 h lead time, a line that empties a bin every 8 h (3 bins a day): the card
    waits 24 h at the supplier, then its bin is empty 8 h after it came back."""
    policy = {"safety_factor": 0.0, "demand_window_s": 7 * 86_400, "lost_after_s": 30 * 86_400}
    feed = Feed(plant_config(kanban=_one_card_loop(), kanban_policy=policy))
    t = T
    feed.pull(t)  # the clock starts
    feed.reset(t + 1)
    for _ in range(6):
        t += 8 * HOUR
        feed.scan(t, CARD1, "post")
        t += 24 * HOUR
        feed.scan(t, CARD1, "receive", where="L1/S3")
    feed.scan(t + 8 * HOUR, CARD1, "post")  # the window now spans six whole cycles
    (loop,) = feed.plant.view()["kanban"]
    assert loop["orders_per_day"] == pytest.approx(3.0, rel=0.01)
    assert loop["recommended_cards"] == 4  # 3 bins over the 1-day lead time + the bin in use


def test_a_post_exactly_at_the_window_start_counts():
    policy = {"demand_window_s": 86_400, "safety_factor": 0.0}
    feed = Feed(plant_config(kanban_policy=policy))
    feed.pull(T - 2 * HOUR)
    for i in range(6):  # six posts, every 4 h, the first at the window's very start
        feed.scan(T + i * 4 * HOUR, CARD1 if i % 2 == 0 else CARD2, "post")
        feed.scan(T + i * 4 * HOUR + 1, CARD1 if i % 2 == 0 else CARD2, "receive", "L1/S3")
    feed.plant.advance(T + 24 * HOUR)
    assert feed.plant.view()["kanban"][0]["orders_per_day"] == 6.0


def test_a_planned_demand_replaces_the_measured_one():
    loops = _one_card_loop(demand="planned", planned_bins_per_day=5.0)
    feed = Feed(plant_config(kanban=loops, kanban_policy={"safety_factor": 0.2}))
    feed.pull(T)
    (loop,) = feed.plant.view()["kanban"]
    assert (loop["orders_per_day"], loop["recommended_cards"]) == (5.0, 7)  # ceil(6) + 1


# --- snapshots of an older version are rebuilt from the log ---------------------------------


def test_a_version_1_snapshot_is_refused_clearly():
    feed = Feed()
    feed.pull(T)
    snapshot = {**feed.plant.snapshot(), "version": 1}
    with pytest.raises(ValueError, match="snapshot version 1 is not supported"):
        Plant.restore(feed.config, snapshot)


def test_a_will_of_another_boot_never_takes_a_station_offline_for_good():
    feed = Feed()
    feed.birth(T, boot=5, where="L1/S1")
    assert of(feed.will(T + S, boot=2**52, where="L1/S1"), Alert) == []
    assert _station(feed)["online"]
    feed.will(T + 2 * S, boot=5, where="L1/S1")
    assert not _station(feed)["online"]
    feed.birth(T + 3 * S, boot=6, where="L1/S1")
    assert _station(feed)["online"]


# --- 5. the calendar in the core (docs/calendar.md has the rules) ---------------------------


def test_a_pull_during_a_break_stops_at_the_end_of_its_cycle_in_working_time():
    feed = Feed()
    nine = SHIFT_START + 3 * HOUR  # 09:00: the morning break until 09:15
    feed.pull(nine + 5 * 60 * S, where="L2/S1")
    feed.plant.advance(nine + 16 * 60 * S - 1)
    assert _line_state(feed, "L2") == "called"  # the takt grid stood still in the break
    feed.plant.advance(nine + 16 * 60 * S)
    assert _line_state(feed, "L2") == "stopped"


def test_the_shift_tally_says_its_working_time_and_plans_in_working_time():
    feed = Feed()
    feed.cycle(SHIFT_START + 1)
    feed.plant.advance(SHIFT_START + 3 * HOUR + 15 * 60 * S)  # 09:15: the break is over
    (shift,) = next(ln for ln in feed.plant.view()["lines"] if ln["id"] == "L2")["takt"]["shifts"]
    assert (shift["working_ms"], shift["plan"]) == (7.5 * HOUR, 180)  # 3 h of work, 60 s takt


def test_ids_are_numbered_per_line_so_a_replay_of_one_line_gives_the_same_ids():
    feed = Feed()
    feed.pull(T, "L1/S1")
    feed.pull(T, "L2/S1")
    feed.reset(T + S, "L1/S1")
    feed.pull(T + 2 * S, "L1/S1")
    assert {c["line"]: c["id"] for c in feed.plant.view()["calls"]} == {
        "L1": "C-L1-000002",
        "L2": "C-L2-000001",
    }
    alone = Plant(feed.config)  # a gateway that serves L2 alone replays L2's records alone
    for record in feed.records:
        if record.line == "L2":
            alone.apply(record)
    assert [c["id"] for c in alone.view()["calls"]] == ["C-L2-000001"]
