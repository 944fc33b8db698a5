"""`andon flash`: put the firmware and a board's config.json on a board, with mpremote.

For each port: ask the board who it is (unique id, the .mpy version its MicroPython loads, free
flash, the sha256 of each file it already has), compare with the firmware compiled by mpy-cross
(main.py and boot.py stay source) plus the board's provisioned config.json, copy only what
differs, soft-reset and check the version the firmware reports, then reset it into the firmware.
mpremote runs as a subprocess, as a person would run it.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

from andon.config import PlantConfig
from andon.firmware_build import BUILD as BUILD_ROOT
from andon.firmware_build import FIRMWARE, compile_tree, tool
from andon.maint.hardware import load_profile

BUILD = BUILD_ROOT / "flash"
# s: the probe takes a second or two. mpremote itself never gives up on a port that keeps
# printing something other than a REPL (a boot loop, other firmware).
PROBE_TIMEOUT = 15.0
MICROPYTHON_DOWNLOAD = "https://micropython.org/download/"
# How MicroPython is installed on each chip (its download page gives the same commands).
ESPTOOL = {
    "esp32": ("esp32", "0x1000", "ESP32_GENERIC"),
    "esp32s3": ("esp32s3", "0x0", "ESP32_GENERIC_S3"),
}

# Sent with `mpremote exec`: what the board is and what it holds. It prints one JSON line.
PROBE = """
import binascii, hashlib, json, os, sys
try:
    from machine import unique_id
except ImportError:  # the virtual serial board (unix port) has it in its hal only
    from hal import unique_id
def _stat(p):
    try:
        return os.stat(p)
    except OSError:
        return None
def _sha(p):
    h = hashlib.sha256()
    b = bytearray(512)
    with open(p, 'rb') as f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            h.update(memoryview(b)[:n])
    return binascii.hexlify(h.digest()).decode()
files = {}
for p in __PATHS__:
    s = _stat(p)
    if s is not None and not s[0] & 0x4000:
        files[p] = [s[6], _sha(p)]
board = None
try:
    with open('config.json') as f:
        board = json.load(f).get('board')
except Exception:
    pass
fs = os.statvfs('.')
print(json.dumps({'uid': binascii.hexlify(unique_id()).decode().upper(),
    'mpy': getattr(sys.implementation, '_mpy', None),
    'version': '.'.join(str(v) for v in sys.implementation.version[:3]),
    'free': fs[0] * fs[3], 'block': fs[0], 'files': files, 'board': board,
    'dirs': [d for d in __DIRS__ if _stat(d)]}))
"""
CONFIRM = "from andon import VERSION; print(VERSION)"
RESET = """
try:
    from machine import reset
except ImportError:  # the virtual serial board: its hal ends the VM, which is its reset
    from hal import reset
reset()
"""


class FlashError(RuntimeError):
    """Flashing cannot go on; the message says why and what to do."""


class NoAnswer(FlashError):
    """mpremote got no answer in time."""


@dataclass(frozen=True)
class Firmware:
    """What a board should hold: remote path -> local file."""

    files: dict[str, Path]
    mpy: int  # the .mpy version mpy-cross emitted
    version: str

    @property
    def dirs(self) -> list[str]:
        parents = {str(Path(p).parent) for p in self.files} - {"."}
        return sorted(parents, key=lambda d: (d.count("/"), d))


def firmware_version(source: Path) -> str:
    """The VERSION the firmware's `andon` package declares (it reports it in its birth)."""
    tree = ast.parse((source / "lib" / "andon" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "VERSION" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise FlashError(f"{source}/lib/andon/__init__.py declares no VERSION")


def mpy_version(path: Path) -> int:
    """The .mpy version of a bytecode .mpy file (header: 'M', version, arch<<2 | sub, ...).

    A board loads bytecode of its own .mpy version; the sub-version and the architecture
    only matter for native code, which the firmware has none of."""
    head = path.read_bytes()[:4]
    if len(head) < 4 or head[0] != ord("M"):
        raise FlashError(f"{path} is not a .mpy file")
    if head[2] >> 2:
        raise FlashError(f"{path} holds native code: compile the firmware to bytecode only")
    return head[1]


def build_firmware(config_json: Path, source: Path = FIRMWARE, build: Path = BUILD) -> Firmware:
    """Compile lib/ to .mpy (only modules whose source changed) and list what goes where."""
    compile_tree(source / "lib", build / "lib")
    files = {name: source / name for name in ("boot.py", "main.py")}
    for py in sorted((source / "lib").rglob("*.py")):
        remote = py.relative_to(source).with_suffix(".mpy").as_posix()
        files[remote] = build / remote
    compiled = next(path for remote, path in files.items() if remote.endswith(".mpy"))
    files["config.json"] = config_json
    return Firmware(files, mpy_version(compiled), firmware_version(source))


@dataclass(frozen=True)
class BoardInfo:
    """What a board reported about itself."""

    port: str
    uid: str
    mpy: int | None  # sys.implementation._mpy
    version: str  # MicroPython's
    free: int  # bytes free on its filesystem
    block: int
    files: dict[str, tuple[int, str]]  # remote path -> (size, sha256 hex)
    dirs: list[str]
    board: str | None  # the board id its config.json names, if it has one

    @classmethod
    def parse(cls, port: str, line: str) -> BoardInfo:
        data = json.loads(line)
        files = {path: (size, digest) for path, (size, digest) in data.pop("files").items()}
        return cls(port=port, files=files, **data)


@dataclass(frozen=True)
class Plan:
    """What flashing one board changes."""

    info: BoardInfo
    board: str
    copy: list[str]  # remote paths, in copy order
    mkdir: list[str]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- talking to the board -----------------------------------------------------------------


def _no_micropython(port: str, chip: str | None) -> FlashError:
    esp_chip, offset, image = ESPTOOL.get(chip or "esp32", ESPTOOL["esp32"])
    return FlashError(
        f"{port}: the board does not answer as MicroPython (no raw REPL). Install MicroPython "
        f"first ({MICROPYTHON_DOWNLOAD}{image}/), then flash again:\n"
        f"  esptool.py --chip {esp_chip} --port {port} erase_flash\n"
        f"  esptool.py --chip {esp_chip} --port {port} write_flash -z {offset} {image}-<ver>.bin"
    )


def mpremote(port: str, *args: str, chip: str | None = None, timeout: float = 120) -> str:
    """Run `mpremote connect PORT ARGS...`; its output, or a FlashError that says why."""
    if not Path(port).exists():
        raise FlashError(f"{port}: no device (is the board plugged in? `mpremote devs` lists)")
    try:
        done = subprocess.run(
            [tool("mpremote", "mpremote"), "connect", port, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise NoAnswer(f"{port}: the board stopped answering (mpremote {args[0]})") from None
    if done.returncode == 0:
        return done.stdout
    said = (done.stdout + done.stderr).strip()
    if "failed to access" in said:
        raise FlashError(f"{port}: no device, or no access to it ({said.splitlines()[-1]})")
    if "could not enter raw repl" in said or "could not exec command" in said:
        raise _no_micropython(port, chip)
    raise FlashError(f"{port}: mpremote {' '.join(args[:2])} failed:\n{said[-2000:]}")


def probe(port: str, firmware: Firmware, chip: str | None = None) -> BoardInfo:
    """Ask the board what it is and what it holds (after a soft reset: the firmware stops)."""
    code = PROBE.replace("__PATHS__", repr(sorted(firmware.files)))
    code = code.replace("__DIRS__", repr(firmware.dirs))
    try:
        out = mpremote(port, "exec", code, chip=chip, timeout=PROBE_TIMEOUT)
    except NoAnswer:  # mpremote waited for a raw REPL that never came
        raise _no_micropython(port, chip) from None
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise _no_micropython(port, chip)
    return BoardInfo.parse(port, lines[-1])


# --- deciding -----------------------------------------------------------------------------


def check_mpy(info: BoardInfo, firmware: Firmware) -> None:
    """The board must load the .mpy version the firmware is compiled to."""
    if info.mpy is None:
        raise FlashError(
            f"{info.port}: MicroPython {info.version} is too old to say which .mpy it loads; "
            f"install a MicroPython that loads .mpy v{firmware.mpy} (1.23 or newer)"
        )
    version = info.mpy & 0xFF  # sys.implementation._mpy: the version in its low byte
    if version != firmware.mpy:
        raise FlashError(
            f"{info.port}: MicroPython {info.version} loads .mpy v{version}, the firmware is "
            f"compiled to .mpy v{firmware.mpy} (by this environment's mpy-cross): install a "
            f"MicroPython that loads v{firmware.mpy}, or an mpy-cross that emits v{version}"
        )


def plan(info: BoardInfo, board: str, firmware: Firmware) -> Plan:
    """Which files differ (by sha256) and whether they fit in the board's free space."""
    copy = [
        remote
        for remote, local in firmware.files.items()
        if info.files.get(remote, (0, ""))[1] != sha256_of(local)
    ]
    block = max(info.block, 1)
    # Each file takes whole blocks; a file replaced gives its blocks back.
    needed = sum(math.ceil(firmware.files[r].stat().st_size / block) * block for r in copy)
    freed = sum(math.ceil(info.files[r][0] / block) * block for r in copy if r in info.files)
    if needed - freed > info.free:
        raise FlashError(
            f"{info.port}: the board's filesystem is full: {len(copy)} files need "
            f"{needed - freed} bytes, {info.free} are free. Remove what is not the firmware "
            f"(`mpremote connect {info.port} fs ls -r`) and flash again"
        )
    mkdir = [d for d in firmware.dirs if d not in info.dirs]
    return Plan(info, board, copy, mkdir)


# --- doing --------------------------------------------------------------------------------


def apply(plan_: Plan, firmware: Firmware) -> str:
    """Copy what changed, soft-reset, check the version, reset into the firmware."""
    port = plan_.info.port
    args: list[str] = ["resume"]
    for directory in plan_.mkdir:
        args += ["fs", "mkdir", f":{directory}", "+"]
    for remote in plan_.copy:
        args += ["fs", "cp", str(firmware.files[remote]), f":{remote}", "+"]
    if len(args) > 1:
        mpremote(port, *args[:-1])
    reported = mpremote(port, "resume", "soft-reset", "exec", CONFIRM).strip()
    if reported != firmware.version:
        raise FlashError(
            f"{port}: after flashing the board reports firmware {reported!r}, "
            f"expected {firmware.version}"
        )
    restart(port)
    return reported


def restart(port: str) -> None:
    """Reset the board into whatever firmware it holds (the probe stopped it)."""
    mpremote(port, "resume", "exec", "--no-follow", RESET)


@dataclass
class Flashed:
    plan: Plan
    running: str | None  # the version the board reported, None on a dry run

    def summary(self) -> str:
        p = self.plan
        head = f"{p.info.port}: board {p.board} (uid {p.info.uid}, MicroPython {p.info.version})"
        if self.running is None:
            changes = [f"  would create :{d}" for d in p.mkdir]
            changes += [f"  would copy {r}" for r in p.copy]
            return "\n".join([head, *changes] if changes else [f"{head}: nothing to change"])
        copied = f"copied {len(p.copy)} files" + (f" ({', '.join(p.copy)})" if p.copy else "")
        return f"{head}: {copied}; firmware {self.running} running"


def _config_json(provisioned: Path, board: str) -> Path:
    path = provisioned / "boards" / board / "config.json"
    if not path.exists():
        raise FlashError(f"{path} does not exist: run `andon provision` first")
    return path


def _chip(plant: PlantConfig, board: str) -> str:
    station = next(s for _, s in plant.stations() if s.board == board)
    return load_profile(station.profile).chip


def _require_in_plant(plant: PlantConfig, board: str, where: str) -> None:
    if plant.station_of_board(board) is None:
        known = ", ".join(s.board for _, s in plant.stations())
        raise FlashError(f"{where}: board {board} is not in the plant (its boards: {known})")


def flash_board(
    plant: PlantConfig,
    provisioned: Path,
    port: str,
    board: str | None = None,
    dry_run: bool = False,
    source: Path = FIRMWARE,
    build: Path = BUILD,
) -> Flashed:
    """Flash the board on `port` as `board`, or, without one, as the board it reports being
    (its config.json's board id if it is in the plant, else its unique id)."""
    if board is not None:
        _require_in_plant(plant, board, "--board")
    chip = _chip(plant, board) if board else None
    # The probe needs the list of files, which needs a config.json: any board's will do until
    # the board has said who it is.
    any_board = board or next(s.board for _, s in plant.stations())
    firmware = build_firmware(_config_json(provisioned, any_board), source, build)
    info = probe(port, firmware, chip)
    if board is None:
        board = info.board if info.board and plant.station_of_board(info.board) else info.uid
        _require_in_plant(plant, board, f"{port} (uid {info.uid})")
    try:
        check_mpy(info, firmware)
        firmware = build_firmware(_config_json(provisioned, board), source, build)
        todo = plan(info, board, firmware)
    except FlashError:
        with contextlib.suppress(FlashError):  # the first error is the one to tell
            restart(port)
        raise
    if dry_run:
        restart(port)
        return Flashed(todo, None)
    return Flashed(todo, apply(todo, firmware))
