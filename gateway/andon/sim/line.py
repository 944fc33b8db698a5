"""A virtual line: one virtual board per station of a plant, each the real firmware in its VM.

Each board's config.json is built by the provisioning builder from the plant and the station's
hardware profile (as `andon provision` would write it), pointed at the given broker; or, with
`provisioned`, it is the one `andon provision` wrote, with the board's own broker account. Its flash
is a directory of its own under the state dir, named by board id, so a restart boots from what
that flash holds. `do(verb, line, station, ...)` is what a person does at a station; the
scenario runner, the control server (`andon sim pull ...`) and the demo all go through it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from string import hexdigits
from typing import Any

from andon.config import LineConfig, PlantConfig, StationConfig
from andon.maint.hardware import load_profile
from andon.maint.provision import Network, build_board_config, check_board_config
from andon.sim.board import RESET_EXIT, SIM_HEAP, BoardError, VirtualBoard
from andon.sim.vm import compiled_paths

log = logging.getLogger("andon.sim")

REBOOT_POLL_S = 0.25  # how soon a board that reset itself boots again
UID_DIGITS = (8, 14, 20)  # a 4, 7 or 10 byte tag UID, in hex
# A tag lies on the reader this long, by its role: the firmware catches 300 ms taps (badge,
# receive), and a card on its post within about 550 ms (rfid.POST_PERIOD_MS: 500 ms polls).
SCAN_HOLD_MS = {"post": 800, "receive": 400, "badge": 400}
DEFAULT_HOLDOFF_MS = 1500  # the firmware's, for a reader whose config gives none
REPLACE_MARGIN_MS = 250  # and a few polls more before the same tag counts as placed again
BUTTONS = {  # what a person calls a button -> the input's role
    "maint": "call_maintenance",
    "maintenance": "call_maintenance",
    "qual": "call_quality",
    "quality": "call_quality",
    "mat": "call_material",
    "material": "call_material",
    "ack": "ack",
    "cycle": "cycle",  # the cycle-done sensor, one pulse
}
WIRE_FAULTS = ("cut", "short", "mend")
LIT = ("on", "slow", "fast")


class SimError(ValueError):
    """A request the virtual line cannot carry out (unknown station, button, reader...)."""


@dataclass
class SimBoard:
    """One station's board and what it is wired with."""

    line: str
    station: str
    board: VirtualBoard
    config: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)
    lifted: dict[str, tuple[str, float]] = field(default_factory=dict)  # reader -> uid, when

    @property
    def key(self) -> str:
        return f"{self.line}/{self.station}"

    def input_named(self, role: str) -> str:
        return self._first_input(lambda i: i["role"] == role, f"{role} input")

    def supervised_input(self) -> str:
        return self._first_input(lambda i: i.get("adc") is not None, "supervised input")

    def _first_input(self, wanted: Callable[[dict], bool], what: str) -> str:
        names = [i["name"] for i in self.config["inputs"] if wanted(i)]
        if not names:
            raise SimError(f"{self.key} has no {what}")
        return names[0]

    def reader_named(self, reader: str | None) -> str:
        readers = [r["name"] for r in (self.config.get("rfid") or {}).get("readers", [])]
        if not readers:
            raise SimError(f"{self.key} has no RFID reader")
        if reader is None and len(readers) == 1:
            return readers[0]
        if reader is None:
            raise SimError(
                f"{self.key} has several readers: say which with --reader, one of: "
                + ", ".join(readers)
            )
        if reader not in readers:
            raise SimError(
                f"{self.key} has no {reader!r} reader; its readers: {', '.join(readers)}"
            )
        return reader

    def reader(self, name: str) -> dict:
        """A reader's configuration, by a name `reader_named` gave."""
        return next(r for r in self.config["rfid"]["readers"] if r["name"] == name)

    def holdoff_s(self, reader: str) -> float:
        """The reader's hold-off, and a poll more (docs/board-config.md: 1500 ms default)."""
        holdoff_ms = self.reader(reader).get("holdoff_ms", DEFAULT_HOLDOFF_MS)
        return (holdoff_ms + REPLACE_MARGIN_MS) / 1000

    def power_up_levels(self) -> dict[str, bool]:
        """Every input idle at power-up: the NC cord closed, buttons released."""
        return {i["name"]: False for i in self.config["inputs"]}


def board_config(
    plant: PlantConfig, line: LineConfig, station: StationConfig, provisioned: Path | None = None
) -> dict[str, Any]:
    """The station's config.json: the one `andon provision --out provisioned` wrote (its own
    broker account and address), else as provisioning builds it, for an anonymous broker."""
    if provisioned is not None:
        path = provisioned / "boards" / station.board / "config.json"
        try:
            data = json.loads(path.read_text())
            check_board_config(data, str(path))
        except (OSError, ValueError) as exc:  # ProvisionError and PinRuleError among them
            raise SimError(f"{exc} (andon provision --out {provisioned} writes it)") from None
        data.pop("wifi", None)  # a virtual board's radio needs no credentials
        return data
    profile = load_profile(station.profile)
    config = build_board_config(plant, line, station, profile, "", Network())
    data = config.model_dump(mode="json", exclude_none=True)
    data["broker"] = {k: v for k, v in data["broker"].items() if k not in ("username", "password")}
    return data


class VirtualLine:
    """The boards of `stations` (default: every station of the plant)."""

    def __init__(
        self,
        plant: PlantConfig,
        state_dir: Path,
        stations: Iterable[str] | None = None,
        heap: str = SIM_HEAP,
        provisioned: Path | None = None,
    ) -> None:
        self.plant = plant
        self.state_dir = state_dir
        wanted = set(stations) if stations is not None else None
        self.boards: dict[str, SimBoard] = {}
        for line, station in plant.stations():
            key = f"{line.id}/{station.id}"
            if wanted is not None and key not in wanted:
                continue
            config = board_config(plant, line, station, provisioned)
            flash = state_dir / station.board
            board = VirtualBoard(flash, config, uid=station.board, heap=heap)
            self.boards[key] = SimBoard(line.id, station.id, board, config)
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._reboot_resets, daemon=True)

    # --- power ------------------------------------------------------------------------------

    def start(self) -> None:
        """Boot every board, a few at a time (each VM takes a moment to open its port)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        compiled_paths()  # compile once here: parallel boots would race on the same temp files
        try:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(self._boot, self.boards.values()))
        except BaseException:
            self.stop()
            raise
        self._watcher.start()

    def _boot(self, sb: SimBoard) -> None:
        with sb.lock:
            sb.board.start(inputs=sb.power_up_levels())

    def stop(self) -> None:
        self._stopping.set()
        if self._watcher.is_alive():
            self._watcher.join()
        for sb in self.boards.values():
            with sb.lock:
                sb.board.stop()

    def _reboot_resets(self) -> None:
        """A board that reset itself (its watchdog, its fault handler, the reset button)
        boots again from its flash, as a real one does; a power cut stays off."""
        while not self._stopping.wait(REBOOT_POLL_S):
            for sb in self.boards.values():
                proc = sb.board.proc
                if proc is None or proc.poll() != RESET_EXIT or not sb.lock.acquire(False):
                    continue
                try:
                    if sb.board.proc is proc:  # not restarted meanwhile
                        self._restart(sb)
                except BoardError as exc:
                    log.error("%s: no reboot after its reset: %s", sb.key, exc)
                finally:
                    sb.lock.release()

    def __enter__(self) -> VirtualLine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what a person does -----------------------------------------------------------------

    def at(self, line: str, station: str) -> SimBoard:
        sb = self.boards.get(f"{line}/{station}")
        if sb is None:
            raise SimError(f"no virtual board at {line}/{station}")
        return sb

    def on_line(self, line: str) -> list[SimBoard]:
        boards = [sb for sb in self.boards.values() if sb.line == line]
        if not boards:
            raise SimError(f"no virtual boards on line {line}")
        return boards

    def do(self, verb: str, line: str, station: str, **args: Any) -> dict[str, Any]:
        """One action at a station; its reply (lamps for `lamps`, else what the board said)."""
        if verb not in VERBS:
            raise SimError(f"unknown action {verb!r}; one of: {', '.join(VERBS)}")
        action = getattr(self, "_" + verb.replace("-", "_"))
        sb = self.at(line, station)
        with sb.lock:
            try:
                return action(sb, **args) or {}
            except BoardError as exc:
                raise SimError(f"{sb.key}: {exc}") from None

    def _pull(self, sb: SimBoard, input: str | None = None, settle: bool = True) -> dict:
        return sb.board.set_input(input or sb.input_named("cord"), True, settle)

    def _reset(self, sb: SimBoard, input: str | None = None, settle: bool = True) -> dict:
        return sb.board.set_input(input or sb.input_named("cord"), False, settle)

    def _press(self, sb: SimBoard, button: str) -> None:
        role = BUTTONS.get(button)
        if role is None:
            raise SimError(f"unknown button {button!r}; one of: {', '.join(BUTTONS)}")
        sb.board.press(sb.input_named(role))

    def _wire(self, sb: SimBoard, fault: str, input: str | None = None) -> None:
        """Cut or short a supervised cord's cable, or mend it."""
        if fault not in WIRE_FAULTS:
            raise SimError(f"unknown wiring fault {fault!r}; one of: {', '.join(WIRE_FAULTS)}")
        sb.board.call("wire", name=input or sb.supervised_input(), fault=fault)

    def _scan(self, sb: SimBoard, uid: str, reader: str | None = None) -> None:
        """Place the tag on the reader, hold it there a few polls, lift it.

        The same tag tapped again within the reader's hold-off would be the same placement to
        the firmware, so the second tap waits until the hold-off has passed, as a person's would.
        """
        name = sb.reader_named(reader)
        uid = uid.upper()
        if len(uid) not in UID_DIGITS or any(c not in hexdigits for c in uid):
            raise SimError(f"UID {uid!r}: expected 8, 14 or 20 hex digits (4, 7 or 10 bytes)")
        last_uid, lifted = sb.lifted.get(name, (None, 0.0))
        if last_uid == uid:
            time.sleep(max(0.0, lifted + sb.holdoff_s(name) - time.monotonic()))
        sb.board.place_tag(name, uid)
        time.sleep(SCAN_HOLD_MS[sb.reader(name)["role"]] / 1000)
        sb.board.remove_tag(name)
        sb.lifted[name] = (uid, time.monotonic())

    def _power_cut(self, sb: SimBoard) -> None:
        sb.board.power_cut()

    def _restart(self, sb: SimBoard) -> None:
        sb.board.power_cut()
        sb.board.start(inputs=sb.power_up_levels())

    def _wifi_down(self, sb: SimBoard) -> None:
        """The board's radio drops: its connections end (the broker publishes its Will) and
        none opens again until `wifi-up`."""
        sb.board.call("wifi", up=False)

    def _wifi_up(self, sb: SimBoard) -> None:
        sb.board.call("wifi", up=True)

    def _lamps(self, sb: SimBoard) -> dict:
        if sb.board.proc is None:
            return {"lamps": None}  # powered off
        return {"lamps": sb.board.lamps()}

    def _status(self, sb: SimBoard) -> dict:
        return sb.board.status() if sb.board.proc is not None else {"power": "off"}

    def lamps(self, line: str, station: str) -> dict[str, str] | None:
        """The station's segments and buzzer by mode; None while its board is off."""
        return self.do("lamps", line, station)["lamps"]

    def line_lamps(self, line: str) -> dict[str, dict[str, str] | None]:
        return {sb.station: self.lamps(sb.line, sb.station) for sb in self.on_line(line)}


VERBS = (
    "pull",
    "reset",
    "press",
    "wire",
    "scan",
    "power-cut",
    "restart",
    "wifi-down",
    "wifi-up",
    "lamps",
    "status",
)
