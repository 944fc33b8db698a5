"""config.json validation (docs/board-config.md), run inside the MicroPython VM."""

import copy
import json
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "board-config.md"


def doc_example() -> dict:
    """The example config.json of docs/board-config.md: the docs and the firmware agree."""
    block = re.search(r"```json\n(.*?)```", DOC.read_text(), re.S)
    assert block, "docs/board-config.md lost its example config.json"
    return json.loads(block.group(1))


MINIMAL = {
    "site": "PLANT1",
    "line": "L1",
    "station": "S03",
    "broker": {"host": "10.20.0.5"},
    "light": {"driver": "ws2812", "pin": 5},
}


def load_all(mpy, files: dict[str, str]) -> dict:
    """Write each text to the board's flash and return what config.load makes of it:
    the normalized dict, or {"error": message}."""
    for name, text in files.items():
        (mpy.flash / name).write_text(text)
    names = [*sorted(files), "absent.json"]
    result = mpy.run(
        f"""
from andon import config
from vtest import emit
out = {{}}
for name in {names!r}:
    try:
        out[name] = config.load(name)
    except config.ConfigError as e:
        out[name] = {{"error": str(e)}}
emit(out)
"""
    )
    return result.data


def with_change(change) -> str:
    cfg = copy.deepcopy(doc_example())
    change(cfg)
    return json.dumps(cfg)


def test_the_documented_example_is_valid_and_gets_its_defaults(mpy):
    got = load_all(mpy, {"config.json": json.dumps(doc_example())})["config.json"]
    assert "error" not in got, got
    inputs = {i["name"]: i for i in got["inputs"]}
    assert inputs["cord"]["debounce_ms"] == 20
    assert inputs["ack"]["debounce_ms"] == 30  # given, kept
    assert inputs["cord2"] == {
        "name": "cord2",
        "role": "cord",
        "pin": None,
        "adc": 36,
        "supervised": True,
        "pull": None,
        "active": None,
        "debounce_ms": 20,
    }
    assert got["ntp"] == "10.20.0.1"
    assert got["board"] == "246F28A1B2C3"
    assert [r["holdoff_ms"] for r in got["rfid"]["readers"]] == [1500, 1500]
    assert got["outbox"] == {"capacity": 400}
    assert got["light"]["segments"]["red"] == {"pin": 25, "active": 1}


def test_a_minimal_config_is_filled_with_defaults(mpy):
    tls = copy.deepcopy(MINIMAL)
    tls["broker"]["tls"] = True
    tls["ntp"] = "10.20.0.1"  # a TLS board needs the time
    got = load_all(mpy, {"min.json": json.dumps(MINIMAL), "tls.json": json.dumps(tls)})
    cfg = got["min.json"]
    # No board id given: the hex of the (virtual) chip's unique id.
    assert cfg["board"] == "246F28000001"
    assert cfg["broker"] == {
        "host": "10.20.0.5",
        "port": 1883,
        "username": None,
        "password": None,
        "tls": False,
        "server_name": None,
        "keepalive": 30,
    }
    assert cfg["ntp"] is None  # none: the gateway dates events by their age
    assert got["tls.json"]["broker"]["port"] == 8883
    assert cfg["inputs"] == []
    assert cfg["rfid"] is None
    assert cfg["wifi"] is None
    assert cfg["status_led"] is None
    assert cfg["outbox"] == {"capacity": 400}
    assert cfg["light"] == {
        "driver": "ws2812",
        "pin": 5,
        "pixels_per_segment": 1,
        "order": ["red", "amber", "green", "blue", "white"],
        "segments": None,
        "buzzer": None,
    }


def _set(path: str, value):
    """A change that sets one key, addressed like the error messages (`inputs[2].pin`)."""

    def change(cfg):
        *parents, leaf = re.findall(r"[^.\[\]]+", path)
        node = cfg
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is DELETE:
            del node[int(leaf) if isinstance(node, list) else leaf]
        else:
            node[int(leaf) if isinstance(node, list) else leaf] = value

    return change


DELETE = object()

BAD = {
    "pin_not_int": (_set("inputs[2].pin", "17"), "inputs[2].pin: must be an integer"),
    "pin_is_bool": (_set("inputs[2].pin", True), "inputs[2].pin: must be an integer"),
    "pin_out_of_range": (_set("status_led", 99), "status_led: must be from 0 to 48"),
    "no_broker_host": (_set("broker.host", DELETE), "broker.host: missing"),
    "broker_by_name": (
        _set("broker.host", "mqtt.plant.local"),
        "broker.host: must be an IPv4 address (a name lookup would block the board)",
    ),
    "broker_bad_octet": (_set("broker.host", "10.20.0.256"), "broker.host: must be an IPv4"),
    "ntp_by_name": (_set("ntp", "pool.ntp.org"), "ntp: must be an IPv4 address"),
    "ntp_bad_port": (_set("ntp", "10.20.0.1:0"), "ntp: port must be from 1 to 65535"),
    "no_station": (_set("station", DELETE), "station: missing"),
    "bad_site_name": (
        _set("site", "PLANT 1"),
        "site: must be 1-32 characters of A-Z a-z 0-9 _ -",
    ),
    "mqtt_wildcard_in_name": (
        _set("inputs[0].name", "cord/#"),
        "inputs[0].name: must be 1-32 characters of A-Z a-z 0-9 _ -",
    ),
    "name_too_long": (_set("line", "L" * 33), "line: must be 1-32 characters of A-Z a-z 0-9 _ -"),
    "unknown_role": (
        _set("inputs[1].role", "call_safety"),
        "inputs[1].role: must be one of cord, call_maintenance, call_quality, call_material, "
        "ack, cycle",
    ),
    "unknown_key": (_set("inputs[3].debounce", 30), "inputs[3].debounce: unknown key"),
    "cord_normally_open": (
        _set("inputs[0].active", 0),
        "inputs[0]: a cord must be fail-safe (normally closed): with pull up its active level "
        "must be 1",
    ),
    "cord_pull_down_wrong_level": (
        lambda c: c["inputs"][0].update(pull="down", active=1),
        "inputs[0]: a cord must be fail-safe (normally closed): with pull down its active level "
        "must be 0",
    ),
    "cord_floating": (
        _set("inputs[0].pull", "none"),
        "inputs[0]: a cord must be fail-safe (normally closed): it needs pull up or down",
    ),
    "digital_without_active": (_set("inputs[1].active", DELETE), "inputs[1].active: missing"),
    "adc_not_supervised": (
        _set("inputs[5].supervised", False),
        "inputs[5].supervised: must be true for an adc input (end-of-line resistors)",
    ),
    "pin_and_adc": (_set("inputs[5].pin", 39), "inputs[5]: give either pin or adc, not both"),
    "debounce_zero": (_set("inputs[0].debounce_ms", 0), "inputs[0].debounce_ms: must be from 1"),
    "duplicate_input_name": (
        _set("inputs[2].name", "maint"),
        "inputs[2].name: 'maint' is already the name of inputs[1]",
    ),
    "reader_named_like_input": (
        _set("rfid.readers[1].name", "cord"),
        "rfid.readers[1].name: 'cord' is already the name of inputs[0]",
    ),
    "duplicate_pin": (
        _set("light.segments.white.pin", 4),
        "light.segments.white.pin: pin 4 is already used by inputs[0].pin",
    ),
    "reset_pin_shared_with_input": (
        _set("rfid.readers[0].rst", 22),
        "rfid.readers[0].rst: pin 22 is already used by inputs[4].pin",
    ),
    "bad_reader_role": (
        _set("rfid.readers[0].role", "kanban"),
        "rfid.readers[0].role: must be one of post, receive, badge",
    ),
    "inputs_not_list": (_set("inputs", {}), "inputs: must be a list"),
    "broker_not_object": (_set("broker", "10.20.0.5"), "broker: must be an object"),
    "tls_not_bool": (_set("broker.tls", "yes"), "broker.tls: must be true or false"),
    "tls_without_ntp": (
        lambda c: (c["broker"].update(tls=True), c.pop("ntp")),
        "ntp: missing: a TLS broker's certificate is checked against the clock",
    ),
    # MicroPython's ESP32 ports raise on machine.SPI(0): the flash's bus
    "spi_id_0": (_set("rfid.spi.id", 0), "rfid.spi.id: must be from 1 to 2"),
    "unknown_segment": (
        _set("light.segments.yellow", {"pin": 12}),
        "light.segments.yellow: unknown segment (one of red, amber, green, blue, white)",
    ),
    "gpio_light_with_pixels": (
        _set("light.pixels_per_segment", 3),
        "light.pixels_per_segment: not used by driver gpio",
    ),
    "ws2812_without_pin": (
        _set("light.driver", "ws2812"),
        "light.pin: missing (driver ws2812)",
    ),
    "no_light": (_set("light", DELETE), "light: missing"),
    "top_level_list": (lambda c: c.clear(), "site: missing"),
}


def test_bad_configs_are_refused_with_the_key_and_the_fault(mpy):
    files = {f"{name}.json": with_change(change) for name, (change, _) in BAD.items()}
    files["not_json.json"] = '{"site": "PLANT1",'
    files["array.json"] = "[1, 2]"
    got = load_all(mpy, files)
    for name, (_, message) in BAD.items():
        assert "error" in got[f"{name}.json"], f"{name} was accepted"
        assert got[f"{name}.json"]["error"].startswith(message), name
    assert got["not_json.json"]["error"].startswith("not_json.json: not valid JSON")
    assert got["array.json"]["error"] == "config: must be an object"
    assert got["absent.json"]["error"] == "absent.json: missing (cannot read the file)"


def test_ws2812_order_must_name_each_segment_once(mpy):
    twice = {**MINIMAL, "light": {"driver": "ws2812", "pin": 5, "order": ["red", "red"]}}
    empty = {**MINIMAL, "light": {"driver": "ws2812", "pin": 5, "order": []}}
    got = load_all(mpy, {"twice.json": json.dumps(twice), "empty.json": json.dumps(empty)})
    assert got["twice.json"] == {"error": "light.order: must list each segment once"}
    assert got["empty.json"] == {"error": "light.order: must list each segment once"}


def test_a_refused_config_still_yields_its_light_for_the_error_pattern(mpy):
    (mpy.flash / "config.json").write_text(with_change(_set("inputs[2].pin", "17")))
    (mpy.flash / "nolight.json").write_text(with_change(_set("light.driver", "dmx")))
    result = mpy.run(
        """
from andon import config
from vtest import emit
emit([config.light_only("config.json"), config.light_only("nolight.json"),
      config.light_only("absent.json")])
"""
    )
    light, bad, absent = result.data
    assert light["driver"] == "gpio"
    assert light["segments"]["amber"] == {"pin": 26, "active": 1}
    assert bad is None
    assert absent is None


# (change, chip, error or None): what the chip itself refuses, when the firmware knows its chip
CHIP_RULES = {
    "example_on_esp32": (None, "esp32", None),
    "no_such_gpio": (_set("inputs[4].pin", 20), "esp32", "inputs[4].pin: GPIO20 does not exist"),
    "flash_bus": (_set("inputs[4].pin", 7), "esp32", "inputs[4].pin: GPIO7 is wired to the"),
    "output_on_input_only": (
        _set("light.segments.red.pin", 34),
        "esp32",
        "light.segments.red.pin: GPIO34 is input-only: it cannot drive an output",
    ),
    "chip_select_on_input_only": (
        _set("rfid.readers[0].cs", 39),
        "esp32",
        "rfid.readers[0].cs: GPIO39 is input-only",
    ),
    "pull_on_input_only": (
        _set("inputs[4].pin", 35),
        "esp32",
        "inputs[4].pull: GPIO35 has no internal pull resistor",
    ),
    "button_on_input_only_with_external_pull": (
        lambda c: c["inputs"][4].update(pin=35, pull="none"),
        "esp32",
        None,
    ),
    "esp32_pins_on_an_s3": (None, "esp32s3", "inputs[4].pin: GPIO22 does not exist on the"),
    "s3_flash_bus": (
        lambda c: (c.clear(), c.update(copy.deepcopy(MINIMAL), status_led=29)),
        "esp32s3",
        "status_led: GPIO29 is wired to the module's flash",
    ),
    "s3_minimal": (lambda c: (c.clear(), c.update(copy.deepcopy(MINIMAL))), "esp32s3", None),
    "unknown_chip_checks_nothing": (_set("light.segments.red.pin", 34), None, None),
}


def test_pins_the_chip_refuses_are_refused_before_anything_runs(mpy):
    for name, (change, _, _) in CHIP_RULES.items():
        (mpy.flash / f"{name}.json").write_text(with_change(change or (lambda c: None)))
    chips = {name: chip for name, (_, chip, _) in CHIP_RULES.items()}
    got = mpy.run(
        f"""
from andon import config
from vtest import emit
out = {{}}
for name, chip in {chips!r}.items():
    try:
        config.load(name + ".json", chip=chip)
        out[name] = None
    except config.ConfigError as e:
        out[name] = str(e)
emit(out)
"""
    ).data
    for name, (_, _, message) in CHIP_RULES.items():
        if message is None:
            assert got[name] is None, (name, got[name])
        else:
            assert got[name] and got[name].startswith(message), (name, got[name])
