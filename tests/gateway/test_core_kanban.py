"""The core's kanban loops and takt: triggers, receipts, alerts, per-loop figures, plan/actual."""

from __future__ import annotations

from andon.core.effects import Alert, OrderRecord, Replenish, StationChanged
from andon.core.kanban import recommended_cards
from tests.gateway.corekit import (
    CARD1,
    CARD2,
    MARIA,
    SHIFT_START,
    TAKT_MS,
    Feed,
    of,
)

T = SHIFT_START + 3_600_000
HOUR = 3_600_000


def test_a_post_emits_exactly_one_trigger_until_received():
    feed = Feed()
    posted = feed.scan(T, CARD1, "post")
    (trigger,) = of(posted, Replenish)
    assert (trigger.order, trigger.part, trigger.qty, trigger.supplier, trigger.card) == (
        "K-L1-000001",
        "P-1",
        10,
        "ACME",
        CARD1,
    )
    assert (trigger.line, trigger.station, trigger.posted, trigger.due) == ("L1", "S1", T, T + HOUR)
    assert [e.material for e in of(posted, StationChanged)] == [True]

    assert feed.scan(T + 60_000, CARD1, "post") == []  # the same card again: the same order

    received = feed.scan(T + 50 * 60_000, CARD1, "receive", where="L1/S3")
    (record,) = of(received, OrderRecord)
    assert (record.id, record.lead_time_ms) == ("K-L1-000001", 50 * 60_000)
    assert [(e.station, e.material) for e in of(received, StationChanged)] == [("S1", False)]

    (again,) = of(feed.scan(T + 2 * HOUR, CARD1, "post"), Replenish)
    assert again.order == "K-L1-000002"


def test_material_flag_stays_while_any_order_from_the_station_is_open():
    feed = Feed()
    feed.scan(T, CARD1, "post")
    assert of(feed.scan(T + 1, CARD2, "post"), StationChanged) == []
    assert of(feed.scan(T + 2, CARD1, "receive", where="L1/S3"), StationChanged) == []
    last = feed.scan(T + 3, CARD2, "receive", where="L1/S3")
    assert [e.material for e in of(last, StationChanged)] == [False]


def test_receiving_a_card_that_was_not_ordered_changes_nothing():
    feed = Feed()
    assert feed.scan(T, CARD2, "receive", where="L1/S3") == []


def test_unknown_tags_raise_an_alert():
    feed = Feed()
    for uid, role, where in [
        ("DEADBEEF", "post", "L1/S1"),
        ("04FFFFFFFFFFFF", "receive", "L1/S3"),
        (MARIA, "post", "L1/S1"),  # a badge is not a card
        (CARD1, "badge", "L1/S2"),  # nor a card a badge
        ("0BADBADE", "badge", "L1/S2"),
    ]:
        effects = feed.scan(T, uid, role, where=where)
        assert [(a.kind, a.extra) for a in of(effects, Alert)] == [("unknown_tag", {"uid": uid})]
        assert of(effects, Replenish) == []


def test_overdue_card_alerts_once_at_lead_time_times_factor():
    feed = Feed()
    feed.scan(T, CARD1, "post")
    alerts = of(feed.plant.advance(T + 10 * HOUR), Alert)
    assert [(a.kind, a.ts, a.extra) for a in alerts] == [
        ("overdue_card", T + 2 * HOUR, {"card": CARD1})
    ]
    received = feed.scan(T + 11 * HOUR, CARD1, "receive", where="L1/S3")
    assert of(received, OrderRecord)[0].overdue is True


def test_a_card_not_seen_for_long_is_reported_lost_once():
    feed = Feed()
    day = 24 * HOUR
    feed.scan(T, CARD1, "post")  # starts the clock; CARD2 counts as seen now too
    feed.scan(T + 20 * HOUR, CARD1, "receive", where="L1/S3")
    alerts = of(feed.plant.advance(T + 3 * day), Alert)
    lost = [(a.kind, a.ts, a.extra["card"]) for a in alerts if a.kind == "lost_card"]
    assert lost == [("lost_card", T + day, CARD2), ("lost_card", T + 20 * HOUR + day, CARD1)]
    assert feed.plant.view()["kanban"][0]["cards"]["lost"] == 2
    feed.scan(T + 3 * day + 1, CARD2, "post")  # seen again: no longer lost
    assert feed.plant.view()["kanban"][0]["cards"]["lost"] == 1


def test_loop_figures_and_recommended_cards():
    feed = Feed()
    for i in range(4):  # four orders in the day, each received after 30 min
        feed.scan(T + i * 6 * HOUR, CARD1, "post")
        feed.scan(T + i * 6 * HOUR + HOUR // 2, CARD1, "receive", where="L1/S3")
    feed.plant.advance(T + 23 * HOUR)
    (loop,) = feed.plant.view()["kanban"]
    assert loop["cards"] == {"total": 2, "in_use": 2, "ordered": 0, "overdue": 0, "lost": 0}
    assert loop["orders_per_day"] == 4 * 24 / 23  # over the 23 h since the clock started
    assert loop["lead_time_ms"]["received"] == 4 and loop["lead_time_ms"]["mean"] == HOUR // 2
    # 4 bins a day x 1/48 day x 1.5 = 0.125 bins in the pipeline -> one card, + the bin in use
    assert loop["recommended_cards"] == 2


def test_recommended_cards_formula():
    day = 24 * HOUR
    # 10 bins/day over a 1-day lead time, +20 %, + the bin in use
    assert recommended_cards(10.0, day, 0.2) == 13
    assert recommended_cards(10.0, day, 0.0) == 11
    assert recommended_cards(10.0, day // 2, 0.2) == 7
    assert recommended_cards(3.0, day, 0.0) == 4  # 3.0000000000000004 bins are 3
    assert recommended_cards(0.0, day, 0.2) == 1


def test_takt_plan_versus_actual_counts_the_last_station_with_cycles():
    feed = Feed()
    for i in range(7):
        feed.cycle(SHIFT_START + i * TAKT_MS + 1_000, where="L2/S1")
    for i in range(5):
        feed.cycle(SHIFT_START + i * TAKT_MS + 30_000, where="L2/S2")
    feed.plant.advance(SHIFT_START + 10 * TAKT_MS)
    takt = feed.plant.view()["lines"][1]["takt"]
    assert takt["takt_ms"] == TAKT_MS
    (shift,) = takt["shifts"]
    assert (shift["shift"], shift["current"], shift["actual"]) == ("day", True, 5)
    assert shift["plan"] == 10  # one unit per takt of working time
    feed.cycle(SHIFT_START - HOUR + 24 * HOUR, where="L2/S2")  # next morning, before the shift
    assert feed.plant.view()["lines"][1]["takt"]["off_shift_cycles"] == 1
