"""`andon demo` as a user meets it (issue #14, findings 1 and 2): without a terminal it prints
what changes, exits 0 and leaves its database; a second terminal acts on it with the command
it prints; Ctrl-C and SIGTERM end it cleanly; a second demo refuses; the board fits 80x24."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import threading
from pathlib import Path

from andon.runtime.store import SqliteStore
from andon.sim.observe import wait_for
from andon.sim.rig import andon_command

EXAMPLE = Path(__file__).parents[2] / "examples" / "plant.toml"
STATE = "var/demo/sim"  # the demo's control socket, as the README gives it


def test_a_short_demo_run_exits_0_and_leaves_the_database(tmp_path):
    run = subprocess.run(
        andon_command("demo", "--duration", "8"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "andon sim pull L1 S03 --state var/demo/sim" in run.stdout
    board = re.search(r"board: +(http://127\.0\.0\.1:\d+/board/L1\?token=\S+)", run.stdout)
    assert board, run.stdout  # the demo prints the live board's URL, its token also the curl's
    token = board[1].partition("token=")[2]
    assert f"curl -H 'Authorization: Bearer {token}' http://127.0.0.1:" in run.stdout
    assert "pull L1/S03: ok" in run.stdout  # the scenario started: a cord was pulled
    assert "L1 called:" in run.stdout  # and the plain board showed it
    assert run.stdout.count("L2 running:") == 1  # without a tty: only what changed
    assert "the scenario stopped at step" in run.stdout  # --duration 8 ends it early
    database = tmp_path / "var" / "demo" / "andon.db"
    assert f"The database is {database.relative_to(tmp_path)}" in run.stdout
    store = SqliteStore(database)
    try:
        kinds = [json.loads(entry.message).get("kind") for entry in store.log()]
    finally:
        store.close()
    assert "cord_pulled" in kinds
    assert not (tmp_path / "var" / "demo" / "sim" / "sim.json").exists()  # the line is down


def _start_demo(cwd: Path, *args: str) -> tuple[subprocess.Popen, list[str]]:
    """`andon demo` as a user starts it (no tty), and its stdout lines as they come."""
    demo = subprocess.Popen(
        andon_command("demo", *args),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal gives it
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(demo.stdout), daemon=True).start()
    return demo, lines


def _stop(demo: subprocess.Popen) -> None:
    if demo.poll() is None:
        demo.kill()
        demo.wait()


def test_a_second_terminal_acts_on_the_demo_which_ctrl_c_ends_cleanly(tmp_path):
    demo, lines = _start_demo(tmp_path, "--duration", "600")
    try:
        wait_for("the boards up", lambda: any("boards up" in x for x in lines), timeout=120)
        assert any("each with its own account" in x for x in lines)  # secured by default
        # The command the demo prints for a second terminal works as printed.
        hint = next(x for x in lines if " sim pull L1 S03 --state var/demo/sim" in x)
        pull = subprocess.run(
            shlex.split(hint), cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert pull.returncode == 0, pull.stderr
        assert "L1/S03: cord pulled" in pull.stdout
        # The demo's broker is locked down, and `andon doctor` finds the demo plant healthy.
        doctor = subprocess.run(
            andon_command(
                "doctor", "--config", "var/demo/plant.toml", "--provisioned", "var/demo/provisioned"
            ),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "OK   logins enforced: anonymous and wrong-password logins are refused" in (
            doctor.stdout
        )
        assert "OK   boards online: all 12" in doctor.stdout
        # A scan the station cannot take says why, in one line.
        for uid, reader, says in (
            ("04A1B2C3D4E580", "post", "L1/S02 has no 'post' reader; its readers: badge"),
            ("XYZ", "badge", "UID 'XYZ': expected 8, 14 or 20 hex digits"),
        ):
            scan = subprocess.run(
                andon_command(
                    "sim", "scan", "L1", "S02", uid, "--reader", reader, "--state", STATE
                ),
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert scan.returncode == 2 and scan.stderr.count("\n") == 1, scan.stderr
            assert says in scan.stderr
        # A second demo in the same place refuses, naming the first.
        second = subprocess.run(
            andon_command("demo"), cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 2
        assert f"another demo (pid {demo.pid}) runs in var/demo/" in second.stderr
        assert (tmp_path / "var" / "demo" / "andon.db").exists()  # not wiped
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        code = demo.wait(timeout=60)
    finally:
        _stop(demo)
    stderr = demo.stderr.read()
    assert code == 0, stderr
    assert "Traceback" not in stderr and stderr.strip() == ""
    assert any("andon demo: stopped." in x for x in lines)
    assert any("the scenario stopped at step" in x for x in lines)
    assert not (tmp_path / "var" / "demo" / "sim" / "sim.json").exists()  # the line is down


def processes_in(cwd: Path) -> list[str]:
    """The processes running in `cwd` (the demo starts its broker, gateway and boards there)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if (proc / "cwd").resolve() == cwd.resolve():
                found.append((proc / "comm").read_text().strip())
        except (OSError, ValueError):
            continue  # gone meanwhile, a zombie, or not a process
    return found


def test_sigterm_while_starting_stops_everything_cleanly(tmp_path):
    demo, lines = _start_demo(tmp_path)
    try:
        wait_for("the demo starting", lambda: any("starting Mosquitto" in x for x in lines))
        wait_for("its broker", lambda: (tmp_path / "var/demo/broker/mosquitto.log").exists())
        # while it waits for its gateway to come online
        wait_for("its gateway", lambda: (tmp_path / "var/demo/gateway.log").exists())
        demo.send_signal(signal.SIGTERM)
        code = demo.wait(timeout=60)
    finally:
        _stop(demo)
    stderr = demo.stderr.read()
    assert (code, stderr.strip()) == (0, "")
    assert any("stopped while starting" in x for x in lines)
    assert processes_in(tmp_path) == []  # it said so: its Mosquitto and gateway are gone too
    broker_conf = (tmp_path / "var/demo/broker/mosquitto.conf").read_text()
    assert "allow_anonymous false" in broker_conf and "acl_file" in broker_conf


def test_the_live_board_fits_80_by_24():
    from rich.console import Console

    from andon.config import load_plant
    from andon.core import Plant
    from andon.sim.show import board

    plant = load_plant(EXAMPLE)
    view = Plant(plant).view()
    view["now"] = 1_000_000
    call = {"line": "L1", "station": "S03", "cause": "cord", "opened": 1, "acknowledged": None}
    call |= {"acknowledged_by": None, "stopped": None, "stop_at": 60_000}
    view["calls"] = [{**call, "id": f"C-{n:06}"} for n in range(6)]
    lamps = {
        f"{ln['id']}/{s['id']}": {"green": "on"} for ln in view["lines"] for s in ln["stations"]
    }
    log = [
        f"[{n:6.1f}s] a scenario step: ok  (a note long enough to be cut at 80)" * 2
        for n in range(30)
    ]
    console = Console(width=80, height=24, record=True, color_system=None)
    console.print(board(view, lamps, log, plant.zone, 24))
    shown = console.export_text().splitlines()
    assert len(shown) <= 23  # and the cursor's line
    assert max(len(x) for x in shown) <= 80
    assert "L1" in shown[0] and any("and 2 more" in x for x in shown)
    assert "a scenario step" in shown[-1]  # the latest steps fill what room is left
