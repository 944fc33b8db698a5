"""Outbox figures, measured in the MicroPython VM on this machine's disk.

Prints the cost of an append, of recovery (open) and of streaming a full outbox,
the flash it takes, the live heap while streaming, and the smallest heap that still
recovers and streams it, with the modules compiled from source (as the tests load
them) and from .mpy (as a board should carry them). The host's disk is not an
ESP32's flash: read the times as relative costs. Ends with one JSON line.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from andon.firmware_build import FIRMWARE, compile_tree
from andon.sim.vm import VMError, run_script

DEPTH = 400

FILL = f"""
import os, time
from andon.outbox import Outbox
from vtest import emit
ob = Outbox().open()
t = time.ticks_us()
for i in range({DEPTH}):
    uid = "04A1B2C3D4E5%02X" % (i % 256)
    ob.append(7, "scan", {{"reader": "post", "role": "post", "uid": uid}}, 1764190000000 + i, i)
us = time.ticks_diff(time.ticks_us(), t)
names = [n for n in os.listdir("outbox") if n.endswith(".seg")]
emit({{"append_us": us / {DEPTH}, "files": len(names),
      "bytes": sum(os.stat("outbox/" + n)[6] for n in names)}})
"""

STREAM = """
import sys
if PRECOMPILED:
    sys.path.insert(0, "mpy")
import gc, time
from vdevices import bench
from andon.outbox import Outbox
from vtest import emit
gc.collect()
bench.heap_peak = 0
t = time.ticks_us()
ob = Outbox().open()
opened = time.ticks_diff(time.ticks_us(), t)
t = time.ticks_us()
n = 0
for rec in ob.records():
    n += 1
    if LIVE:
        gc.collect()
        bench.sample_heap()
streamed = time.ticks_diff(time.ticks_us(), t)
emit({"open_ms": opened / 1000, "stream_us": streamed / max(n, 1), "records": n})
"""


def stream(flash: Path, heap: str, precompiled: bool, live: bool):
    return run_script(f"PRECOMPILED = {precompiled}\nLIVE = {live}\n" + STREAM, flash, heap=heap)


def precompile(flash: Path) -> None:
    """The firmware's modules as .mpy files in the flash's mpy/ directory."""
    compile_tree(FIRMWARE / "lib", flash / "mpy")


def smallest_heap(flash: Path, precompiled: bool) -> int:
    """The smallest heap, in KB, at which a full outbox still opens and streams."""
    for kb in range(8, 65, 2):
        try:
            if stream(flash, f"{kb}K", precompiled, live=False).data["records"] == DEPTH:
                return kb
        except VMError:
            continue
    raise RuntimeError("the outbox does not stream under a 64K heap")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        flash = Path(tmp)
        fill = run_script(FILL, flash).data
        precompile(flash)
        timed = stream(flash, "64K", precompiled=True, live=False).data
        live = stream(flash, "64K", precompiled=True, live=True)
        figures = {
            "depth": DEPTH,
            "append_us": round(fill["append_us"], 1),
            "flash_bytes_per_record": round(fill["bytes"] / DEPTH, 1),
            "segment_files": fill["files"],
            "open_ms": round(timed["open_ms"], 2),
            "stream_us_per_record": round(timed["stream_us"], 1),
            "stream_live_heap_peak": live.heap_peak,
            "smallest_heap_kb_mpy": smallest_heap(flash, precompiled=True),
            "smallest_heap_kb_source": smallest_heap(flash, precompiled=False),
        }
    for name, value in figures.items():
        print(f"{name:>24}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
