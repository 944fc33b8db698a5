"""`andon demo`: the whole system on one machine, with a live terminal andon board.

Mosquitto on a free local port, `andon gateway` with the example plant (its broker and
database re-pointed under var/demo/), one virtual board per station running the real firmware,
scenarios/demo.toml played against them, and the board drawn live until Ctrl-C (or
--duration). Each run starts afresh: var/demo/ is cleared first. Without a terminal it prints
plain status lines now and then instead.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from andon.config import hash_token
from andon.firmware_build import REPO
from andon.runtime.service import plant_view
from andon.sim.control import ControlServer
from andon.sim.line import SimError
from andon.sim.rig import Rig
from andon.sim.scenario import ScenarioFailed, load_scenario
from andon.sim.show import board, plain_status

EXAMPLE_PLANT = REPO / "examples" / "plant.toml"
DEMO_SCENARIO = REPO / "scenarios" / "demo.toml"
WORKDIR = Path("var/demo")
REFRESH_S = 0.5
PLAIN_EVERY_S = 5.0


class _Play:
    """The scenario in a thread of its own; what it did, for the board's log."""

    def __init__(self, rig: Rig, scenario: Path, stop: threading.Event) -> None:
        self.log: list[str] = []
        self.failed: str | None = None
        self.runner = rig.runner(report=self.log.append, stop=stop)
        self.scenario = load_scenario(scenario)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.runner.run(self.scenario)
            self.log.append(f"scenario {self.scenario.name!r} done: every step held")
        except ScenarioFailed as exc:
            self.failed = str(exc)
            self.log.append(f"FAILED: {exc}")


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


def run_demo(
    duration: float | None = None,
    workdir: Path = WORKDIR,
    plant: Path = EXAMPLE_PLANT,
    scenario: Path = DEMO_SCENARIO,
) -> int:
    """Run until Ctrl-C, SIGTERM or `duration` s; 0 unless a scenario step failed."""
    console = Console()
    shutil.rmtree(workdir, ignore_errors=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"andon demo: starting Mosquitto, the gateway and the boards under {workdir}/")
    token = secrets.token_urlsafe(24)  # the demo's own supervisor token, for the browser
    with Rig(_with_token(plant, token), workdir) as rig, ControlServer(rig.line, workdir / "sim"):
        rig.wait_line_up()
        print(
            f"{len(rig.line.boards)} boards up on Mosquitto {rig.broker.host}:{rig.broker.port}."
            f" From a second terminal:\n"
            f"  andon sim pull L1 S03 --state {workdir}/sim    (then: reset, press L1 S05 qual,"
            f" lights L1)\n{_api_hint(rig, token)}Ctrl-C ends the demo.",
            flush=True,
        )
        play = _Play(rig, scenario, stop)
        play.thread.start()
        _show(rig, play, stop, console, duration)
        stop.set()
        play.thread.join(timeout=10)
    print(
        f"andon demo: stopped. The database is {rig.database}"
        f" (andon status --config {rig.plant_path})."
    )
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


def _show(
    rig: Rig, play: _Play, stop: threading.Event, console: Console, duration: float | None
) -> None:
    end = None if duration is None else time.monotonic() + duration
    if console.is_terminal:
        with Live(console=console, refresh_per_second=4, screen=False) as live:
            while not _over(stop, end, REFRESH_S):
                live.update(board(_view(rig), _lamps(rig), play.log))
        return
    printed, wait_s = 0, 0.0
    while not _over(stop, end, wait_s):
        wait_s = PLAIN_EVERY_S
        for text in play.log[printed:]:
            print(text, flush=True)
        printed = len(play.log)
        print(plain_status(_view(rig), _lamps(rig)), flush=True)


def _over(stop: threading.Event, end: float | None, wait_s: float) -> bool:
    """Wait up to `wait_s`; True once stopped or past the end."""
    if end is not None:
        wait_s = min(wait_s, max(0.0, end - time.monotonic()))
    return stop.wait(wait_s) or (end is not None and time.monotonic() >= end)
