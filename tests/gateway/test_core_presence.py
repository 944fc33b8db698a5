"""The core's presence: Wills and births, stale Wills, and whether offline stops the line."""

from __future__ import annotations

from andon.core.effects import Alert, LineChanged, StationChanged
from tests.gateway.corekit import SHIFT_START, Feed, of, plant_config

T = SHIFT_START + 3_600_000


def _kinds(effects) -> list[str]:
    return [a.kind for a in of(effects, Alert)]


def test_will_makes_the_station_offline_and_birth_brings_it_back():
    feed = Feed()
    feed.birth(T, boot=3)
    gone = feed.will(T + 1_000, boot=3)
    assert _kinds(gone) == ["station_offline"]
    assert [(e.station, e.state, e.since) for e in of(gone, StationChanged)] == [
        ("S2", "offline", T + 1_000)
    ]
    assert of(gone, LineChanged) == []  # by default an offline board does not stop the line
    assert feed.will(T + 2_000, boot=3) == []  # a repeated Will is no news
    back = feed.birth(T + 5_000, boot=3)  # reconnected without a reboot
    assert _kinds(back) == ["station_online"]
    assert [e.state for e in of(back, StationChanged)] == ["running"]


def test_a_will_older_than_the_current_birth_is_ignored():
    feed = Feed()
    feed.birth(T, boot=7)
    feed.birth(T + 10, boot=8)  # rebooted before the broker delivered boot 7's Will
    assert feed.will(T + 20, boot=7) == []
    assert feed.plant.view()["lines"][0]["stations"][1]["online"] is True
    assert feed.birth(T + 30, boot=7) == []  # nor does an older birth move the boot back
    assert _kinds(feed.will(T + 40, boot=8)) == ["station_offline"]


def test_offline_stops_the_line_when_configured():
    feed = Feed(plant_config(offline_stops_line=True))
    feed.birth(T - 1, boot=1)
    gone = feed.will(T, boot=1)
    assert [(e.state, e.stopped) for e in of(gone, LineChanged)] == [("stopped", ("S2",))]
    back = feed.birth(T + 90_000, boot=1)
    assert [(e.state, e.since) for e in of(back, LineChanged)] == [("running", T + 90_000)]
    assert feed.plant.view()["lines"][0]["downtime_ms"] == {"offline": 90_000}


def test_open_call_keeps_its_timers_while_the_board_is_offline():
    feed = Feed()
    feed.birth(T - 1, boot=1)
    feed.pull(T, where="L1/S2")
    feed.will(T + 5_000, boot=1)
    stop = feed.plant.advance(T + 61_000)
    assert [(e.state, e.stopped) for e in of(stop, LineChanged)] == [("stopped", ("S2",))]
    assert of(stop, StationChanged) == []  # the station still shows offline
    back = feed.birth(T + 70_000, boot=1)
    assert [(e.state, e.call) for e in of(back, StationChanged)] == [("stopped", "cord")]


def test_outbox_near_full_birth_raises_an_alert():
    feed = Feed()
    assert _kinds(feed.birth(T, boot=1, near_full=True)) == ["outbox_near_full"]


def test_a_birth_after_a_firmware_fault_raises_a_board_fault_alert():
    feed = Feed()
    assert _kinds(feed.birth(T, boot=4)) == []
    error = "andon/app.py, line 59, in _readers | ValueError: invalid pin"
    effects = feed.birth(T + 9_000, boot=5, last_error=error)
    alerts = of(effects, Alert)
    assert [(a.kind, a.station) for a in alerts] == [("board_fault", "S2")]
    assert alerts[0].text.endswith("reset after a firmware fault: " + error)
