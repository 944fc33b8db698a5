"""`andon demo`: the whole system on one machine, with a live terminal andon board.

Mosquitto on a free local port, secured as a plant's should be (every virtual board logs in
with the account `andon provision` wrote for it, the ACL decides, anonymous access off),
`andon gateway` with the example plant (its broker and database re-pointed under var/demo/),
one virtual board per station running the real firmware, scenarios/demo.toml played against
them, and the board drawn live. It ends when the scenario has played (or at --duration),
at Ctrl-C or SIGTERM, always cleanly. Each run starts afresh: var/demo/ is cleared first,
under a lock, so a second demo refuses to wipe a running one. Without a terminal it prints
only what changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from andon.clitools import andon_to_type
from andon.config import hash_token
from andon.firmware_build import SOURCES
from andon.runtime.replay import plant_view
from andon.sim.control import ControlServer
from andon.sim.line import SimError
from andon.sim.rig import Rig
from andon.sim.scenario import ScenarioFailed, load_scenario
from andon.sim.show import BOARD_SIZE, board, plain_status

EXAMPLE_PLANT = SOURCES / "examples" / "plant.toml"
DEMO_SCENARIO = SOURCES / "scenarios" / "demo.toml"
WORKDIR = Path("var/demo")
REFRESH_S = 0.5
LOCK = ".demo.lock"  # in the state dir: it survives the clearing, and names the holder


class DemoBusy(RuntimeError):
    """Another demo holds the state directory."""


class _Stopped(Exception):
    """Ctrl-C or SIGTERM while starting: unwind, stopping what was started."""


class _Play:
    """The scenario in a thread of its own; what it did, for the board's log."""

    def __init__(self, rig: Rig, scenario: Path, stop: threading.Event) -> None:
        self.log: list[str] = []
        self.failed: str | None = None
        self.done = 0  # steps that held
        self.runner = rig.runner(report=self.log.append, stop=stop)
        self.scenario = load_scenario(scenario)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.done = len(self.runner.run(self.scenario))
            if self.finished:
                self.log.append(f"scenario {self.scenario.name!r} done: every step held")
        except ScenarioFailed as exc:
            self.failed = str(exc)
            self.log.append(f"FAILED: {exc}")

    @property
    def finished(self) -> bool:
        return self.done == len(self.scenario.steps)

    def where_stopped(self) -> str:
        """Which step the scenario was at, for a demo that ended before it did."""
        steps = self.scenario.steps
        step = steps[self.done]
        return f"step {self.done + 1} of {len(steps)} ({step.describe()})"


def _view(rig: Rig) -> dict[str, Any] | None:
    try:
        return plant_view(rig.plant)
    except Exception:  # the gateway is still creating its database: show "waiting"
        return None


def _lamps(rig: Rig) -> dict[str, Any]:
    return {key: _tower(rig, sb.line, sb.station) for key, sb in rig.line.boards.items()}


def _tower(rig: Rig, line: str, station: str) -> dict[str, str] | None:
    try:
        return rig.line.lamps(line, station)
    except SimError:  # a board that died shows as without power; the demo goes on
        return None


@contextlib.contextmanager
def state_lock(workdir: Path) -> Iterator[None]:
    """Hold `workdir` for this demo; DemoBusy naming the holder's pid if another has it."""
    workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(workdir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode().strip() or "?"
            raise DemoBusy(
                f"another demo (pid {holder}) runs in {workdir}/: stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # and with it the lock


def _clear(workdir: Path) -> None:
    for path in workdir.iterdir():
        if path.name == LOCK:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def run_demo(
    duration: float | None = None,
    workdir: Path = WORKDIR,
    plant: Path = EXAMPLE_PLANT,
    scenario: Path = DEMO_SCENARIO,
) -> int:
    """Until the scenario has played (or `duration` s), Ctrl-C or SIGTERM; 0 unless a
    scenario step failed, 2 if another demo holds `workdir`."""
    stop = threading.Event()
    starting = True

    def on_signal(*_: object) -> None:
        nonlocal starting
        stop.set()
        if starting:  # the start-up waits are not the stop event's: leave them at once,
            starting = False  # once: a second signal must not cut the clean-up short
            raise _Stopped

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        with state_lock(workdir):
            _clear(workdir)
            print(f"andon demo: starting Mosquitto, the gateway and the boards under {workdir}/")
            token = secrets.token_urlsafe(24)  # the demo's own supervisor token, for the browser
            with (
                Rig(_with_token(plant, token), workdir, secured=True) as rig,
                ControlServer(rig.line, workdir / "sim"),
            ):
                rig.wait_line_up()
                starting = False
                code = _play(rig, workdir, scenario, stop, duration, token)
    except DemoBusy as exc:
        print(f"andon demo: {exc}", file=sys.stderr)
        return 2
    except _Stopped:
        print("andon demo: stopped while starting; everything it started is stopped.")
        return 0
    print(
        f"andon demo: stopped. The database is {rig.database}"
        f" ({andon_to_type()} status --config {rig.plant_path})."
    )
    return code


def _play(
    rig: Rig,
    workdir: Path,
    scenario: Path,
    stop: threading.Event,
    duration: float | None,
    token: str,
) -> int:
    print(
        f"{len(rig.line.boards)} boards up on Mosquitto {rig.broker.host}:{rig.broker.port}"
        " (each with its own account). From a second terminal:\n"
        f"  {andon_to_type()} sim pull L1 S03 --state {workdir}/sim\n"
        f"    (then: reset, press L1 S05 qual, lights L1)\n{_api_hint(rig, token)}"
        "Ctrl-C ends the demo.",
        flush=True,
    )
    play = _Play(rig, scenario, stop)
    play.thread.start()
    _show(rig, play, stop, duration)
    stop.set()
    play.thread.join(timeout=10)
    if not play.finished and play.failed is None:
        print(f"andon demo: the scenario stopped at {play.where_stopped()}", flush=True)
    return 1 if play.failed else 0


def _with_token(plant: Path, token: str) -> dict[str, Any]:
    """The plant's data with a supervisor token for the demo added (the file keeps hashes)."""
    data = tomllib.loads(plant.read_text())
    entry = {"name": "demo", "role": "supervisor", "hash": hash_token(token)}
    return {**data, "api_tokens": [*data.get("api_tokens", []), entry]}


def _api_hint(rig: Rig, token: str) -> str:
    if rig.api_url is None:
        return ""
    site = rig.api_url.removesuffix("/api/v1")
    return (
        f"  board:   {site}/board/L1?token={token}    (and /board, /console, /reports)\n"
        f"  curl -H 'Authorization: Bearer {token}' {rig.api_url}/plant    (the HTTP API)\n"
    )


def _show(rig: Rig, play: _Play, stop: threading.Event, duration: float | None) -> None:
    """The live board on a terminal (cut to 80x24 at most); else each change, once."""
    end = None if duration is None else time.monotonic() + duration

    def over() -> bool:
        return _over(stop, end, REFRESH_S) or (duration is None and _played(play))

    console = Console()
    zone = rig.plant.zone
    if console.is_terminal:
        width, height = BOARD_SIZE
        console.size = (min(console.width, width), min(console.height, height))
        with Live(console=console, refresh_per_second=4, screen=False) as live:
            while not over():
                live.update(board(_view(rig), _lamps(rig), play.log, zone, console.size.height))
        return
    printed, last = 0, []
    while True:
        for text in play.log[printed:]:
            print(text, flush=True)
        printed = len(play.log)
        status = plain_status(_view(rig), _lamps(rig)).splitlines()
        for index, text in enumerate(status):
            if index >= len(last) or last[index] != text:
                print(text, flush=True)
        last = status
        if over():
            return


def _played(play: _Play) -> bool:
    return not play.thread.is_alive()


def _over(stop: threading.Event, end: float | None, wait_s: float) -> bool:
    """Wait up to `wait_s`; True once stopped or past the end."""
    if end is not None:
        wait_s = min(wait_s, max(0.0, end - time.monotonic()))
    return stop.wait(wait_s) or (end is not None and time.monotonic() >= end)
