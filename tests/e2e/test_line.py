"""A whole line end to end: real Mosquitto, the real gateway process, the real firmware in VMs,
driven by the scenario files the demo uses too."""

from __future__ import annotations

from andon.runtime.replay import plant_view, wall_ms
from andon.runtime.store import records
from andon.sim.observe import wait_for
from andon.sim.rig import Rig
from andon.sim.scenario import load_scenario
from tests.e2e.conftest import SCENARIOS


def test_cord_pull_stops_the_line_at_the_fixed_position_and_the_call_keeps_its_times(rig: Rig):
    began = wall_ms()
    outcomes = rig.runner().run(load_scenario(SCENARIOS / "e2e-cord.toml"))
    ended = wall_ms()
    assert len(outcomes) == 10
    calls = records(rig.database, "call")
    assert len(calls) == 1
    call = calls[0]
    assert (call["line"], call["station"], call["cause"]) == ("L1", "S02", "cord")
    assert began <= call["opened"] <= began + 500  # dated by the board: the pull itself
    assert call["stopped"] - call["opened"] == 2000  # the fixed position, exactly
    assert call["acknowledged"] > call["stopped"]  # the badge tap came after the stop
    assert call["acknowledged_by"] == "Maria Keller"
    assert call["acknowledged"] < call["resolved"] <= ended
    assert call["resolution"] == "cord_reset"
    assert call["repeats"] == 0


def test_a_kanban_post_raises_exactly_one_order_and_the_receipt_closes_it(rig: Rig):
    rig.runner().run(load_scenario(SCENARIOS / "e2e-kanban.toml"))
    orders = records(rig.database, "order")
    assert len(orders) == 1
    order = orders[0]
    assert (order["part"], order["qty"], order["card"]) == ("P-100", 50, "04A1B2C3D4E580")
    assert (order["line"], order["station"]) == ("L1", "S02")
    assert order["due"] - order["posted"] == 3600 * 1000
    lead = order["received"] - order["posted"]
    assert 1500 < lead < 10_000  # the second post's hold-off and the receipt lie between
    triggers = [s.body for s in rig.observer.seen("andon/v1/P1/kanban/P-100/replenish")]
    assert [t["order"] for t in triggers] == [order["id"]]


def test_a_cut_or_shorted_supervised_cord_is_a_wiring_fault_and_never_stops_the_line(rig: Rig):
    rig.runner().run(load_scenario(SCENARIOS / "e2e-wiring.toml"))

    def faults() -> list[str]:
        alerts = [s.body for s in rig.observer.seen("andon/v1/P1/alert")]
        return [a["text"] for a in alerts if a and a.get("kind") == "input_fault"]

    # the scenario ends on the board's own lamps: the gateway's second alert may still be on
    # its way on a loaded machine
    wait_for("both wiring faults alerted", lambda: len(faults()) >= 2)
    assert faults() == [
        "input cord2 at L1/S01: wiring open",
        "input cord2 at L1/S01: wiring short",
    ]
    assert records(rig.database, "call") == []  # neither fault was taken for a pull
    line = wait_for(  # mended: the board's `clear` reaches the gateway
        "the faults cleared",
        lambda: not (v := plant_view(rig.plant)["lines"][0])["stations"][0]["faults"] and v,
    )
    assert line["state"] == "running"


def test_a_cord_pull_during_a_quality_call_holds_the_line_until_the_cord_is_reset(rig: Rig):
    rig.runner().run(load_scenario(SCENARIOS / "e2e-concurrent.toml"))
    calls = {c["cause"]: c for c in records(rig.database, "call")}
    assert set(calls) == {"quality", "cord"}
    quality, cord = calls["quality"], calls["cord"]
    assert (quality["resolution"], quality["resolved_by"]) == ("badge", "Maria Keller")
    assert cord["resolution"] == "cord_reset"
    assert cord["resolved"] > quality["resolved"]  # the line ran again only with the cord
