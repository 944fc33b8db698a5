"""Fixtures shared by every test: the MicroPython VM and a real Mosquitto broker."""

from __future__ import annotations

import pytest

from andon.sim.mosquitto import Broker, start_broker
from andon.sim.vm import VMResult, run_script


class MicroPython:
    """Runs MicroPython scripts with the virtual board's hardware, in a flash dir of their own."""

    def __init__(self, flash):
        self.flash = flash

    def run(
        self, source: str, heap: str = "256K", timeout: float = 60.0, bits: int = 64
    ) -> VMResult:
        """bits=32: the 32-bit VM, whose objects are the size an ESP32's are (andon.sim.vm)."""
        return run_script(source, self.flash, heap=heap, timeout=timeout, bits=bits)


@pytest.fixture
def mpy(tmp_path) -> MicroPython:
    flash = tmp_path / "flash"
    flash.mkdir()
    return MicroPython(flash)


@pytest.fixture
def broker(tmp_path) -> Broker:
    with start_broker(tmp_path / "broker") as b:
        yield b
