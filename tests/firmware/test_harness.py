"""The VM harness itself: real MicroPython, fake pins, heap limits and structured results."""

import pytest

from andon.sim.vm import VMError


def test_runs_in_micropython_not_cpython(mpy):
    result = mpy.run("import sys\nfrom vtest import emit\nemit(sys.implementation.name)")
    assert result.data == "micropython"


def test_test_drives_inputs_and_reads_outputs(mpy):
    result = mpy.run(
        """
import hal
from vdevices import bench
from vtest import emit
cord = hal.Pin(4, hal.Pin.IN, hal.Pin.PULL_UP)
lamp = hal.Pin(16, hal.Pin.OUT)
seen = [cord.value()]          # pulled up, nothing driving it
bench.drive(4, 0)
seen.append(cord.value())      # the test pulls it low
lamp.value(1)
emit({"inputs": seen, "lamp": bench.output(16)})
"""
    )
    assert result.data == {"inputs": [1, 0], "lamp": 1}


def test_machine_signal_works_on_fake_pins(mpy):
    # The firmware uses machine.Signal for active-low outputs: it must wrap our PinBase pins.
    result = mpy.run(
        """
import hal, machine
from vdevices import bench
from vtest import emit
relay = machine.Signal(hal.Pin(17, hal.Pin.OUT), invert=True)
relay.on()
on = bench.output(17)
relay.off()
emit([on, bench.output(17)])
"""
    )
    assert result.data == [0, 1]


def test_spi_reaches_the_device_whose_chip_select_is_low(mpy):
    result = mpy.run(
        """
import hal
from vdevices import bench
from vtest import emit

class Echo:
    def __init__(self, tag): self.tag = tag; self.selects = 0
    def select(self): self.selects += 1
    def deselect(self): pass
    def transfer(self, out): return bytes([self.tag ^ b for b in out])

a, b = Echo(0x10), Echo(0x20)
bench.attach(5, a); bench.attach(15, b)
cs_a = hal.Pin(5, hal.Pin.OUT, value=1); cs_b = hal.Pin(15, hal.Pin.OUT, value=1)
spi = hal.SPI(1)
buf = bytearray(2)
cs_b.value(0); spi.write_readinto(b"\\x01\\x02", buf); cs_b.value(1)
idle = spi.read(1)
emit({"rx": list(buf), "idle": list(idle), "selects": [a.selects, b.selects]})
"""
    )
    assert result.data == {"rx": [0x21, 0x22], "idle": [0xFF], "selects": [0, 1]}


def test_heap_limit_is_real_and_peak_is_reported(mpy):
    script = """
from vdevices import bench
from vtest import emit
blob = bytearray(40 * 1024)
bench.sample_heap()
emit(len(blob))
"""
    result = mpy.run(script, heap="256K")
    assert result.data == 40 * 1024
    assert result.heap_peak >= 40 * 1024
    assert result.heap_total <= 256 * 1024
    with pytest.raises(VMError, match="MemoryError"):
        mpy.run(script, heap="32K")


def test_a_crash_is_reported_with_its_traceback(mpy):
    with pytest.raises(VMError, match="ZeroDivisionError"):
        mpy.run("x = 1 / 0")


def test_scripts_run_in_the_boards_own_flash_directory(mpy):
    result = mpy.run(
        """
from vtest import emit
with open("boot.count", "w") as f:
    f.write("3")
emit(open("boot.count").read())
"""
    )
    assert result.data == "3"
    assert (mpy.flash / "boot.count").read_text() == "3"
