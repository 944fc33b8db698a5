"""The stack light in the MicroPython VM: precedence, blink rates, GPIO levels, WS2812 colours.

Blinking follows the tick given to `Tower.render(now)`, so rates are counted exactly on an
injected clock; one test runs the real `Tower.run()` task with a generous bound.
"""

import json

import pytest

SEGMENTS = ["red", "amber", "green", "blue", "white"]
PARTS = [*SEGMENTS, "buzzer"]


def station(state: str, call: str | None = None, material: bool = False) -> dict:
    """A station state as andon.wire.decode gives it."""
    return {"kind": "station", "state": state, "call": call, "material": material}


RUNNING = {"station": station("running"), "line": "running", "link": "ok"}

# (name, view, the parts that are not off). The same table is docs/stack-light.md's.
PRECEDENCE = [
    ("nothing known yet", {}, {}),
    ("running", RUNNING, {"green": "on"}),
    (
        "config error hides everything",
        {**RUNNING, "config_error": True, "cord": True, "link": "no_wifi"},
        dict.fromkeys(SEGMENTS, "slow"),
    ),
    (
        "a board fault hides everything, faster than a config error",
        {**RUNNING, "board_fault": True, "cord": True},
        dict.fromkeys(SEGMENTS, "fast"),
    ),
    ("local cord pull before the gateway knows", {**RUNNING, "cord": True}, {"amber": "on"}),
    (
        "local call before the gateway knows",
        {**RUNNING, "local_call": True},
        {"amber": "on"},
    ),
    (
        "local cord pull with no Wi-Fi",
        {**RUNNING, "cord": True, "link": "no_wifi"},
        {"amber": "on", "white": "fast"},
    ),
    (
        "cord pull confirmed: station stopped",
        {**RUNNING, "cord": True, "station": station("stopped", "cord"), "line": "stopped"},
        {"red": "on", "amber": "on", "buzzer": "slow"},
    ),
    (
        "stopped, cord already reset locally",
        {**RUNNING, "station": station("stopped", "cord"), "line": "stopped"},
        {"red": "on", "buzzer": "slow"},
    ),
    (
        "line stopped at another station",
        {**RUNNING, "line": "stopped"},
        {"red": "slow"},
    ),
    ("wiring fault", {**RUNNING, "fault": True}, {"amber": "fast"}),
    (
        "a local pull outranks a wiring fault",
        {**RUNNING, "fault": True, "cord": True},
        {"amber": "on"},
    ),
    (
        "a wiring fault outranks a call",
        {**RUNNING, "fault": True, "station": station("called", "quality")},
        {"amber": "fast", "buzzer": "slow"},
    ),
    (
        "called",
        {**RUNNING, "station": station("called", "quality")},
        {"amber": "on", "buzzer": "slow"},
    ),
    (
        "acknowledged",
        {**RUNNING, "station": station("acknowledged", "quality")},
        {"amber": "slow"},
    ),
    (
        "material order open",
        {**RUNNING, "station": station("running", material=True)},
        {"green": "on", "blue": "on"},
    ),
    ("line called elsewhere", {**RUNNING, "line": "called"}, {"green": "on"}),
    ("station reported offline", {**RUNNING, "station": station("offline")}, {}),
    ("no Wi-Fi", {**RUNNING, "link": "no_wifi"}, {"green": "on", "white": "fast"}),
    ("no broker", {**RUNNING, "link": "no_broker"}, {"green": "on", "white": "slow"}),
    ("a TLS board waiting for the time", {"link": "no_time"}, {"green": "slow", "white": "slow"}),
    (
        "waiting for the time with a cord pulled",
        {"link": "no_time", "cord": True},
        {"amber": "on", "green": "slow", "white": "slow"},
    ),
    (
        "gateway offline",
        {**RUNNING, "link": "gateway_offline"},
        {"green": "on", "white": "on"},
    ),
    (
        "outbox near full",
        {**RUNNING, "outbox_near_full": True},
        {"green": "on", "white": "on", "buzzer": "fast"},
    ),
    (
        "outbox near full with no Wi-Fi",
        {**RUNNING, "outbox_near_full": True, "link": "no_wifi"},
        {"green": "on", "white": "fast", "buzzer": "fast"},
    ),
    (
        "stopped and no broker",
        {**RUNNING, "station": station("stopped", "cord"), "line": "stopped", "link": "no_broker"},
        {"red": "on", "white": "slow", "buzzer": "slow"},
    ),
]


def test_lamp_precedence(mpy):
    views = [view for _, view, _ in PRECEDENCE]
    result = mpy.run(
        f"""
import json
from andon.light import compose
from vtest import emit
emit([compose(v) for v in json.loads({json.dumps(json.dumps(views))})])
"""
    )
    for (name, _, lit), got in zip(PRECEDENCE, result.data, strict=True):
        assert got == {p: lit.get(p, "off") for p in PARTS}, name


GPIO_LIGHT = {
    "driver": "gpio",
    "segments": {
        "red": {"pin": 25, "active": 1},
        "amber": {"pin": 26, "active": 0},  # an active-low relay board channel
        "green": {"pin": 32, "active": 1},
        "blue": {"pin": 33, "active": 1},
        "white": {"pin": 13, "active": 0},
    },
    "buzzer": {"pin": 14, "active": 1},
    "pin": None,
    "order": None,
    "pixels_per_segment": None,
}
GPIO_PINS = {"red": 25, "amber": 26, "green": 32, "blue": 33, "white": 13, "buzzer": 14}


def tower_script(light: dict, body: str) -> str:
    return f"""
import json
from andon.light import Tower, compose
from vdevices import bench
from vtest import emit
tower = Tower(json.loads({json.dumps(json.dumps(light))}))
{body}
"""


def test_gpio_outputs_follow_each_segments_active_level(mpy):
    body = f"""
pins = {GPIO_PINS!r}
def levels():
    return {{p: bench.output(pin) for p, pin in pins.items()}}
at_boot = levels()
tower.show({{"red": "on", "amber": "on"}})
tower.render(0)
some_on = levels()
tower.show({{p: "on" for p in pins}})
tower.render(5)
all_on = levels()
tower.show({{}})
tower.render(10)
emit({{"boot": at_boot, "some_on": some_on, "all_on": all_on, "off": levels()}})
"""
    result = mpy.run(tower_script(GPIO_LIGHT, body))
    off = {"red": 0, "amber": 1, "green": 0, "blue": 0, "white": 1, "buzzer": 0}
    assert result.data["boot"] == off  # nothing lit before the firmware decides
    assert result.data["some_on"] == {**off, "red": 1, "amber": 0}
    assert result.data["all_on"] == {
        "red": 1,
        "amber": 0,
        "green": 1,
        "blue": 1,
        "white": 0,
        "buzzer": 1,
    }
    assert result.data["off"] == off


@pytest.mark.parametrize(("mode", "low_hz", "high_hz"), [("slow", 1.3, 1.7), ("fast", 3.6, 4.4)])
def test_blink_rates_on_an_injected_clock(mpy, mode, low_hz, high_hz):
    body = f"""
tower.show({{"red": {mode!r}, "amber": {mode!r}, "green": "on"}})
rises = 0
lit_ms = 0
last = bench.output(25)
steady = True
for now in range(0, 10000, 5):       # 10 s at the 5 ms grain
    tower.render(now)
    red = bench.output(25)
    rises += red == 1 and last == 0
    lit_ms += 5 * red
    last = red
    steady = steady and bench.output(32) == 1 and bench.output(26) == 1 - red
emit({{"rises": rises, "lit_ms": lit_ms, "steady": steady}})
"""
    result = mpy.run(tower_script(GPIO_LIGHT, body))
    hz = result.data["rises"] / 10
    assert low_hz <= hz <= high_hz
    assert 4500 <= result.data["lit_ms"] <= 5500  # half on, half off
    # steady stays lit; an active-low segment in the same mode blinks in phase
    assert result.data["steady"] is True


def test_the_blink_task_runs_without_blocking_the_loop(mpy):
    body = """
import asyncio
async def main():
    tower.show({"red": "fast"})
    task = asyncio.create_task(tower.run())
    changes, last = 0, bench.output(25)
    for _ in range(150):                  # ~1.5 s of real time; fast blink gives ~12 changes
        await asyncio.sleep_ms(10)
        now = bench.output(25)
        changes += now != last
        last = now
    task.cancel()
    return changes
from vtest import run
run(main())
"""
    result = mpy.run(tower_script(GPIO_LIGHT, body))
    assert result.data >= 3  # generous: this only proves the task blinks while others run


WS2812_LIGHT = {
    "driver": "ws2812",
    "pin": 17,
    "pixels_per_segment": 2,
    "order": ["red", "amber", "green", "blue", "white"],
    "buzzer": {"pin": 18, "active": 1},
    "segments": None,
}


def test_ws2812_segments_get_their_iec_60073_colours(mpy):
    body = """
tower.show({"red": "on", "green": "on", "white": "fast", "buzzer": "on"})
tower.render(0)                            # fast blink is lit in the first half period
lit = bench.pixels[17]
tower.render(130)                          # and dark in the second
dark = bench.pixels[17]
emit({"lit": lit, "dark": dark, "buzzer": bench.output(18)})
"""
    result = mpy.run(tower_script(WS2812_LIGHT, body))
    red, green, white, off = [255, 0, 0], [0, 255, 0], [255, 255, 255], [0, 0, 0]
    assert result.data["lit"] == [red, red, off, off, green, green, off, off, white, white]
    assert result.data["dark"] == [red, red, off, off, green, green, off, off, off, off]
    assert result.data["buzzer"] == 1


def test_ws2812_order_places_segments_top_to_bottom_on_the_strip(mpy):
    light = {**WS2812_LIGHT, "pixels_per_segment": 1, "order": ["blue", "amber", "red"]}
    body = """
tower.show({"amber": "on", "blue": "on", "green": "on"})   # green is not on this tower
tower.render(0)
emit(bench.pixels[17])
"""
    result = mpy.run(tower_script(light, body))
    assert result.data == [[0, 0, 255], [255, 110, 0], [0, 0, 0]]


def test_config_error_pattern_on_a_tower_from_a_refused_config(mpy):
    light = {k: v for k, v in GPIO_LIGHT.items() if v is not None}  # as written to flash
    bad = {"site": "P", "line": "L1", "station": "S1", "light": light}  # no broker
    (mpy.flash / "config.json").write_text(json.dumps(bad))
    result = mpy.run(
        """
from andon import config
from andon.light import Tower, compose
from vdevices import bench
from vtest import emit
try:
    config.load()
    refused = None
except config.ConfigError as e:
    refused = str(e)
tower = Tower(config.light_only())
tower.show(compose({"config_error": True}))
seen = []
for now in (0, 400):
    tower.render(now)
    seen.append([bench.output(p) for p in (25, 26, 32, 33, 13, 14)])
emit({"refused": refused, "seen": seen})
"""
    )
    assert result.data["refused"] == "broker: missing"
    # every segment blinks slowly together (amber and white are active-low); buzzer silent
    assert result.data["seen"] == [[1, 0, 1, 1, 0, 0], [0, 1, 0, 0, 1, 0]]
