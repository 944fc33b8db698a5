"""The intake process lives and dies with its gateway (`andon.runtime.intake`).

An intake left behind would hold the gateway's persistent session: a restarted gateway's
intake and the orphan would take the session from each other for ever. An intake that dies
alone must not leave a gateway that looks alive and reads nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from andon.sim.observe import wait_for
from tests.gateway.test_service import Watcher, andon, evt, topic, write_plant_toml

STATUS = "andon/v1/gateway/status"


def intake_of(gateway: subprocess.Popen) -> int:
    """The pid of the gateway's intake process (its one child)."""

    def child() -> int | None:
        children = Path(f"/proc/{gateway.pid}/task/{gateway.pid}/children").read_text().split()
        return int(children[0]) if children else None

    return wait_for("the gateway's intake process", child)


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie no one has reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture
def plant(tmp_path, broker):
    watcher = Watcher(broker)
    procs: list[subprocess.Popen] = []

    def start(**popen) -> tuple[subprocess.Popen, int]:
        watcher.seen.clear()
        config = write_plant_toml(tmp_path, broker)
        procs.append(subprocess.Popen(andon("gateway", "--config", str(config)), **popen))
        watcher.wait_for(lambda t, b: t == STATUS and b.get("online"), timeout=30)
        return procs[-1], intake_of(procs[-1])

    yield start, watcher
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    watcher.close()


def test_a_gateway_killed_takes_its_intake_with_it_and_its_successor_gets_the_session(plant):
    start, watcher = plant
    gateway, intake = start()
    gateway.kill()  # SIGKILL: no stop(), the intake only sees its pipe close
    gateway.wait()
    wait_for("the orphaned intake ended", lambda: gone(intake))
    watcher.publish(topic("S01"), evt(1))  # kept at the broker for the gateway's session
    start()
    watcher.wait_for(lambda t, b: t == topic("S01", "ack") and b["seq"] == 1)


def test_a_dead_intake_stops_its_gateway_loudly(plant):
    start, watcher = plant
    gateway, intake = start()
    os.kill(intake, signal.SIGKILL)
    assert gateway.wait(timeout=30) == 1  # a supervisor (systemd) starts it again
    watcher.wait_for(lambda t, b: t == STATUS and b == {"online": False})


def test_the_intake_leaves_the_signals_of_a_stop_to_its_gateway(plant):
    """systemd's stop and a Ctrl-C reach every process of the gateway's group: the intake
    leaves them to the gateway, which finishes its work, then stops the intake."""
    start, watcher = plant
    gateway, intake = start(start_new_session=True)
    os.kill(intake, signal.SIGTERM)
    os.kill(intake, signal.SIGINT)
    watcher.publish(topic("S01"), evt(1))
    watcher.wait_for(lambda t, b: t == topic("S01", "ack") and b["seq"] == 1)  # still reading
    os.killpg(gateway.pid, signal.SIGTERM)
    assert gateway.wait(timeout=30) == 0
    assert gone(intake)
    watcher.wait_for(lambda t, b: t == STATUS and b == {"online": False})
