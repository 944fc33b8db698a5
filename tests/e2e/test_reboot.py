"""A board of the virtual line that resets itself boots again, as a real board does."""

from __future__ import annotations

import contextlib

from andon.config import load_plant
from andon.sim.board import BoardError
from andon.sim.line import VirtualLine
from andon.sim.observe import wait_for
from tests.e2e.conftest import PLANT


def test_a_board_that_resets_itself_boots_again_from_its_flash(tmp_path, broker):
    plant = load_plant(PLANT)
    config = plant.model_copy(
        update={"broker": plant.broker.model_copy(update={"port": broker.port})}
    )
    with VirtualLine(config, tmp_path / "sim", stations=["L1/S01"]) as line:
        sb = line.at("L1", "S01")
        first = sb.board.proc
        boot = wait_for("booted", lambda: sb.board.status().get("boot"))
        with contextlib.suppress(BoardError):  # it may go before it answers
            sb.board.call("reset_button")  # the board resets itself: its process exits
        wait_for("a new process", lambda: sb.board.proc not in (None, first))
        status = wait_for("booted again", lambda: line.do("status", "L1", "S01").get("boot"))
        assert status > boot
