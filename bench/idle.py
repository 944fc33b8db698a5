"""An idle board's CPU, and its estimate for an ESP32 (used by bench/firmware.py).

Virtual boards idle (booted, link up, every event acked, nothing pressed, no card on a reader)
while their VM's CPU time is read from /proc: the exact time on CPU (schedstat), split into
user and kernel mode as the kernel accounts it (stat). Kernel time (the VM's poll calls) has
no counterpart on the chip; from the user time the harness's own share is taken apart (the
time spent in the virtual hardware, which the board reports: vdevices.hardware()). What is
left, the firmware's, is scaled to an ESP32 by the ratio of the VM's pystone score, measured
as user CPU, to an ESP32's at 240 MHz: an estimate, as bytecode mixes differ.

The machine is shared, and how fast it runs the VM changes by a third from one minute to the
next (pystone scores of 97k-158k on one VM): a score and an idle time taken apart scale by
different speeds, which made the estimate scatter by 8 points. So they are taken in turns,
each idle window right after its own score, several times over, and the estimate is the
median of the rounds' (each round's own score times its own idle time). CPU time, never wall
time, is what is measured.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from tests.firmware.standin import AckStandIn
from tests.firmware.test_station import (
    BOARD,
    CORD_UP,
    ROOMY_HEAP,
    booted,
    station_config,
    until,
)

from andon.sim.board import VirtualBoard
from andon.sim.mosquitto import Broker, start_broker
from andon.sim.vm import micropython_exe, run_script

ESP32_PYSTONES = 1300  # per second, MicroPython on an ESP32 at 240 MHz (published 1,000-1,600)
PYSTONE = Path(__file__).with_name("pystone.py")
HARDWARE_US_WRAP = 1 << 30  # virtual/vdevices.py
# vdevices.hardware() times what it wraps, but its own entry and exit fall outside that: per
# call, N calls of a timed no-op less N of the same untimed, less what the timed ones counted
# (the median of 5 runs, in us). On the chip hal's calls are C: this is the harness's too.
WRAPPER = """
import time
from vdevices import bench, hardware
from vtest import emit

class Probe:
    def plain(self, a=None, b=None):
        return a
    timed = hardware(plain)

probe = Probe()
N = 20000
runs = []
for _ in range(5):
    t = time.ticks_us()
    for _ in range(N):
        probe.plain()
    plain = time.ticks_diff(time.ticks_us(), t)
    counted, t = bench.hardware_us, time.ticks_us()
    for _ in range(N):
        probe.timed()
    timed = time.ticks_diff(time.ticks_us(), t)
    runs.append((timed - plain - (bench.hardware_us - counted)) / N)
emit(sorted(runs)[2])
"""


def cpu_times(pid: int) -> tuple[float, int, int]:
    """A running process's exact seconds on CPU so far, and its user and kernel clock ticks
    (the kernel's sampled split of that time)."""
    with open(f"/proc/{pid}/schedstat") as f:
        on_cpu_s = int(f.read().split()[0]) / 1e9
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return on_cpu_s, int(fields[11]), int(fields[12])


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


def _idle_board(tmp: Path, broker: Broker, name: str, drop: tuple[str, ...], bits: int):
    """A station board with its own id and station, without the config sections in `drop`."""
    uid = f"{int(BOARD, 16) + len(drop):012X}"
    config = {k: v for k, v in station_config(broker.port).items() if k not in drop}
    config.update(board=uid, station=name)
    return VirtualBoard(tmp / name, config, uid=uid, heap=ROOMY_HEAP, bits=bits)


def wrapper_us(bits: int) -> float:
    """The virtual hardware's timing wrapper, a call, outside what it times (WRAPPER)."""
    with tempfile.TemporaryDirectory() as tmp:
        return max(0.0, run_script(WRAPPER, Path(tmp), bits=bits).data)


def _sample(board: VirtualBoard) -> tuple[int, int, float, float]:
    """The board's time in the virtual hardware (us) and its calls there, its VM's on-CPU
    seconds, the time."""
    hardware = board.call("hardware_us")
    on_cpu = cpu_times(board.proc.pid)[0]
    return hardware["us"], hardware["calls"], on_cpu, time.monotonic()


def _shares(
    start: tuple[int, int, float, float],
    end: tuple[int, int, float, float],
    user: float,
    wrapper: float,
) -> dict[str, float]:
    """Shares of a core between two samples: the VM's user CPU, the harness's, the firmware's.
    user: the share of the VM's CPU in user mode; wrapper: us a hardware call, untimed."""
    window = end[3] - start[3]
    calls = (end[1] - start[1]) % HARDWARE_US_WRAP
    harness = ((end[0] - start[0]) % HARDWARE_US_WRAP + calls * wrapper) / 1e6
    cpu = (end[2] - start[2]) * user
    return {
        "vm_user_percent": 100 * cpu / window,
        "harness_percent": 100 * harness / window,
        "firmware_percent": 100 * max(0.0, cpu - harness) / window,
    }


def _user_share(pid: int) -> float:
    """The share of a VM's CPU in user mode, over its life: the kernel splits it by clock ticks,
    far too few in an idle window (a few dozen in all the rounds: their split scattered by
    20 points), so the boot's count too. It leans to user mode (a boot computes more than it
    sleeps), so the estimate leans high."""
    _, utime, stime = cpu_times(pid)
    return utime / (utime + stime) if utime + stime else 1.0


def idle_rounds(
    bits: int, rounds: int, window_s: float, variants: dict[str, tuple[str, ...]]
) -> dict[str, dict]:
    """Boards idling side by side, one per variant (name -> config sections left out, to see
    what each costs); `rounds` times in turn: the VM's pystone score, then every board's CPU
    over `window_s`. Per variant: each round's shares and score, its ESP32 estimate, and the
    board's wakes a second (vboard's count, over the VM's clock: no machine load in it)."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_broker(Path(tmp) / "broker") as broker,
        AckStandIn(broker),
    ):
        boards = {n: _idle_board(Path(tmp), broker, n, d, bits) for n, d in variants.items()}
        try:
            for board in boards.values():
                board.start(inputs=CORD_UP)
            for board in boards.values():
                booted(board)
                until("boot report acked", lambda b=board: b.status()["outbox"] == 0)
                board.call("heap_sampling_off")
            wrapper = wrapper_us(bits)
            samples: dict[str, list] = {n: [] for n in boards}
            scores = []
            for _ in range(rounds):
                scores.append(pystones(bits))
                start = {n: _sample(b) for n, b in boards.items()}
                time.sleep(window_s)  # the subject is the boards' idle time, not a wait
                for n, b in boards.items():
                    samples[n].append((start[n], _sample(b)))
            out: dict[str, dict] = {}
            for n, b in boards.items():
                user = _user_share(b.proc.pid)
                shares = [_shares(a, z, user, wrapper) for a, z in samples[n]]
                for share, score in zip(shares, scores, strict=True):
                    share["pystones"] = score
                    share["esp32_percent"] = on_esp32(share["firmware_percent"], score)
                out[n] = {"rounds": shares, "user_share": user, "wrapper_us": wrapper}
            for n, b in boards.items():
                out[n]["wakes"] = b.call("wakes", ms=int(window_s * 1000))
        finally:
            for board in boards.values():
                board.stop()
    return out


def on_esp32(vm_cpu: float, vm_pystones: float) -> float:
    """A CPU figure of the VM (a share of a core, or a time) as it would be on an ESP32:
    an estimate, see the module's doc."""
    return vm_cpu * vm_pystones / ESP32_PYSTONES
