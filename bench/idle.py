"""An idle board's CPU, and its estimate for an ESP32 (used by bench/firmware.py).

A virtual board idles (booted, link up, every event acked, nothing pressed, no card on a
reader) while its VM's CPU time is read from /proc: the exact time on CPU (schedstat), split
into user and kernel mode as the kernel accounts it (stat). Kernel time (the VM's poll calls)
has no counterpart on the chip; from the user time the harness's own share is taken apart
(the time spent in the virtual hardware, which the board reports: vdevices.hardware()). What is
left, the firmware's, is scaled to an ESP32 by the ratio of the VM's pystone score, measured in
the same run as user CPU, to an ESP32's at 240 MHz: an estimate, as bytecode mixes differ.
The machine is shared: CPU time, never wall time, is what is measured.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from tests.firmware.standin import AckStandIn
from tests.firmware.test_station import (
    CORD_UP,
    ROOMY_HEAP,
    booted,
    station_config,
    until,
    vboard,
)

from andon.sim.mosquitto import start_broker
from andon.sim.vm import micropython_exe

ESP32_PYSTONES = 1300  # per second, MicroPython on an ESP32 at 240 MHz (published 1,000-1,600)
PYSTONE = Path(__file__).with_name("pystone.py")
HARDWARE_US_WRAP = 1 << 30  # virtual/vdevices.py


def user_cpu_s(pid: int) -> float:
    """User-mode CPU seconds of a running process so far."""
    with open(f"/proc/{pid}/schedstat") as f:
        on_cpu_s = int(f.read().split()[0]) / 1e9
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return on_cpu_s * (utime / (utime + stime) if utime + stime else 1.0)


def pystones(bits: int, loops: int = 50000) -> float:
    """The VM's pystones per second of user CPU (the process's own, from wait4)."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "pystone.py"
        script.write_text(PYSTONE.read_text() + f"\npystones({loops})\n")
        proc = subprocess.Popen([micropython_exe(bits), str(script)])
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"pystone failed in the {bits}-bit VM")
    return loops / usage.ru_utime


def idle_cpu(bits: int, seconds: float, drop: tuple[str, ...] = ()) -> dict[str, float]:
    """Shares of a core an idle board takes over `seconds`: the firmware's, the harness's.
    drop: config sections left out ("rfid", "light"), to see what each costs."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_broker(Path(tmp) / "broker") as broker,
        AckStandIn(broker),
    ):
        config = {k: v for k, v in station_config(broker.port).items() if k not in drop}
        board = vboard(Path(tmp) / "flash", config, ROOMY_HEAP, bits=bits)
        try:
            board.start(inputs=CORD_UP)
            booted(board)
            until("boot report acked", lambda: board.status()["outbox"] == 0)
            pid = board.proc.pid
            hw0, cpu0, t0 = board.call("hardware_us")["us"], user_cpu_s(pid), time.monotonic()
            time.sleep(seconds)  # the bench's subject is the board's idle time, not a wait
            hw1, cpu1, t1 = board.call("hardware_us")["us"], user_cpu_s(pid), time.monotonic()
        finally:
            board.stop()
    window = t1 - t0
    harness = (hw1 - hw0) % HARDWARE_US_WRAP / 1e6
    return {
        "vm_user_percent": 100 * (cpu1 - cpu0) / window,
        "harness_percent": 100 * harness / window,
        "firmware_percent": 100 * max(0.0, cpu1 - cpu0 - harness) / window,
    }


def on_esp32(vm_cpu: float, vm_pystones: float) -> float:
    """A CPU figure of the VM (a share of a core, or a time) as it would be on an ESP32:
    an estimate, see the module's doc."""
    return vm_cpu * vm_pystones / ESP32_PYSTONES
