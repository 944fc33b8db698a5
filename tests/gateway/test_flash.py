"""`andon flash`'s refusals, and the virtual serial board it is tested against (a real
MicroPython VM behind a pty, driven by the real mpremote)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from andon.cli import app
from andon.config import load_plant
from andon.maint.flash import (
    FlashError,
    build_firmware,
    check_mpy,
    flash_board,
    mpremote,
    plan,
    probe,
)
from andon.sim.serial import SerialBoard

BOARD_1, BOARD_2 = "246F28000001", "246F28000002"
PLANT = """
site = "P1"

[broker]
host = "127.0.0.1"
port = {port}

[[lines]]
id = "L1"
name = "Assembly"

[[lines.stations]]
id = "S01"
name = "Frame"
board = "246F28000001"
profile = "esp32-devkitc"

[[lines.stations]]
id = "S02"
name = "Test"
board = "246F28000002"
profile = "esp32-s3-devkitc-1"
"""


@dataclasses.dataclass
class Plant:
    config: Path
    provisioned: Path


def make_plant(tmp_path: Path, broker_port: int = 1883) -> Plant:
    """A two-station plant, provisioned with `andon provision` (as maintenance does)."""
    config = tmp_path / "plant.toml"
    config.write_text(PLANT.format(port=broker_port))
    out = tmp_path / "provisioned"
    done = CliRunner().invoke(app, ["provision", "--config", str(config), "--out", str(out)])
    assert done.exit_code == 0, done.output
    return Plant(config, out)


@pytest.fixture
def plant(tmp_path) -> Plant:
    return make_plant(tmp_path)


@pytest.fixture
def board(tmp_path):
    with SerialBoard(tmp_path / "flash", uid=BOARD_1) as b:
        yield b


@pytest.fixture
def garbage_port():
    """A serial port whose board prints boot-loader noise over and over, never a REPL."""
    host, device = os.openpty()
    os.set_blocking(host, False)
    stop = threading.Event()

    def babble() -> None:
        while not stop.wait(0.05):
            with contextlib.suppress(BlockingIOError):
                os.read(host, 1024)  # whatever mpremote sends goes nowhere
            with contextlib.suppress(BlockingIOError):
                os.write(host, b"\x1b[0;32mI (31) boot: ESP-IDF v5.2 2nd stage\r\n")

    thread = threading.Thread(target=babble, daemon=True)
    thread.start()
    try:
        yield os.ttyname(device)
    finally:
        stop.set()
        thread.join(timeout=5)  # before the close: it reads and writes `host`
        os.close(device)
        os.close(host)


def _flash(plant: Plant, *args: str):
    return CliRunner().invoke(
        app,
        ["flash", "--config", str(plant.config), "--provisioned", str(plant.provisioned), *args],
    )


# --- the virtual serial board -------------------------------------------------------------


def test_virtual_serial_board_speaks_raw_repl_and_resets_like_a_board(board):
    assert mpremote(board.port, "resume", "exec", "print(6 * 7)").strip() == "42"
    # A soft reset from the raw REPL restarts the VM and stays in the raw REPL (no main.py).
    (board.flash / "main.py").write_text("open('booted', 'w').write('yes')\n")
    out = mpremote(board.port, "soft-reset", "exec", "import os; print('booted' in os.listdir())")
    assert out.strip() == "False"
    assert board.resets == 1
    # A hard reset (the firmware's hal.reset()) boots main.py from the flash.
    mpremote(board.port, "resume", "exec", "--no-follow", "import hal; hal.reset()")
    assert mpremote(board.port, "resume", "exec", "print(open('booted').read())").strip() == "yes"
    assert board.resets == 2


# --- refusals -----------------------------------------------------------------------------


def test_a_port_without_a_device_is_named(plant, tmp_path):
    missing = str(tmp_path / "ttyUSB7")
    done = _flash(plant, "--port", missing, "--board", BOARD_1)
    assert done.exit_code == 1
    assert f"{missing}: no device" in done.output


def test_a_board_id_not_in_the_plant_is_refused_before_the_port_is_touched(plant, tmp_path):
    with pytest.raises(FlashError, match=r"board 0000DEADBEEF is not in the plant") as err:
        flash_board(load_plant(plant.config), plant.provisioned, "/nonexistent", "0000DEADBEEF")
    assert BOARD_1 in str(err.value)  # it lists the plant's boards


def test_a_board_that_reports_an_id_not_in_the_plant_is_refused(plant, tmp_path):
    with SerialBoard(tmp_path / "stranger", uid="246F28999999") as stranger:
        with pytest.raises(FlashError, match=r"uid 246F28999999.*not in the plant"):
            flash_board(load_plant(plant.config), plant.provisioned, stranger.port)
        assert not (stranger.flash / "config.json").exists()


def test_a_board_without_micropython_gets_the_esptool_commands(plant, garbage_port):
    done = _flash(plant, "--port", garbage_port, "--board", BOARD_2)  # an ESP32-S3 station
    assert done.exit_code == 1
    assert "does not answer as MicroPython" in done.output
    assert f"esptool.py --chip esp32s3 --port {garbage_port} erase_flash" in done.output
    assert "write_flash -z 0x0 ESP32_GENERIC_S3-<ver>.bin" in done.output


def test_an_incompatible_micropython_is_refused(plant, board):
    firmware = build_firmware(plant.provisioned / "boards" / BOARD_1 / "config.json")
    info = probe(board.port, firmware)
    check_mpy(info, firmware)  # the VM is the MicroPython mpy-cross compiles for
    older = dataclasses.replace(info, mpy=(info.mpy & ~0xFF) | (firmware.mpy - 1))
    with pytest.raises(FlashError, match=rf"loads .mpy v{firmware.mpy - 1}, .* v{firmware.mpy}"):
        check_mpy(older, firmware)
    with pytest.raises(FlashError, match="too old to say"):
        check_mpy(dataclasses.replace(info, mpy=None), firmware)


def test_a_full_filesystem_is_refused_before_copying(plant, board):
    firmware = build_firmware(plant.provisioned / "boards" / BOARD_1 / "config.json")
    info = probe(board.port, firmware)
    assert len(plan(info, BOARD_1, firmware).copy) == len(firmware.files)
    full = dataclasses.replace(info, free=8 * info.block)
    with pytest.raises(FlashError, match=r"filesystem is full: \d+ files need \d+ bytes"):
        plan(full, BOARD_1, firmware)


def test_several_ports_need_all(plant):
    done = _flash(plant, "--port", "/dev/a", "--port", "/dev/b", "--board", BOARD_1)
    assert done.exit_code == 2
    assert "several --port need --all" in done.output
