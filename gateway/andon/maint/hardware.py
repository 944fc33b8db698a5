"""Board hardware profiles (hardware/profiles/*.toml) and the pin rules of chip, module and board.

A profile names the pin that serves each function on one kind of board. A profile and a
board's config.json both reduce to a list of `PinUse`s, checked here against the rules of the
chip, of the module on the board (pins it does not break out or keeps for its PSRAM) and of the
development board (an on-board LED): every broken rule is refused with the pin and the rule. An
output on a strapping pin (a relay board's input, an active-low channel, a chip select) can pull
it the wrong way at reset and stop the boot: it is refused unless the profile's `[strapping]`
table gives the reason it is safe, and then noted with the level the chip needs there.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from andon.contract import Name
from andon.firmware_build import SOURCES

PROFILES_DIR = SOURCES / "hardware" / "profiles"

Direction = Literal["in", "out", "adc"]
Pull = Literal["up", "down", "none"]
Level = Literal[0, 1]
Gpio = Annotated[int, Field(ge=0, strict=True)]
InputRole = Literal["cord", "call_maintenance", "call_quality", "call_material", "ack", "cycle"]
Segment = Literal["red", "amber", "green", "blue", "white"]
ReaderRole = Literal["post", "receive", "badge"]


def _span(first: int, last: int) -> frozenset[int]:
    return frozenset(range(first, last + 1))


@dataclass(frozen=True)
class Chip:
    """One chip family's pin facts, as its datasheet and ESP-IDF's GPIO reference give them."""

    name: str
    gpios: frozenset[int]
    reserved: dict[int, str]  # never usable on any board of this chip
    psram: dict[str, dict[int, str]]  # further pins taken by the module's PSRAM, by PSRAM kind
    usb: dict[int, str]  # taken when the board's console is the chip's native USB
    input_only: frozenset[int]  # no output driver and no internal pull resistors
    strapping: dict[int, str]  # pin -> the level the chip samples there at reset
    adc1: frozenset[int]
    adc2: frozenset[int]


def _reserve(pins: Iterable[int], why: str) -> dict[int, str]:
    return dict.fromkeys(pins, why)


# ESP32 (ESP32 datasheet §2.2 and table "Strapping Pins"; ESP-IDF "GPIO & RTC GPIO", esp32):
# 34 GPIOs 0-19, 21-23, 25-27, 32-39; 6-11 (and 16-17 on WROVER PSRAM modules) are SPI0/1;
# 34-39 are input-only without software pull-up/down; ADC1 = 32-39, ADC2 = 0, 2, 4, 12-15,
# 25-27, which the Wi-Fi driver owns while Wi-Fi is started.
ESP32 = Chip(
    name="ESP32",
    gpios=_span(0, 19) | _span(21, 23) | _span(25, 27) | _span(32, 39),
    reserved=_reserve(range(6, 12), "wired to the module's SPI flash")
    | _reserve((1, 3), "UART0 TX/RX: the console that mpremote flashes through"),
    psram={
        "quad": _reserve((16, 17), "used by the PSRAM of WROVER modules"),
        "octal": _reserve((16, 17), "used by the PSRAM of WROVER modules"),
    },
    usb={},
    input_only=_span(34, 39),
    strapping={
        0: "must be high at reset (low enters the download mode)",
        2: "must be low or floating at reset to enter the download mode",
        5: "must be high at reset (SDIO slave timing)",
        12: "must be low at reset (high selects 1.8 V flash: the module does not boot)",
        15: "must be high at reset (low silences the ROM boot log)",
    },
    adc1=_span(32, 39),
    adc2=frozenset({0, 2, 4, 12, 13, 14, 15, 25, 26, 27}),
)

# ESP32-S3 (ESP32-S3 datasheet §2.3 "IO Pins" and §3 "Boot Configurations"; ESP-IDF "GPIO",
# esp32s3): GPIO 0-21 and 26-48; 26-32 are the SPI flash/PSRAM bus, 33-37 too on modules with
# octal PSRAM (N8R8, N16R8...); 19/20 are USB D-/D+; strapping pins 0, 3, 45, 46; ADC1 = 1-10,
# ADC2 = 11-20 (not readable while Wi-Fi is on). UART0 (43/44) is the DevKitC-1's UART port.
ESP32S3 = Chip(
    name="ESP32-S3",
    gpios=_span(0, 21) | _span(26, 48),
    reserved=_reserve(range(26, 33), "wired to the module's SPI flash/PSRAM")
    | _reserve((43, 44), "UART0 TX/RX: the console that mpremote flashes through"),
    psram={"octal": _reserve(range(33, 38), "used by the octal PSRAM (e.g. N8R8 modules)")},
    usb=_reserve((19, 20), "USB D-/D+ of the native USB console"),
    input_only=frozenset(),
    strapping={
        0: "must be high at reset (low enters the download mode)",
        3: "selects the JTAG source at reset; keep it floating",
        45: "must be low at reset for 3.3 V flash (VDD_SPI voltage)",
        46: "must be low at reset to enter the download mode (and sets the ROM log)",
    },
    adc1=_span(1, 10),
    adc2=_span(11, 20),
)

CHIPS = {"esp32": ESP32, "esp32s3": ESP32S3}


@dataclass(frozen=True)
class Module:
    """A module's pin facts beyond its chip's (the module's datasheet, "Pin Definitions")."""

    title: str
    chip: str  # a key of CHIPS
    psram: Literal["none", "quad", "octal"]
    absent: dict[int, str]  # chip GPIOs the module does not break out


# The PSRAM's pins are the chip's facts (Chip.psram); a module says which PSRAM it has. ESP32-WROOM-
# 32E/WROVER-E do not break out the ESP32's GPIO37/38; the WROVER-E's quad PSRAM takes GPIO16/17.
# ESP32-S3-WROOM-1 does not break out GPIO33/34; on N8R8 (octal PSRAM) GPIO35-37 connect to the
# PSRAM and are not available for other uses (ESP32-S3-DevKitC-1 user guide).
_NOT_BROKEN_OUT = "not broken out by the module"
MODULES = {
    "esp32-wroom-32e": Module(
        "ESP32-WROOM-32E", "esp32", "none", _reserve((37, 38), _NOT_BROKEN_OUT)
    ),
    "esp32-wrover-e": Module(
        "ESP32-WROVER-E", "esp32", "quad", _reserve((37, 38), _NOT_BROKEN_OUT)
    ),
    "esp32-s3-wroom-1-n8": Module(
        "ESP32-S3-WROOM-1-N8", "esp32s3", "none", _reserve((33, 34), _NOT_BROKEN_OUT)
    ),
    "esp32-s3-wroom-1-n8r8": Module(
        "ESP32-S3-WROOM-1-N8R8", "esp32s3", "octal", _reserve((33, 34), _NOT_BROKEN_OUT)
    ),
}

ModuleName = Literal[
    "esp32-wroom-32e", "esp32-wrover-e", "esp32-s3-wroom-1-n8", "esp32-s3-wroom-1-n8r8"
]
DevkitName = Literal["esp32-devkitc-v4", "esp32-s3-devkitc-1"]

# What a development board wires to a pin itself, which a station must leave alone.
DEVKITS = {
    "esp32-devkitc-v4": {},
    "esp32-s3-devkitc-1": _reserve(
        (38, 48), "the DevKitC-1's own RGB LED (GPIO38 on v1.1, GPIO48 on v1.0): not a station pin"
    ),
}


@dataclass(frozen=True)
class PinUse:
    """One function a pin serves. `shared` uses (a common RST line) may share a pin."""

    pin: int
    what: str
    direction: Direction
    pull: Pull = "none"
    shared: bool = False


@dataclass(frozen=True)
class Board:
    """What the rules depend on: the chip and what its module and console take."""

    chip: Chip
    psram: Literal["none", "quad", "octal"] = "none"
    usb_console: bool = False
    taken: dict[int, str] = field(default_factory=dict)  # by the module and the dev board
    strapping_ok: dict[int, str] = field(default_factory=dict)  # strapping pin -> why safe

    def reserved(self) -> dict[int, str]:
        taken = dict(self.chip.reserved) | self.chip.psram.get(self.psram, {}) | self.taken
        return taken | (self.chip.usb if self.usb_console else {})


class PinRuleError(ValueError):
    """Pins that break their chip's rules; each message names the pin and the rule."""

    def __init__(self, source: str, violations: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(violations))
        self.violations = violations


Rule = Callable[[Board, PinUse], str | None]


def _reserved(board: Board, use: PinUse) -> str | None:
    why = board.reserved().get(use.pin)
    return f"reserved, {why}: never use it" if why else None


def _no_output(board: Board, use: PinUse) -> str | None:
    if use.pin in board.chip.input_only and use.direction == "out":
        return "input-only pin (GPIO34-39): it cannot drive an output"
    return None


def _no_internal_pull(board: Board, use: PinUse) -> str | None:
    if use.pin in board.chip.input_only and use.pull != "none":
        return (
            "input-only pin (GPIO34-39) has no internal pull resistor: "
            "set pull none and fit an external one"
        )
    return None


def _strapping_input(board: Board, use: PinUse) -> str | None:
    level = board.chip.strapping.get(use.pin)
    if level and use.direction != "out":
        return f"strapping pin, {level}: a switch or sensor wired here can stop the boot"
    return None


def _strapping_output(board: Board, use: PinUse) -> str | None:
    level = board.chip.strapping.get(use.pin)
    if level and use.direction == "out" and not board.strapping_ok.get(use.pin, "").strip():
        return (
            f"strapping pin, {level}: what it drives (a relay board's input, an active-low "
            f"channel) can pull it the other way at reset and stop the boot; use another pin, "
            f'or say in the profile\'s [strapping] table why it is safe ({use.pin} = "...")'
        )
    return None


def _adc1_only(board: Board, use: PinUse) -> str | None:
    if use.direction != "adc" or use.pin in board.chip.adc1:
        return None
    first, last = min(board.chip.adc1), max(board.chip.adc1)
    if use.pin in board.chip.adc2:
        return (
            f"ADC2 pin, unreadable while Wi-Fi is on: "
            f"supervised inputs go on ADC1 (GPIO{first}-{last})"
        )
    return f"not an ADC pin: supervised inputs go on ADC1 (GPIO{first}-{last})"


RULES: tuple[Rule, ...] = (
    _reserved,
    _no_output,
    _no_internal_pull,
    _strapping_input,
    _strapping_output,
    _adc1_only,
)


def _violations_of(board: Board, use: PinUse) -> list[str]:
    where = f"GPIO{use.pin} ({use.what})"
    if use.pin not in board.chip.gpios:
        return [f"{where}: does not exist on the {board.chip.name}"]
    return [f"{where}: {broken}" for rule in RULES if (broken := rule(board, use))]


def _clashes(uses: list[PinUse]) -> list[str]:
    by_pin: dict[int, list[PinUse]] = {}
    for use in uses:
        by_pin.setdefault(use.pin, []).append(use)
    return [
        f"GPIO{pin}: used twice, by " + " and ".join(u.what for u in same)
        for pin, same in sorted(by_pin.items())
        if len(same) > 1 and not all(u.shared for u in same)
    ]


def check_pins(board: Board, uses: list[PinUse], source: str) -> list[str]:
    """Refuse (PinRuleError) any use that breaks a rule; return notes on strapping outputs."""
    broken = [v for use in uses for v in _violations_of(board, use)] + _clashes(uses)
    if broken:
        raise PinRuleError(source, broken)
    return [
        f"GPIO{u.pin} ({u.what}): strapping pin, {board.chip.strapping[u.pin]}; "
        f"safe here: {board.strapping_ok[u.pin]}"
        for u in uses
        if u.pin in board.chip.strapping
    ]


# --- the parts a profile and a config.json have in common -------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DigitalInput(Strict):
    pin: Gpio
    pull: Pull = "up"
    active: Level


class Output(Strict):
    pin: Gpio
    active: Level = 1


class SpiBus(Strict):
    id: Annotated[int, Field(ge=1, le=2)]
    sck: Gpio
    mosi: Gpio
    miso: Gpio
    baudrate: Annotated[int, Field(ge=100_000, le=10_000_000)] = 1_000_000

    def pin_uses(self) -> list[PinUse]:
        return [
            PinUse(self.sck, "rfid.spi.sck", "out"),
            PinUse(self.mosi, "rfid.spi.mosi", "out"),
            PinUse(self.miso, "rfid.spi.miso", "in"),
        ]


class GpioLight(Strict):
    driver: Literal["gpio"] = "gpio"
    segments: dict[Segment, Output]
    buzzer: Output | None = None

    def pin_uses(self) -> list[PinUse]:
        uses = [PinUse(o.pin, f"light.{seg}", "out") for seg, o in self.segments.items()]
        return uses + ([PinUse(self.buzzer.pin, "light.buzzer", "out")] if self.buzzer else [])


class Ws2812Light(Strict):
    driver: Literal["ws2812"] = "ws2812"
    pin: Gpio
    pixels_per_segment: Annotated[int, Field(ge=1, le=64)] = 8
    order: list[Segment] = Field(min_length=1, max_length=5)
    buzzer: Output | None = None

    def pin_uses(self) -> list[PinUse]:
        uses = [PinUse(self.pin, "light.ws2812", "out")]
        return uses + ([PinUse(self.buzzer.pin, "light.buzzer", "out")] if self.buzzer else [])


Light = Annotated[GpioLight | Ws2812Light, Field(discriminator="driver")]


def require_fail_safe_cord(role: str, pull: str, active: int, where: str) -> None:
    """A cord is wired normally-closed: its pulled level must be what an open circuit reads."""
    if role == "cord" and (pull, active) not in (("up", 1), ("down", 0)):
        raise ValueError(
            f"{where}: a cord must be fail-safe (normally-closed): "
            "pull up with active 1, or pull down with active 0"
        )


# --- profiles --------------------------------------------------------------------------


class ReaderSlot(Strict):
    cs: Gpio
    rst: Gpio | None = None


class RfidPins(Strict):
    spi: SpiBus
    readers: list[ReaderSlot] = Field(min_length=1, max_length=2)


class SupervisedInput(Strict):
    adc: Gpio


class Profile(Strict):
    name: Name
    title: str
    chip: Literal["esp32", "esp32s3"]
    module: ModuleName
    devkit: DevkitName | None = None
    psram: Literal["none", "quad", "octal"] = "none"
    usb_console: bool = False
    strapping: dict[int, str] = Field(default_factory=dict)  # strapping output -> why it is safe
    inputs: dict[InputRole, DigitalInput]
    supervised_cord: SupervisedInput | None = None
    rfid: RfidPins | None = None
    light: Light
    status_led: Gpio | None = None

    @model_validator(mode="after")
    def _fail_safe_cord(self) -> Profile:
        for role, spec in self.inputs.items():
            require_fail_safe_cord(role, spec.pull, spec.active, f"inputs.{role}")
        return self

    @model_validator(mode="after")
    def _module_fits(self) -> Profile:
        module = MODULES[self.module]
        if (module.chip, module.psram) != (self.chip, self.psram):
            raise ValueError(
                f"module {self.module} is an {module.chip} with psram {module.psram!r}, "
                f"not an {self.chip} with psram {self.psram!r}"
            )
        return self

    @property
    def board(self) -> Board:
        taken = MODULES[self.module].absent | DEVKITS.get(self.devkit or "", {})
        return Board(CHIPS[self.chip], self.psram, self.usb_console, taken, self.strapping)

    def pin_uses(self) -> list[PinUse]:
        """Every pin the profile assigns."""
        uses = [PinUse(s.pin, f"inputs.{r}", "in", s.pull) for r, s in self.inputs.items()]
        if self.supervised_cord:
            uses.append(PinUse(self.supervised_cord.adc, "supervised_cord", "adc"))
        return uses + output_pin_uses(self.rfid, self.light, self.status_led)

    def check(self) -> list[str]:
        """Check the pins against the chip's rules; return the notes on strapping outputs."""
        return check_pins(self.board, self.pin_uses(), f"profile {self.name}")


class ProfileError(ValueError):
    """A profile that is missing or not valid."""


def parse_profile(data: dict, source: str) -> Profile:
    """Validate a profile's data and check its pins; raises ProfileError or PinRuleError."""
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ProfileError(f"{source}: {errs}") from None
    profile.check()
    return profile


def profile_names(profiles_dir: Path = PROFILES_DIR) -> list[str]:
    return sorted(p.stem for p in profiles_dir.glob("*.toml"))


def profile_data(name: str, profiles_dir: Path, seen: tuple[str, ...] = ()) -> dict:
    """A profile file's data; `extends = "base"` takes the base's keys the file does not set."""
    path = profiles_dir / f"{name}.toml"
    if name in seen:
        raise ProfileError(f"{path}: extends itself through {' -> '.join((*seen, name))}")
    if not path.is_file():
        known = ", ".join(profile_names(profiles_dir)) or "none"
        raise ProfileError(f"unknown hardware profile {name!r} (known: {known})")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    base = data.pop("extends", None)
    if base is None:
        return data
    return profile_data(str(base), profiles_dir, (*seen, name)) | data


def load_profile(name: str, profiles_dir: Path = PROFILES_DIR) -> Profile:
    """The named profile from hardware/profiles/, validated against its chip's rules."""
    profile = parse_profile(profile_data(name, profiles_dir), str(profiles_dir / f"{name}.toml"))
    if profile.name != name:
        raise ProfileError(f"{name}.toml: names itself {profile.name!r}, not {name!r}")
    return profile


def output_pin_uses(rfid, light: Light, status_led: int | None) -> list[PinUse]:
    """The RFID bus and chip selects, the light and the status LED: a profile and a
    board's config.json assign them alike."""
    uses: list[PinUse] = []
    if rfid:
        uses += rfid.spi.pin_uses()
        for i, reader in enumerate(rfid.readers):
            uses.append(PinUse(reader.cs, f"rfid.readers[{i}].cs", "out"))
            if reader.rst is not None:
                uses.append(PinUse(reader.rst, f"rfid.readers[{i}].rst", "out", shared=True))
    uses += light.pin_uses()
    if status_led is not None:
        uses.append(PinUse(status_led, "status_led", "out"))
    return uses
