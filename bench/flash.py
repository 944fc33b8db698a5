"""The outbox on LittleFS with ESP32 flash timing, in the MicroPython VM (bench/firmware.py).

`vfs.VfsLfs2` runs on a block device in RAM whose erase and program calls sleep as an ESP32's
SPI flash takes: a 4 KiB sector erase 30-45 ms, a 256-byte page program 0.5-1 ms. They are
blocking sleeps, because on the chip they block: during an erase or a program the flash cache
is off and both cores wait (ESP-IDF's spi_flash guard), every task and thread alike. So the
time an append or an ack takes is the time the input scan stands still: its stall.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from andon.sim.vm import run_script

APPENDS = 160
ACK_EVERY = 16  # the uplink's window: the gateway acks about that many at once

SCRIPT = """
import os, random, time, vfs
from vtest import emit
random.seed(20261130)
SECTOR = 4096

class Flash:
    # ESP32 SPI flash in RAM: erase (ioctl 6) and program (writeblocks) block as the chip's do.
    def __init__(self, sectors):
        self.mem = bytearray(sectors * SECTOR)
        self.sectors = sectors
        self.erases = 0
    def readblocks(self, n, buf, off=0):
        a = n * SECTOR + off
        buf[:] = memoryview(self.mem)[a:a + len(buf)]
    def writeblocks(self, n, buf, off=0):
        a = n * SECTOR + off
        self.mem[a:a + len(buf)] = buf
        for _ in range((len(buf) + 255) // 256):
            time.sleep_us(random.randint(500, 1000))
    def ioctl(self, op, arg):
        if op == 4:
            return self.sectors
        if op == 5:
            return SECTOR
        if op == 6:
            self.erases += 1
            time.sleep_ms(random.randint(30, 45))
        return 0

flash = Flash(SECTORS)
vfs.VfsLfs2.mkfs(flash)
vfs.mount(vfs.VfsLfs2(flash), "/flash")
os.chdir("/flash")
from andon.outbox import Outbox
ob = Outbox(capacity=400).open()
appends, acks, erases = [], [], []
for i in range(APPENDS):
    e, t = flash.erases, time.ticks_us()
    seq = ob.append(7, "call", {"input": "qual", "reason": "quality"}, 1764460000000 + i, i)
    appends.append(time.ticks_diff(time.ticks_us(), t) / 1000)
    erases.append(flash.erases - e)
    if seq % ACK_EVERY == 0:
        t = time.ticks_us()
        ob.ack(seq)
        acks.append(time.ticks_diff(time.ticks_us(), t) / 1000)
emit({"appends": appends, "acks": acks, "erases": erases})
"""


def flash_stalls(bits: int) -> dict:
    """Milliseconds each outbox append and ack blocks for, on LittleFS with ESP32 timing."""
    source = (
        SCRIPT.replace("SECTORS", "128")
        .replace("APPENDS", str(APPENDS))
        .replace("ACK_EVERY", str(ACK_EVERY))
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = run_script(source, Path(tmp), heap="768K", timeout=300, bits=bits).data
    appends, acks = sorted(data["appends"]), sorted(data["acks"])
    return {
        "append_ms_p50": round(statistics.median(appends), 1),
        "append_ms_max": round(appends[-1], 1),
        "erases_per_append": round(sum(data["erases"]) / len(appends), 2),
        "ack_ms_p50": round(statistics.median(acks), 1),
        "ack_ms_max": round(acks[-1], 1),
        "worst_stall_ms": round(max(appends[-1], acks[-1]), 1),
    }
