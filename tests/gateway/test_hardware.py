"""Hardware profiles: the shipped ones pass, and every chip rule is refused with pin and rule."""

import copy
import json

import pytest

from andon.maint.hardware import (
    CHIPS,
    PROFILES_DIR,
    PinRuleError,
    Profile,
    ProfileError,
    load_profile,
    profile_data,
    profile_names,
)

ESP32 = "esp32-devkitc"
S3 = "esp32-s3-devkitc-1"
S3WS = "esp32-s3-ws2812"  # extends S3 with a WS2812 tower


def _raw(name: str) -> dict:
    return profile_data(name, PROFILES_DIR)


def _variant(name: str, changes: dict) -> Profile:
    """The shipped profile with some values replaced, addressed by dotted paths."""
    data = copy.deepcopy(_raw(name))
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[leaf] = value
    return Profile.model_validate(data)


def test_both_boards_have_a_profile_that_passes_its_chip_rules():
    assert {ESP32, S3, S3WS} <= set(profile_names())
    for name in (ESP32, S3, S3WS):
        profile = load_profile(name)
        assert profile.name == name
        assert {"cord", "call_maintenance", "call_quality", "call_material", "ack", "cycle"} == set(
            profile.inputs
        )
        assert profile.rfid and len(profile.rfid.readers) == 2
        assert profile.supervised_cord and profile.status_led
    assert load_profile(ESP32).light.driver == load_profile(S3).light.driver == "gpio"


def test_a_profile_extends_another_and_replaces_only_the_keys_it_sets():
    base, ws = load_profile(S3), load_profile(S3WS)
    assert ws.light.driver == "ws2812" and ws.light.pin == 17
    assert (ws.chip, ws.psram, ws.inputs, ws.rfid) == (
        base.chip,
        base.psram,
        base.inputs,
        base.rfid,
    )


def test_outputs_on_strapping_pins_pass_only_with_the_reason_written_in_the_profile():
    notes = load_profile(ESP32).check()
    assert any(
        n.startswith("GPIO5 (rfid.readers[0].cs): strapping pin, must be high")
        and n.endswith(
            "safe here: MFRC522 NSS (chip select) is a high-impedance input: "
            "the ESP32's own pull-up holds it high"
        )
        for n in notes
    )
    assert any(n.startswith("GPIO2 (status_led): strapping pin") for n in notes)
    # A reason written for one pin covers that pin only.
    with pytest.raises(PinRuleError) as refused:
        _variant(ESP32, {"light.segments.red.pin": 12}).check()
    assert refused.value.violations == [
        "GPIO12 (light.red): strapping pin, must be low at reset (high selects 1.8 V flash: the "
        "module does not boot): what it drives (a relay board's input, an active-low channel) "
        "can pull it the other way at reset and stop the boot; use another pin, or say in the "
        'profile\'s [strapping] table why it is safe (12 = "...")'
    ]


def test_a_module_that_does_not_match_the_chip_or_psram_is_refused():
    with pytest.raises(ValueError, match="module esp32-wrover-e is an esp32 with psram 'quad'"):
        _variant(ESP32, {"module": "esp32-wrover-e"})
    with pytest.raises(ValueError, match="module esp32-wroom-32e is an esp32"):
        _variant(S3, {"module": "esp32-wroom-32e"})


REFUSED = [
    # ESP32
    (ESP32, {"light.segments.red.pin": 34}, "GPIO34 (light.red): input-only pin"),
    (ESP32, {"inputs.ack.pin": 35}, "GPIO35 (inputs.ack): input-only pin (GPIO34-39) has no"),
    (ESP32, {"inputs.cycle.pin": 6}, "GPIO6 (inputs.cycle): reserved, wired to the module's SPI"),
    (ESP32, {"light.buzzer.pin": 11}, "GPIO11 (light.buzzer): reserved, wired to"),
    (ESP32, {"inputs.ack.pin": 1}, "GPIO1 (inputs.ack): reserved, UART0 TX/RX"),
    (ESP32, {"inputs.ack.pin": 0}, "GPIO0 (inputs.ack): strapping pin, must be high at reset"),
    (ESP32, {"inputs.ack.pin": 2}, "GPIO2 (inputs.ack): strapping pin"),
    (ESP32, {"inputs.cycle.pin": 5}, "GPIO5 (inputs.cycle): strapping pin"),
    (ESP32, {"inputs.ack.pin": 12}, "GPIO12 (inputs.ack): strapping pin, must be low at reset"),
    (ESP32, {"inputs.ack.pin": 15}, "GPIO15 (inputs.ack): strapping pin"),
    (ESP32, {"rfid.spi.miso": 12}, "GPIO12 (rfid.spi.miso): strapping pin"),
    (ESP32, {"supervised_cord.adc": 25}, "GPIO25 (supervised_cord): ADC2 pin, unreadable"),
    (ESP32, {"supervised_cord.adc": 23}, "GPIO23 (supervised_cord): not an ADC pin"),
    (ESP32, {"inputs.cycle.pin": 20}, "GPIO20 (inputs.cycle): does not exist on the ESP32"),
    (ESP32, {"light.segments.blue.pin": 40}, "GPIO40 (light.blue): does not exist"),
    (ESP32, {"inputs.cycle.pin": 21}, "GPIO21: used twice, by inputs.ack and inputs.cycle"),
    (ESP32, {"status_led": 27}, "GPIO27: used twice, by rfid.readers[0].rst and"),
    (
        ESP32,
        {"module": "esp32-wrover-e", "psram": "quad"},
        "GPIO16 (inputs.call_maintenance): reserved, used by the PSRAM",
    ),
    # modules and development boards
    (ESP32, {"light.segments.red.pin": 37}, "GPIO37 (light.red): reserved, not broken out"),
    (ESP32, {"inputs.call_material.pin": 38}, "GPIO38 (inputs.call_material): reserved, not"),
    (S3, {"inputs.ack.pin": 38}, "GPIO38 (inputs.ack): reserved, the DevKitC-1's own RGB LED"),
    (S3, {"inputs.ack.pin": 48}, "GPIO48 (inputs.ack): reserved, the DevKitC-1's own RGB LED"),
    (S3, {"inputs.ack.pin": 33}, "GPIO33 (inputs.ack): reserved, not broken out by the module"),
    # outputs on strapping pins, without a written reason
    (ESP32, {"strapping": {}}, "GPIO5 (rfid.readers[0].cs): strapping pin, must be high at"),
    (ESP32, {"light.segments.red.pin": 12}, "GPIO12 (light.red): strapping pin, must be low"),
    (ESP32, {"light.buzzer.pin": 0}, "GPIO0 (light.buzzer): strapping pin, must be high"),
    (S3, {"light.segments.red.pin": 45}, "GPIO45 (light.red): strapping pin, must be low"),
    (S3, {"light.segments.red.pin": 46}, "GPIO46 (light.red): strapping pin"),
    (ESP32, {"strapping": {"2": "  "}}, "GPIO2 (status_led): strapping pin"),
    # ESP32-S3
    (S3, {"inputs.ack.pin": 30}, "GPIO30 (inputs.ack): reserved, wired to the module's SPI"),
    (S3, {"light.segments.red.pin": 35}, "GPIO35 (light.red): reserved, used by the octal"),
    (S3, {"inputs.cycle.pin": 19}, "GPIO19 (inputs.cycle): reserved, USB D-/D+"),
    (S3, {"status_led": 43}, "GPIO43 (status_led): reserved, UART0 TX/RX"),
    (S3, {"inputs.ack.pin": 0}, "GPIO0 (inputs.ack): strapping pin"),
    (S3, {"inputs.ack.pin": 3}, "GPIO3 (inputs.ack): strapping pin, selects the JTAG source"),
    (S3, {"inputs.ack.pin": 45}, "GPIO45 (inputs.ack): strapping pin, must be low at reset"),
    (S3, {"inputs.ack.pin": 46}, "GPIO46 (inputs.ack): strapping pin"),
    (S3, {"supervised_cord.adc": 11}, "GPIO11: used twice"),
    (S3, {"supervised_cord.adc": 20, "usb_console": False}, "GPIO20 (supervised_cord): ADC2"),
    (S3, {"supervised_cord.adc": 21}, "GPIO21 (supervised_cord): not an ADC pin"),
    (S3, {"inputs.cycle.pin": 22}, "GPIO22 (inputs.cycle): does not exist on the ESP32-S3"),
    (S3WS, {"light.pin": 36}, "GPIO36 (light.ws2812): reserved, used by the octal PSRAM"),
    (S3, {"inputs.cycle.pin": 49}, "GPIO49 (inputs.cycle): does not exist on the ESP32-S3"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "changes", "message"), REFUSED)
def test_each_broken_chip_rule_is_refused_with_the_pin_and_the_rule(name, changes, message):
    with pytest.raises(PinRuleError) as refused:
        _variant(name, changes).check()
    assert any(v.startswith(message) for v in refused.value.violations), refused.value.violations
    assert message.split(" ")[0] in str(refused.value)


def test_a_refusal_says_which_adc_pins_to_use_instead():
    with pytest.raises(PinRuleError, match=r"supervised inputs go on ADC1 \(GPIO32-39\)"):
        _variant(ESP32, {"supervised_cord.adc": 25}).check()
    with pytest.raises(PinRuleError, match=r"supervised inputs go on ADC1 \(GPIO1-10\)"):
        _variant(S3, {"supervised_cord.adc": 21}).check()


@pytest.mark.parametrize(
    ("name", "changes", "taken_by", "pin"),
    [
        # GPIO35 is free on an N8 module, the octal PSRAM's on an N8R8.
        (
            S3,
            {"light.segments.red.pin": 35, "psram": "none", "module": "esp32-s3-wroom-1-n8"},
            {"psram": "octal", "module": "esp32-s3-wroom-1-n8r8"},
            35,
        ),
        # GPIO37 is the ESP32 chip's, but the WROOM-32E module does not break it out.
        (ESP32, {"inputs.call_material.pin": 39}, {"inputs.call_material.pin": 37}, 37),
        # GPIO19 is free with the console on the UART port, USB D- with the native USB console.
        (S3, {"inputs.cycle.pin": 19, "usb_console": False}, {"usb_console": True}, 19),
        # An input-only pin serves a button with an external pull, not with an internal one.
        (ESP32, {"inputs.call_material.pin": 39}, {"inputs.call_material.pull": "up"}, 39),
    ],
)
def test_a_pin_is_refused_only_where_the_board_takes_it(name, changes, taken_by, pin):
    _variant(name, changes).check()
    with pytest.raises(PinRuleError, match=f"GPIO{pin} "):
        _variant(name, changes | taken_by).check()


def test_a_cord_wired_normally_open_is_refused():
    with pytest.raises(ValueError, match=r"inputs\.cord: a cord must be fail-safe"):
        _variant(ESP32, {"inputs.cord.active": 0})


def test_a_profile_file_that_breaks_the_rules_is_refused_at_load(tmp_path):
    text = (PROFILES_DIR / f"{ESP32}.toml").read_text().replace("adc = 36", "adc = 26")
    (tmp_path / f"{ESP32}.toml").write_text(text)
    with pytest.raises(PinRuleError, match=r"GPIO26 \(supervised_cord\): ADC2 pin"):
        load_profile(ESP32, tmp_path)


def test_unknown_or_malformed_profiles_get_a_clear_error(tmp_path):
    with pytest.raises(ProfileError, match=r"unknown hardware profile 'esp8266'.*esp32-devkitc"):
        load_profile("esp8266")
    (tmp_path / "bad.toml").write_text("name = ")
    with pytest.raises(ProfileError, match=r"bad\.toml: not valid TOML"):
        load_profile("bad", tmp_path)
    (tmp_path / "x.toml").write_text('name = "x"\ntitle = "x"\nchip = "esp8266"\n[inputs]\n')
    with pytest.raises(ProfileError, match=r"x\.toml: chip: Input should be 'esp32' or 'esp32s3'"):
        load_profile("x", tmp_path)
    (tmp_path / "a.toml").write_text((PROFILES_DIR / f"{ESP32}.toml").read_text())
    with pytest.raises(ProfileError, match="names itself 'esp32-devkitc', not 'a'"):
        load_profile("a", tmp_path)
    (tmp_path / "b.toml").write_text('extends = "c"\n')
    (tmp_path / "c.toml").write_text('extends = "b"\n')
    with pytest.raises(ProfileError, match="extends itself through b -> c -> b"):
        load_profile("b", tmp_path)


def _wiring_table() -> dict[str, dict[str, int]]:
    """The pin table of hardware/wiring.md: profile -> profile key -> GPIO."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in (PROFILES_DIR.parent / "wiring.md").read_text().splitlines()
        if line.startswith("| ")
    ]
    header = next(row for row in rows if row[1] == "profile key")
    profiles = [name.strip("`") for name in header[2:-1]]
    table: dict[str, dict[str, int]] = {name: {} for name in profiles}
    for row in rows:
        if row[0] == header[0] or not row[1].startswith("`"):
            continue
        for name, cell in zip(profiles, row[2:-1], strict=True):
            if cell != "—":
                table[name][row[1].strip("`")] = int(cell.removeprefix("GPIO"))
    return table


def test_the_wiring_guide_pin_table_is_the_profiles():
    table = _wiring_table()
    assert set(table) == {ESP32, S3, S3WS}
    for name, pins in table.items():
        assert pins == {use.what: use.pin for use in load_profile(name).pin_uses()}, name


def test_the_board_config_example_uses_its_profiles_pins():
    # docs/board-config.md's example names its profile: each pin it shares with the profile is
    # the profile's (the wiring guide's table is checked against the profiles above).
    text = (PROFILES_DIR.parent.parent / "docs" / "board-config.md").read_text()
    example = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])
    profile = load_profile(example["profile"])
    light = example["light"]
    assert {seg: out["pin"] for seg, out in light["segments"].items()} == {
        seg: out.pin for seg, out in profile.light.segments.items()
    }
    assert light["buzzer"]["pin"] == profile.light.buzzer.pin
    assert example["status_led"] == profile.status_led
    spi = example["rfid"]["spi"]
    assert (spi["id"], spi["sck"], spi["mosi"], spi["miso"]) == (
        profile.rfid.spi.id,
        profile.rfid.spi.sck,
        profile.rfid.spi.mosi,
        profile.rfid.spi.miso,
    )
    assert [(r["cs"], r["rst"]) for r in example["rfid"]["readers"]] == [
        (slot.cs, slot.rst) for slot in profile.rfid.readers
    ]


CHIP_TABLES = """
from andon.config import CHIPS
from vdevices import CHIP_PINS
from vtest import emit
emit({"firmware": {n: [sorted(s) for s in t] for n, t in CHIPS.items()},
      "virtual": {n: [sorted(s) for s in t] for n, t in CHIP_PINS.items()}})
"""


def test_the_firmware_and_the_virtual_chip_know_each_chips_pins_as_the_profiles_do(mpy):
    # Three tables of one fact: the board's own check, the virtual chip, and the profiles'.
    tables = mpy.run(CHIP_TABLES).data  # read in MicroPython, where both modules run
    firmware = {n: [set(s) for s in t] for n, t in tables["firmware"].items()}
    virtual = {n: [set(s) for s in t] for n, t in tables["virtual"].items()}
    assert set(firmware) == set(virtual) == set(CHIPS)
    for name, chip in CHIPS.items():
        gpios, input_only, flash = firmware[name]
        assert (gpios, input_only) == (set(chip.gpios), set(chip.input_only)), name
        assert virtual[name] == [gpios, input_only], name
        assert flash == {pin for pin, why in chip.reserved.items() if "SPI flash" in why}, name
