"""An idle station's firmware counted in instructions (valgrind's callgrind), and pystone too, so
that its ESP32 estimate does not depend on the machine's load (used by bench/firmware.py).

The CPU time bench/idle.py measures changes with what else the machine runs, and the wakes of
an idle board run with cold caches, which a hot pystone loop does not: instructions count the
same on a busy machine and an idle one, and per wake as per pystone. Here the firmware runs as
a board boots it (andon.app.Station, link up, every event acked) on the virtual hal with its
pins and SPI bus stubbed to a bare minimum (levels and registers in a dict, no heap sampling,
no chip model): what is counted is the firmware, asyncio, the VM and libc, and a few
instructions a register access of stub. Scaled by callgrind's count of a pystone against an
ESP32's 1,300 pystones/s, it is an estimate too: a lower bound, as the chip's own caches (its
code runs from flash through one) miss too.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bench.idle import ESP32_PYSTONES, PYSTONE
from tests.firmware.standin import AckStandIn
from tests.firmware.test_station import station_config

from andon.sim.mosquitto import start_broker
from andon.sim.vm import compiled_paths, micropython_exe, vm_env

HEAP = "256K"
# The station as a board boots it, on stubbed hardware; once idle it says so, counts its
# readers' polls over WINDOW_MS of its clock, says so again, and idles on.
IDLE = """
import asyncio, json, time
import hal
from vdevices import bench
from andon import app, config

REGS = bytearray(64)  # the readers' MFRC522 registers, as writes left them
REGS[0x37] = 0x92  # VersionReg
STICKY = (0x01, 0x04)  # CommandReg and ComIrqReg: idle, and the timer fired

def value(self, v=None, _=None):
    if v is None:
        return bench.level(self.id)

def write_readinto(self, tx, rx):
    rx[1] = REGS[tx[0] >> 1 & 0x3F]
    if tx[0] >> 1 & 0x3F == 0x04:
        rx[1] = 0x01

def write(self, tx, _=None):
    if tx[0] >> 1 not in STICKY:
        REGS[tx[0] >> 1] = tx[1]

hal.Pin.value, hal.SPI.write_readinto, hal.SPI.write = value, write_readinto, write
bench.wifi_started = True
bench.inputs[4] = 0  # the cord's NC loop closed: not pulled
with open("config.json") as f:
    station = app.start(config.validate(json.load(f)))

def polls():
    return sum(r.polls for r in station.readers.all) if station.readers else 0

async def main():
    asyncio.create_task(station.run(hal.WDT(timeout=8000)))
    while not (station.link.state == "up" and station.outbox.depth == 0):
        await asyncio.sleep_ms(100)
    await asyncio.sleep_ms(1000)
    print("IDLE")
    polled, t = polls(), time.ticks_ms()
    await asyncio.sleep_ms(WINDOW_MS)
    print("DONE", json.dumps({"ms": time.ticks_diff(time.ticks_ms(), t),
                              "polls": polls() - polled}))
    await asyncio.sleep_ms(1000000)

asyncio.run(main())
"""


def have_valgrind() -> bool:
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def _total(out: Path) -> int:
    """The instructions a callgrind output file counted."""
    m = re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(), re.M)
    if m is None:
        raise RuntimeError(f"no instruction count in {out}")
    return int(m.group(1))


def _callgrind(bits: int, out: Path, *args: str) -> list[str]:
    """The VM under callgrind, its count to `out` (and a dump's to `out`.N)."""
    return [
        "valgrind",
        "-q",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        micropython_exe(bits),
        *args,
    ]


def pystone_instructions(bits: int, loops: tuple[int, int] = (500, 1500)) -> float:
    """Instructions a pystone takes in the VM: two runs' difference, the VM's start apart."""
    counts = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in loops:
            script, out = Path(tmp) / f"pystone{n}.py", Path(tmp) / f"pystone{n}.callgrind"
            script.write_text(PYSTONE.read_text() + f"\npystones({n})\n")
            proc = subprocess.run(_callgrind(bits, out, str(script)), capture_output=True)
            if proc.returncode:
                raise RuntimeError(f"pystone under callgrind failed: {proc.stderr[-500:]!r}")
            counts.append(_total(out))
    return (counts[1] - counts[0]) / (loops[1] - loops[0])


def _line(proc: subprocess.Popen, mark: str, timeout: float) -> str:
    """The VM's next stdout line starting with `mark` (earlier ones are the firmware's log)."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the VM under callgrind ended before {mark}")
        if line.startswith(mark):
            return line[len(mark) :].strip()
    raise RuntimeError(f"no {mark!r} from the VM under callgrind in {timeout:.0f} s")


def idle_instructions(bits: int, window_s: float, drop: tuple[str, ...] = ()) -> dict:
    """An idle station's instructions a second over `window_s`, and its readers' polls."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_broker(Path(tmp) / "broker") as broker,
        AckStandIn(broker),
    ):
        flash = Path(tmp) / "flash"
        flash.mkdir()
        config = {k: v for k, v in station_config(broker.port).items() if k not in drop}
        (flash / "config.json").write_text(json.dumps(config))
        script = flash / "idle.py"
        script.write_text(IDLE.replace("WINDOW_MS", str(int(window_s * 1000))))
        out = flash / "idle.callgrind"
        command = _callgrind(bits, out, "-X", f"heapsize={HEAP}", str(script))
        proc = subprocess.Popen(
            command,
            cwd=flash,
            env=vm_env(compiled_paths()),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            _line(proc, "IDLE", 180)
            _control("-z", proc.pid)  # counts from now on
            start = time.monotonic()
            done = json.loads(_line(proc, "DONE", window_s + 60))
            _control("-d", proc.pid)  # to out.1: what was counted since -z
            seconds = time.monotonic() - start  # both ends idle: their lag counts as idle
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        count = _total(out.with_name(out.name + ".1"))
    polls = done["polls"] / (done["ms"] / 1000)
    return {"per_s": count / seconds, "rfid_polls_per_s": polls}


def _control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True)


def on_esp32_by_instructions(per_s: float, per_pystone: float) -> float:
    """Instructions a second of the VM as a share of an ESP32 (%): an estimate, see above."""
    return 100 * per_s / per_pystone / ESP32_PYSTONES
