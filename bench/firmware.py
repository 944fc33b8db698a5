"""Station firmware figures, from the MicroPython VM on this machine: the 64-bit unix port and
the 32-bit one (../shared/tools/micropython-i386), whose objects are the size an ESP32's are.

Prints, on each VM: the heap the loaded code takes (each firmware module as .mpy, and the virtual
bench beside it); for the full-outbox scenario (tests/firmware/test_station.py: 4 inputs, 2 RFID
readers, a tower, 400 events pending) its live heap and the smallest `-X heapsize` it still passes
at (bisection); on the 32-bit VM also the smallest heap share the firmware passes in when the
virtual hardware gets its own on top (`firmware_heap`: what an ESP32's heap must hold); the cost
of one input scan pass; an idle board's CPU (bench/idle.py: the firmware's share apart from the
harness's, and as an estimated share of an ESP32 by pystone scores, the median of rounds each
scaled by its own score; and the board's wakes a second, which no machine load changes); the
flash stalls of the
outbox on LittleFS with ESP32 flash timing (bench/flash.py); an RFID tag's placement to its scan
event (the shortest tap a reader always catches); and pin-edge-to-PUBLISH latency on loopback.
Ends with one JSON line. Run from the repository root:
`.venv/bin/python -m bench.firmware [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.flash import flash_stalls
from bench.idle import idle_rounds, on_esp32
from bench.instructions import (
    have_valgrind,
    idle_instructions,
    on_esp32_by_instructions,
    pystone_instructions,
)
from tests.firmware.paho_watch import Watcher
from tests.firmware.standin import AckStandIn
from tests.firmware.test_station import (
    BOARD,
    CORD_UP,
    ESP32_VM_HEAP,
    ROOMY_HEAP,
    STATION,
    full_outbox_scenario,
    link_up,
    station_config,
    vboard,
)

from andon.firmware_build import FIRMWARE
from andon.sim.board import BoardError
from andon.sim.mosquitto import start_broker
from andon.sim.vm import compiled_paths, run_script

DEBOUNCE_MS = 20  # the default, as station_config leaves it
HIGH_KB = 256
VMS = (64, 32)

SCAN = """
import gc, time
from andon.inputs import Inputs
from vdevices import bench
from vtest import emit
cfg = [{"name": n, "role": r, "pin": p, "pull": "up", "active": a, "debounce_ms": 20, "adc": None}
       for n, r, p, a in (("cord", "cord", 4, 1), ("qual", "call_quality", 17, 0),
                          ("ack", "ack", 21, 0), ("cycle", "cycle", 22, 0))]
ins = Inputs(cfg, lambda kind, data, ticks: None)
N = 2000
gc.collect()
before = gc.mem_alloc()
hw = bench.hardware_us
t = time.ticks_us()
for i in range(N):
    ins.scan(i)
us = time.ticks_diff(time.ticks_us(), t) - (bench.hardware_us - hw)
emit({"scan_us": us / N, "alloc_bytes_per_pass": (gc.mem_alloc() - before) / N})
"""

# Two readers as on a station (default period, one bus lock); tags placed on the first at
# random moments of its poll cycle, each lifted once scanned: placement to scan event, in ms.
# A 7-byte UID (two cascade levels, as most badges and NTAG cards): the longest common read.
TAP = """
import asyncio, random, time, hal
from vdevices import bench
from vtest import emit
from mfrc522_model import MFRC522 as Model
from andon.mfrc522 import MFRC522
from andon.rfid import Reader, Readers, PERIOD_MS

scans = []
def sink(kind, data, ticks):
    if kind == "scan":
        scans.append(ticks)

async def main():
    spi = hal.SPI(2)
    tray = Model()
    readers = []
    for cs, model in ((5, tray), (15, Model())):
        bench.attach(cs, model)
        readers.append(Reader(str(cs), "badge", MFRC522(spi, hal.Pin(cs, hal.Pin.OUT, value=1))))
    task = asyncio.create_task(Readers(readers).run(sink))
    random.seed(1)
    out = []
    for i in range(PLACEMENTS):
        await asyncio.sleep_ms(random.randint(0, PERIOD_MS))
        uid = bytes((0x04, i, 0xA1, 0xB2, 0xC3, 0xD4, 0x80))
        tray.place(uid)
        placed = time.ticks_ms()
        while len(scans) == i:
            await asyncio.sleep_ms(10)  # the scan's own ticks are measured, not this wait
        out.append(time.ticks_diff(scans[i], placed))
        tray.remove(uid)
    task.cancel()
    emit({"ms": out, "period_ms": PERIOD_MS})

asyncio.run(main())
"""


# Every firmware module, the validator first and alone (andon.startup drops it).
RUNTIME = sorted((FIRMWARE / "lib" / "andon").glob("*.py"))
FIRMWARE_MODULES = (
    "andon.config",
    *(f"andon.{p.stem}" for p in RUNTIME if p.stem not in ("__init__", "config")),
)
BENCH_MODULES = ("hal", "vdevices", "mfrc522_model")  # vboard runs when imported: not here

CODE = """
import gc, sys
sys.path[:0] = PATHS
gc.collect()
sizes = {}
def load(name):
    before = gc.mem_alloc()
    __import__(name)
    gc.collect()
    sizes[name] = gc.mem_alloc() - before
load("asyncio")
for name in BENCH + FIRMWARE:
    load(name)
    if name == "andon.config":  # as andon.startup does: its heap is given back
        del sys.modules[name]
        import andon
        del andon.config
        gc.collect()
from vtest import emit
emit(sizes)
"""


def code_heap(bits: int) -> dict[str, int]:
    """Heap each module's code takes once imported from .mpy (after gc), in bytes."""
    paths = [str(p) for p in compiled_paths()]
    source = CODE.replace("PATHS", repr(paths)).replace("BENCH", repr(BENCH_MODULES))
    with tempfile.TemporaryDirectory() as tmp:
        source = source.replace("FIRMWARE", repr(FIRMWARE_MODULES))
        return run_script(source, Path(tmp), bits=bits).data


def scenario(heap_kb: int, bits: int, firmware_kb: int | None = None) -> dict | None:
    """The scenario's last status at this heap (or firmware share), or None when it failed."""
    heap = f"{heap_kb}K" if firmware_kb is None else ESP32_VM_HEAP
    firmware_heap = None if firmware_kb is None else firmware_kb * 1024
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_broker(Path(tmp) / "broker") as broker,
        AckStandIn(broker, acking=False) as standin,
    ):
        try:
            return full_outbox_scenario(
                Path(tmp), broker, standin, heap, bits=bits, firmware_heap=firmware_heap
            )
        except (AssertionError, BoardError, OSError):  # OSError: the board died mid-call
            return None


def smallest_kb(passes, low: int, high: int, step: int) -> int | None:
    """Bisection in `step` KB steps over [low, high] for the smallest size `passes`; None if
    even `high` fails."""
    if not passes(high):
        return None
    lo, hi = low - step, high  # lo fails (or is below the range), hi passes
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        ok = passes(mid)
        print(f"  {mid}K: {'passes' if ok else 'fails'}", flush=True)
        lo, hi = (lo, mid) if ok else (mid, hi)
    return hi


def latency_ms(edges: int) -> list[float]:
    """Pin edge (control port write) to the subscriber holding the event, per edge."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_broker(Path(tmp) / "broker") as broker,
        AckStandIn(broker),
        Watcher(broker, STATION + "/evt", client_id="latency") as watcher,
    ):
        board = vboard(Path(tmp) / "flash", station_config(broker.port), ROOMY_HEAP)
        try:
            board.start(inputs=CORD_UP)
            link_up(board)
            # seq 1 is the cord's state at boot: the edges follow it
            watcher.wait(lambda m: json.loads(m[1])["seq"] == 1)
            out = []
            for edge in range(1, edges + 1):
                t0 = time.perf_counter()
                board.set_input("cord", edge % 2 == 1)
                watcher.wait(lambda m, n=edge + 1: json.loads(m[1])["seq"] == n)
                out.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.01)
            return out
        finally:
            board.stop()


def heap_figures(bits: int, step: int) -> dict:
    code = code_heap(bits)
    runtime = sum(code[m] for m in FIRMWARE_MODULES if m != "andon.config")
    bench_code = sum(code[m] for m in BENCH_MODULES)
    print(
        f"[{bits}-bit] code in the heap (.mpy): firmware runtime {runtime} B, asyncio "
        f"{code['asyncio']} B, the validator alone at boot {code['andon.config']} B, the "
        f"virtual bench {bench_code} B",
        flush=True,
    )
    roomy = scenario(int(ROOMY_HEAP[:-1]), bits)
    if roomy is None:
        raise SystemExit(f"the scenario fails even at {ROOMY_HEAP} on the {bits}-bit VM")
    print(f"[{bits}-bit] live heap after the scenario (after gc): {roomy['heap_live']} B")
    print(f"[{bits}-bit] smallest -X heapsize, firmware and virtual hardware together:")
    smallest = smallest_kb(lambda kb: scenario(kb, bits) is not None, 64, HIGH_KB, step)
    print(f"[{bits}-bit] smallest heapsize it passes at: {smallest}K", flush=True)
    return {
        "code_heap_bytes": {
            "firmware_runtime": runtime,
            "asyncio": code["asyncio"],
            "validator_at_boot": code["andon.config"],
            "virtual_bench": bench_code,
        },
        "scenario_heap_live_bytes": roomy["heap_live"],
        "smallest_heapsize_kb": smallest,
    }


def firmware_share(step: int) -> dict:
    """On the 32-bit VM: the smallest heap the firmware passes in, the hardware's on top."""
    print("[32-bit] smallest firmware heap share, the virtual hardware's on top:")
    smallest = smallest_kb(lambda kb: scenario(0, 32, kb) is not None, 40, 96, step)
    at = scenario(0, 32, smallest) if smallest else None
    shares = at["heap_shares"] if at else {"reserved": 0, "hardware": 0}
    live = at["heap_live"] - shares["reserved"] - shares["hardware"] if at else None
    print(
        f"[32-bit] the firmware passes in {smallest}K (live {live} B after the scenario; "
        f"the virtual hardware took {shares['hardware']} B more)",
        flush=True,
    )
    return {
        "smallest_firmware_heap_kb_32bit": smallest,
        "firmware_heap_live_bytes_32bit": live,
        "virtual_hardware_heap_bytes_32bit": shares["hardware"],
    }


def tag_figures(bits: int, placements: int) -> dict:
    """Placement to scan event over `placements` tags placed at random moments: its max is
    the shortest tap always caught (a tag must lie on the reader until its read ends)."""
    with tempfile.TemporaryDirectory() as tmp:
        source = TAP.replace("PLACEMENTS", str(placements))
        data = run_script(source, Path(tmp), bits=bits, timeout=placements * 2 + 30).data
    ms = sorted(data["ms"])
    print(
        f"[{bits}-bit] tag placed to scan event over {len(ms)} placements (poll period "
        f"{data['period_ms']} ms): p50 {statistics.median(ms):.0f} ms, max {ms[-1]} ms",
        flush=True,
    )
    return {
        "tag_to_scan_ms_p50": statistics.median(ms),
        "tag_to_scan_ms_max": ms[-1],
        "rfid_period_ms": data["period_ms"],
    }


def instruction_figures(bits: int, window_s: float) -> dict:
    """The idle station's firmware in instructions (bench/instructions.py): no machine load in
    it. None without valgrind."""
    if not have_valgrind():
        print(f"[{bits}-bit] no valgrind (apt-get install -y valgrind): no instruction figures")
        return dict.fromkeys(
            (
                "idle_instructions_per_s",
                "idle_esp32_percent_by_instructions",
                "idle_esp32_percent_by_instructions_without_rfid",
                "pystone_instructions",
            )
        )
    per_pystone = pystone_instructions(bits)
    station = idle_instructions(bits, window_s)
    bare = idle_instructions(bits, window_s, drop=("rfid",))
    esp32 = on_esp32_by_instructions(station["per_s"], per_pystone)
    esp32_bare = on_esp32_by_instructions(bare["per_s"], per_pystone)
    print(
        f"[{bits}-bit] idle station on stubbed hardware, counted by callgrind: "
        f"{station['per_s'] / 1e6:.2f} M instructions/s ({station['rfid_polls_per_s']:.1f} RFID "
        f"polls/s), {bare['per_s'] / 1e6:.2f} M without the readers; a pystone "
        f"{per_pystone / 1e3:.1f} k instructions: ~ {esp32:.1f} % of an ESP32 "
        f"({esp32_bare:.1f} % without the readers; an estimate, a lower bound)",
        flush=True,
    )
    return {
        "idle_instructions_per_s": round(station["per_s"]),
        "idle_esp32_percent_by_instructions": round(esp32, 2),
        "idle_esp32_percent_by_instructions_without_rfid": round(esp32_bare, 2),
        "pystone_instructions": round(per_pystone),
    }


def _median(rounds: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def cpu_figures(bits: int, rounds: int, window_s: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        scan = run_script(SCAN, Path(tmp), bits=bits).data
    idle = idle_rounds(bits, rounds, window_s, {"S1": (), "S2": ("rfid",)})
    station, bare = idle["S1"]["rounds"], idle["S2"]["rounds"]  # S2: the readers apart
    score = _median(station, "pystones")
    esp32 = sorted(r["esp32_percent"] for r in station)
    esp32_bare = sorted(r["esp32_percent"] for r in bare)
    wakes, wakes_bare = idle["S1"]["wakes"], idle["S2"]["wakes"]
    print(
        f"[{bits}-bit] idle board, {rounds} rounds of {window_s:.0f} s, each after its own "
        f"pystone score (medians): {score:.0f} pystones/s of user CPU (from "
        f"{min(r['pystones'] for r in station):.0f} to {max(r['pystones'] for r in station):.0f}"
        f"); VM {_median(station, 'vm_user_percent'):.3f} % user CPU "
        f"({100 * idle['S1']['user_share']:.0f} % of its CPU), of which the virtual hardware "
        f"{_median(station, 'harness_percent'):.3f} % (its timing wrapper's "
        f"{idle['S1']['wrapper_us']:.2f} us a call included), the firmware "
        f"{_median(station, 'firmware_percent'):.3f} % ~ {statistics.median(esp32):.1f} % of "
        f"an ESP32 (estimate; rounds from {esp32[0]:.1f} to {esp32[-1]:.1f}); "
        f"{wakes['per_s']:.1f} wakes/s, {wakes['rfid_polls_per_s']:.1f} RFID polls/s",
        flush=True,
    )
    print(
        f"[{bits}-bit] idle without the RFID readers: firmware "
        f"{_median(bare, 'firmware_percent'):.3f} % ~ {statistics.median(esp32_bare):.1f} % of "
        f"an ESP32 (estimate; rounds from {esp32_bare[0]:.1f} to {esp32_bare[-1]:.1f}); "
        f"{wakes_bare['per_s']:.1f} wakes/s",
        flush=True,
    )
    print(
        f"[{bits}-bit] scan pass {scan['scan_us']:.1f} us ~ "
        f"{on_esp32(scan['scan_us'], score):.0f} us on an ESP32 (estimate), "
        f"{scan['alloc_bytes_per_pass']} B/pass",
        flush=True,
    )
    return {
        **instruction_figures(bits, window_s),
        "pystones": round(score),
        "idle_cpu_percent": round(_median(station, "firmware_percent"), 4),
        "idle_harness_cpu_percent": round(_median(station, "harness_percent"), 4),
        "hardware_wrapper_us": round(idle["S1"]["wrapper_us"], 2),
        "idle_esp32_percent": round(statistics.median(esp32), 1),
        "idle_esp32_percent_range": [round(esp32[0], 1), round(esp32[-1], 1)],
        "idle_esp32_percent_without_rfid": round(statistics.median(esp32_bare), 1),
        "idle_rounds": rounds,
        "idle_wakes_per_s": round(wakes["per_s"], 1),
        "idle_wakes_per_s_without_rfid": round(wakes_bare["per_s"], 1),
        "idle_rfid_polls_per_s": round(wakes["rfid_polls_per_s"], 1),
        "scan_pass_us": round(scan["scan_us"], 2),
        "scan_pass_esp32_us": round(on_esp32(scan["scan_us"], score)),
        "scan_alloc_bytes_per_pass": scan["alloc_bytes_per_pass"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="coarser bisection, shorter runs")
    args = parser.parse_args()
    step, edges, placements = (8, 40, 15) if args.quick else (4, 120, 50)
    rounds, window_s = (4, 2.0) if args.quick else (8, 3.0)
    out: dict = {"board": BOARD}
    for bits in VMS:
        suffix = "" if bits == 64 else "_32bit"
        out.update({k + suffix: v for k, v in heap_figures(bits, step).items()})
        out.update({k + suffix: v for k, v in cpu_figures(bits, rounds, window_s).items()})
        out.update({k + suffix: v for k, v in tag_figures(bits, placements).items()})
    out.update(firmware_share(step))
    stalls = flash_stalls(32)
    print(
        f"[32-bit] outbox on LittleFS with ESP32 flash timing: append p50 "
        f"{stalls['append_ms_p50']} ms, max {stalls['append_ms_max']} ms "
        f"({stalls['erases_per_append']} sector erases each), ack max {stalls['ack_ms_max']} ms:"
        f" the scan's worst stall {stalls['worst_stall_ms']} ms (debounce {DEBOUNCE_MS} ms)",
        flush=True,
    )
    out["flash_stall"] = {**stalls, "debounce_ms": DEBOUNCE_MS}
    lat = sorted(latency_ms(edges))
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(
        f"pin edge to PUBLISH over {len(lat)} edges: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {lat[-1]:.1f} ms (debounce {DEBOUNCE_MS} ms included)"
    )
    out["edge_to_publish_ms"] = {
        "p50": round(p50, 2),
        "p99": round(p99, 2),
        "max": round(lat[-1], 2),
        "edges": len(lat),
        "debounce_ms": DEBOUNCE_MS,
    }
    out["estimates"] = (
        "*_esp32_*: the VM's CPU scaled by its pystones to an ESP32's 1,300/s; *_by_instructions:"
        " its instructions (callgrind) by a pystone's"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
