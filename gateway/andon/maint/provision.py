"""Provisioning: every board's config.json, its broker account, and the broker's ACL.

`provision(plant, out)` writes into `out` (mode 0700, every file 0600):

    secrets.json                  the broker passwords; re-runs keep them unless rotated
    boards/<board>/config.json    what `andon flash` writes to each board (docs/board-config.md)
    mosquitto/passwd              Mosquitto password file (PBKDF2-SHA512, `$7$` hashes)
    mosquitto/acl                 each board publishes only under its own station
    mosquitto/andon.conf          the lines that make Mosquitto use both, anonymous refused

Each config.json is built from the plant configuration and the station's hardware profile,
then checked against the chip's pin rules like any board config. Nothing secret is printed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, model_validator

from andon.config import LineConfig, PlantConfig, StationConfig
from andon.contract import (
    GATEWAY_STATUS,
    GATEWAY_STATUSES,
    ROOT,
    Name,
    Station,
    board_subscriptions,
    line_owner_topic,
)
from andon.maint.hardware import (
    PROFILES_DIR,
    Gpio,
    InputRole,
    Level,
    Light,
    PinRuleError,
    PinUse,
    Profile,
    ProfileError,
    Pull,
    ReaderRole,
    SpiBus,
    Strict,
    check_pins,
    load_profile,
    output_pin_uses,
    require_fail_safe_cord,
)

GATEWAY_USER = "andon-gateway"  # the gateway's account when the plant's [broker] names none
PBKDF2_ITERATIONS = 1000  # the passwords are random tokens: iterations only slow each CONNECT
INPUT_NAMES: dict[str, str] = {
    "cord": "cord",
    "call_maintenance": "maint",
    "call_quality": "qual",
    "call_material": "material",
    "ack": "ack",
    "cycle": "cycle",
}
SUPERVISED_CORD_NAME = "cord2"


class ProvisionError(ValueError):
    """The plant cannot be provisioned; one line per station or file at fault."""


# --- the board's config.json (docs/board-config.md) ------------------------------------


class InputEntry(Strict):
    name: Name
    role: InputRole
    pin: Gpio | None = None
    pull: Pull | None = None
    active: Level | None = None
    adc: Gpio | None = None
    supervised: bool | None = None  # true for an adc input, absent for a digital one
    debounce_ms: Annotated[int, Field(ge=1, le=1000)] | None = None

    @model_validator(mode="after")
    def _digital_or_supervised(self) -> InputEntry:
        if self.adc is not None:
            if self.pin is not None or self.supervised is not True:
                raise ValueError(f"{self.name}: an adc input has no pin and is supervised")
        elif self.pin is None or self.pull is None or self.active is None or self.supervised:
            raise ValueError(f"{self.name}: a digital input needs pin, pull and active")
        else:
            require_fail_safe_cord(self.role, self.pull, self.active, f"input {self.name}")
        return self

    def pin_use(self, index: int) -> PinUse:
        where = f"inputs[{index}] {self.name}"
        if self.adc is not None:
            return PinUse(self.adc, where, "adc")
        return PinUse(self.pin, where, "in", self.pull or "none")


class ReaderEntry(Strict):
    name: Name
    role: ReaderRole
    cs: Gpio
    rst: Gpio | None = None
    holdoff_ms: Annotated[int, Field(ge=0, le=60_000)] | None = None


class RfidEntry(Strict):
    spi: SpiBus
    readers: list[ReaderEntry] = Field(min_length=1)


IPV4 = r"^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$"


class BrokerEntry(Strict):
    host: Annotated[str, Field(pattern=IPV4)]  # boards never look a name up
    port: Annotated[int, Field(ge=1, le=65535)]
    username: Name
    password: str
    tls: bool = False
    server_name: str | None = None  # with TLS: the name on the broker's certificate
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30


class WifiEntry(Strict):
    ssid: Annotated[str, Field(min_length=1)]
    password: str = ""


TLS_NEEDS_NTP = (
    "broker.tls needs ntp: a board checks the broker's certificate dates against its clock, "
    "which only NTP sets (andon provision --ntp ADDRESS)"
)


class OutboxEntry(Strict):
    capacity: Annotated[int, Field(ge=10, le=100_000)] = 400


class BoardConfig(Strict):
    """A board's config.json, as `andon provision` writes it and a board reads it."""

    board: Name
    profile: Name
    site: Name
    line: Name
    station: Name
    wifi: WifiEntry | None = None
    broker: BrokerEntry
    ntp: Annotated[str, Field(pattern=IPV4[:-1] + r"(:\d{1,5})?$")] | None = None
    inputs: list[InputEntry] = Field(default_factory=list)
    rfid: RfidEntry | None = None
    light: Light
    status_led: Gpio | None = None
    outbox: OutboxEntry | None = None

    @model_validator(mode="after")
    def _tls_needs_the_time(self) -> BoardConfig:
        # A board's RTC reads 2000-01-01 after power-on: no certificate is valid then, so a TLS
        # board connects only once NTP has set its clock (docs/board-config.md).
        if self.broker.tls and self.ntp is None:
            raise ValueError(TLS_NEEDS_NTP)
        return self

    def pin_uses(self) -> list[PinUse]:
        uses = [entry.pin_use(i) for i, entry in enumerate(self.inputs)]
        return uses + output_pin_uses(self.rfid, self.light, self.status_led)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2) + "\n"


def check_board_config(
    data: dict, source: str, profiles_dir: Path = PROFILES_DIR
) -> tuple[BoardConfig, list[str]]:
    """Validate a config.json's data and check its pins against its profile's chip rules.

    Returns the config and the notes on strapping outputs; raises ProvisionError (schema),
    ProfileError (unknown profile) or PinRuleError (a pin that breaks its chip's rules).
    """
    try:
        config = BoardConfig.model_validate(data)
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ProvisionError(f"{source}: {errs}") from None
    board = load_profile(config.profile, profiles_dir).board
    return config, check_pins(board, config.pin_uses(), source)


# --- building configs from the plant and the profiles ------------------------------------


@dataclass(frozen=True)
class Network:
    """What boards need to reach the broker, beyond the plant file's [broker] section."""

    broker_host: str | None = None  # the boards' view of the broker, if not the plant's host
    wifi_ssid: str | None = None
    wifi_password: str = field(default="", repr=False)
    ntp: str | None = None  # "host" or "host:port"; none: the gateway dates events


def board_address(host: str, what: str) -> str:
    """`host` as the IPv4 address a board connects to: a board never looks a name up, since
    MicroPython's lookup blocks it until DNS answers (docs/board-config.md)."""
    try:
        return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ProvisionError(
            f"{what} {host!r} does not resolve to an IPv4 address here ({exc}): "
            f"give the address boards reach it at"
        ) from None


def _ntp(endpoint: str | None) -> str | None:
    if endpoint is None:
        return None
    host, colon, port = endpoint.partition(":")
    return board_address(host, "NTP server") + colon + port


def _inputs(profile: Profile) -> list[InputEntry]:
    entries = [
        InputEntry(name=INPUT_NAMES[role], role=role, pin=s.pin, pull=s.pull, active=s.active)
        for role, s in profile.inputs.items()
    ]
    if profile.supervised_cord:
        cord = profile.supervised_cord.adc
        entries.append(
            InputEntry(name=SUPERVISED_CORD_NAME, role="cord", adc=cord, supervised=True)
        )
    return entries


def _reader_names(roles: list[str]) -> list[str]:
    """The role is the name; a role given twice is numbered (badge1, badge2)."""
    return [
        role if roles.count(role) == 1 else f"{role}{roles[: i + 1].count(role)}"
        for i, role in enumerate(roles)
    ]


def _rfid(profile: Profile, station: StationConfig) -> RfidEntry | None:
    if not station.readers:
        return None
    slots = profile.rfid.readers if profile.rfid else []
    if len(station.readers) > len(slots):
        raise ProvisionError(
            f"{len(station.readers)} readers configured, "
            f"profile {profile.name} has {len(slots)} reader slots"
        )
    readers = [
        ReaderEntry(name=name, role=role, cs=slot.cs, rst=slot.rst)
        for name, role, slot in zip(
            _reader_names(list(station.readers)), station.readers, slots, strict=False
        )
    ]
    return RfidEntry(spi=profile.rfid.spi, readers=readers)


def build_board_config(
    plant: PlantConfig,
    line: LineConfig,
    station: StationConfig,
    profile: Profile,
    password: str,
    network: Network,
) -> BoardConfig:
    if plant.broker.tls and network.ntp is None:
        raise ProvisionError(TLS_NEEDS_NTP)
    wifi = None
    if network.wifi_ssid:
        wifi = WifiEntry(ssid=network.wifi_ssid, password=network.wifi_password)
    host = network.broker_host or plant.broker.host
    address = board_address(host, "broker host")
    broker = BrokerEntry(
        host=address,
        port=plant.broker.port,
        username=station.board,
        password=password,
        tls=plant.broker.tls,
        server_name=host if plant.broker.tls and host != address else None,
        keepalive=plant.broker.keepalive,
    )
    return BoardConfig(
        board=station.board,
        profile=profile.name,
        site=plant.site,
        line=line.id,
        station=station.id,
        wifi=wifi,
        broker=broker,
        ntp=_ntp(network.ntp),
        inputs=_inputs(profile),
        rfid=_rfid(profile, station),
        light=profile.light,
        status_led=profile.status_led,
    )


# --- Mosquitto: password file and ACL ----------------------------------------------------


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """A Mosquitto 2 password-file hash: `$7$iterations$salt_b64$hash_b64` (PBKDF2-SHA512)."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    b64 = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def board_acl(site: str, line: str, station: str) -> list[str]:
    """A board publishes under its own station; reads its state and ack, its line's state and
    owner, and the gateways' status (docs/protocol.md)."""
    own = Station(site, line, station)
    return [
        *(f"topic write {own.topic(leaf)}" for leaf in ("evt", "status", "telemetry")),
        *(f"topic read {own.topic(leaf)}" for leaf in ("state", "ack")),
        f"topic read {own.line_topic}",
        f"topic read {line_owner_topic(site, line)}",
        f"topic read {GATEWAY_STATUS}",
        f"topic read {GATEWAY_STATUSES}",
    ]


def gateway_acl() -> list[str]:
    """The gateway reads every board's uplink and writes every downlink; it may read back its
    own retained downlinks (state, ack, gateway status) when it restarts. Several gateways
    write their own status and the owner of the lines they take."""
    return [
        *(f"topic read {topic}" for topic in board_subscriptions()),
        f"topic readwrite {ROOT}/+/+/+/state",
        f"topic readwrite {ROOT}/+/+/+/ack",
        f"topic readwrite {ROOT}/+/+/state",
        f"topic write {ROOT}/+/kanban/+/replenish",
        f"topic write {ROOT}/+/alert",
        f"topic readwrite {GATEWAY_STATUS}",
        f"topic write {GATEWAY_STATUSES}",
        f"topic write {line_owner_topic('+', '+')}",
    ]


def acl_text(plant: PlantConfig, gateway_user: str) -> str:
    blocks = [
        "# Written by `andon provision`: re-run it rather than editing this file.",
        "\n".join([f"user {gateway_user}", *gateway_acl()]),
        *(
            "\n".join([f"user {s.board}", *board_acl(plant.site, line.id, s.id)])
            for line, s in plant.stations()
        ),
    ]
    return "\n\n".join(blocks) + "\n"


def mosquitto_conf(out: Path) -> str:
    return (
        "# Include from mosquitto.conf (or paste): every client logs in, the ACL decides.\n"
        "allow_anonymous false\n"
        "# a signal must not wait for Nagle's algorithm\n"
        "set_tcp_nodelay true\n"
        f"password_file {out / 'mosquitto' / 'passwd'}\n"
        f"acl_file {out / 'mosquitto' / 'acl'}\n"
    )


# --- secrets and files --------------------------------------------------------------------


PROVISION_MARKS = ("secrets.json", "boards", "mosquitto")


def check_out_dir(out: Path, force: bool = False) -> None:
    """`--out` must be a new or empty directory, or one `andon provision` wrote: it is made
    private (0700), which must not happen to an unrelated directory by mistake."""
    if out.exists() and not out.is_dir():
        raise ProvisionError(f"--out {out}: a file, not a directory; give a directory")
    if force or not out.exists():
        return
    found = sorted(p.name for p in out.iterdir())
    if found and not any(name in PROVISION_MARKS for name in found):
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise ProvisionError(
            f"--out {out} holds other files ({shown}): give a new or empty directory,"
            " one `andon provision` wrote, or --force"
        )


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (its directory made private by the caller)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _load_secrets(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ProvisionError(
            f"{path}: not valid JSON ({exc}); move it away to start over"
        ) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ProvisionError(f"{path}: expected an object of username to password")
    return data


@dataclass
class Provisioned:
    """What a run did, without any secret: safe to print."""

    out: Path
    boards: list[str]
    new_passwords: list[str]  # accounts whose password was created or rotated
    removed: list[str]  # boards no longer in the plant: their account and config are gone
    notes: list[str]  # outputs on strapping pins, once per profile

    def summary(self) -> str:
        lines = [f"provisioned {len(self.boards)} boards into {self.out}"]
        if self.new_passwords:
            lines.append(f"new passwords for: {', '.join(self.new_passwords)}")
        if self.removed:
            lines.append(f"removed (no longer in the plant): {', '.join(self.removed)}")
        lines += [f"note: {note}" for note in self.notes]
        lines.append(
            f"broker: include {self.out / 'mosquitto' / 'andon.conf'} and reload Mosquitto"
        )
        return "\n".join(lines)


def _station_config(
    plant: PlantConfig,
    line: LineConfig,
    station: StationConfig,
    password: str,
    network: Network,
    profiles_dir: Path,
) -> tuple[BoardConfig, list[str]]:
    """The station's config.json, checked against its chip's rules, and the profile's notes."""
    where = f"{line.id}/{station.id} (board {station.board})"
    try:
        profile = load_profile(station.profile, profiles_dir)
        config = build_board_config(plant, line, station, profile, password, network)
        _, notes = check_board_config(config.model_dump(mode="json"), "config.json", profiles_dir)
    except (ProfileError, PinRuleError, ProvisionError) as exc:
        raise ProvisionError(f"{where}: {exc}") from None
    return config, [f"profile {profile.name}: {note}" for note in notes]


def _write_all(
    out: Path, passwords: dict[str, str], configs: dict[str, str], removed: list[str], acl: str
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    for directory in (out, out / "boards", out / "mosquitto"):
        _private_dir(directory)
    _write_private(out / "secrets.json", json.dumps(passwords, indent=2, sort_keys=True) + "\n")
    for board, text in configs.items():
        _private_dir(out / "boards" / board)
        _write_private(out / "boards" / board / "config.json", text)
    for board in removed:
        with contextlib.suppress(OSError):  # already gone, or holds files we did not write
            (out / "boards" / board / "config.json").unlink()
            (out / "boards" / board).rmdir()
    passwd = "".join(f"{user}:{mosquitto_hash(pw)}\n" for user, pw in sorted(passwords.items()))
    _write_private(out / "mosquitto" / "passwd", passwd)
    _write_private(out / "mosquitto" / "acl", acl)
    _write_private(out / "mosquitto" / "andon.conf", mosquitto_conf(out.resolve()))


def provision(
    plant: PlantConfig,
    out: Path,
    rotate: bool = False,
    network: Network = Network(),
    profiles_dir: Path = PROFILES_DIR,
) -> Provisioned:
    """Write every board's config.json and the broker's password file and ACL into `out`."""
    known = _load_secrets(out / "secrets.json")
    gateway_user = plant.broker.username or GATEWAY_USER
    if ":" in gateway_user:
        raise ProvisionError(f"broker.username {gateway_user!r}: a ':' cannot be in a username")
    new: list[str] = []

    def password_of(user: str) -> str:
        if rotate or user not in known:
            known[user] = secrets.token_urlsafe(24)
            new.append(user)
        return known[user]

    configs: dict[str, str] = {}
    notes: set[str] = set()
    problems: list[str] = []
    for line, station in plant.stations():
        password = password_of(station.board)
        try:
            config, found = _station_config(plant, line, station, password, network, profiles_dir)
        except ProvisionError as exc:
            problems.append(str(exc))
            continue
        notes.update(found)
        configs[station.board] = config.to_json()
    if problems:
        raise ProvisionError("\n".join(problems))

    # The plant's own gateway password, when it has one, is the gateway's account password.
    if plant.broker.password:
        known[gateway_user] = plant.broker.password
    else:
        password_of(gateway_user)
    accounts = {gateway_user, *configs}
    removed = sorted(set(known) - accounts)
    for user in removed:
        del known[user]
    _write_all(out, known, configs, removed, acl_text(plant, gateway_user))
    return Provisioned(out, sorted(configs), sorted(set(new) & accounts), removed, sorted(notes))
