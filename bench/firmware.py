"""Station firmware figures, from the MicroPython VM (64-bit unix port) on this machine.

Prints the heap the loaded code takes (each firmware module as .mpy, and the virtual bench
beside it), the peak heap of the full-outbox scenario (tests/firmware/test_station.py: 4 inputs,
2 RFID readers, a tower, 400 events pending), the smallest `-X heapsize` it still passes at
(bisection), the cost of one input scan pass, and pin-edge-to-PUBLISH latency on loopback
(driving a pin through the board's control port until a paho subscriber has the PUBLISH,
debounce included). Ends with one JSON line. Run from the repository root:
`.venv/bin/python -m bench.firmware`.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from tests.firmware.paho_watch import Watcher
from tests.firmware.standin import AckStandIn
from tests.firmware.test_station import (
    BOARD,
    CORD_UP,
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

EDGES = 120
DEBOUNCE_MS = 20  # the default, as station_config leaves it
LOW_KB, HIGH_KB, STEP_KB = 64, 256, 4

SCAN = """
import gc, time
from andon.inputs import Inputs
from vtest import emit
cfg = [{"name": n, "role": r, "pin": p, "pull": "up", "active": a, "debounce_ms": 20, "adc": None}
       for n, r, p, a in (("cord", "cord", 4, 1), ("qual", "call_quality", 17, 0),
                          ("ack", "ack", 21, 0), ("cycle", "cycle", 22, 0))]
ins = Inputs(cfg, lambda kind, data, ticks: None)
N = 2000
gc.collect()
before = gc.mem_alloc()
t = time.ticks_us()
for i in range(N):
    ins.scan(i)
us = time.ticks_diff(time.ticks_us(), t)
emit({"scan_us": us / N, "alloc_bytes_per_pass": (gc.mem_alloc() - before) / N})
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


def code_heap() -> dict[str, int]:
    """Heap each module's code takes once imported from .mpy (after gc), in bytes."""
    paths = [str(p) for p in compiled_paths()]
    source = CODE.replace("PATHS", repr(paths)).replace("BENCH", repr(BENCH_MODULES))
    with tempfile.TemporaryDirectory() as tmp:
        return run_script(source.replace("FIRMWARE", repr(FIRMWARE_MODULES)), Path(tmp)).data


def scenario(heap_kb: int) -> dict | None:
    """The scenario's last status at this heap, or None when it failed."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_broker(Path(tmp) / "broker") as broker,
        AckStandIn(broker, acking=False) as standin,
    ):
        try:
            return full_outbox_scenario(Path(tmp), broker, standin, f"{heap_kb}K")
        except (AssertionError, BoardError):
            return None


def smallest_heap_kb() -> int | None:
    """Bisection over heapsize in STEP_KB steps; None if even HIGH_KB fails."""
    if scenario(HIGH_KB) is None:
        return None
    lo, hi = LOW_KB - STEP_KB, HIGH_KB  # lo fails (or is below the range), hi passes
    while hi - lo > STEP_KB:
        mid = (lo + hi) // 2 // STEP_KB * STEP_KB
        ok = scenario(mid) is not None
        print(f"  heapsize {mid}K: {'passes' if ok else 'fails'}", flush=True)
        lo, hi = (lo, mid) if ok else (mid, hi)
    return hi


def latency_ms() -> list[float]:
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
            for edge in range(1, EDGES + 1):
                t0 = time.perf_counter()
                board.set_input("cord", edge % 2 == 1)
                watcher.wait(lambda m, n=edge + 1: json.loads(m[1])["seq"] == n)
                out.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.01)
            return out
        finally:
            board.stop()


def main() -> None:
    code = code_heap()
    runtime = sum(code[m] for m in FIRMWARE_MODULES if m != "andon.config")
    bench_code = sum(code[m] for m in BENCH_MODULES)
    print(
        f"code in the heap (.mpy): firmware runtime {runtime} B, asyncio {code['asyncio']} B,"
        f" the validator alone at boot {code['andon.config']} B, the virtual bench {bench_code} B"
    )
    with tempfile.TemporaryDirectory() as tmp:
        flash = Path(tmp)
        scan = run_script(SCAN, flash).data
    roomy = scenario(int(ROOMY_HEAP[:-1]))
    if roomy is None:
        raise SystemExit(f"the scenario fails even at {ROOMY_HEAP}")
    smallest = smallest_heap_kb()
    tight = scenario(smallest) if smallest else None
    # mem_alloc() counts garbage not yet collected: with room to spare the sampled peak is
    # the whole heap, so the telling peak is the one sampled at the smallest heap that passes.
    print(f"live heap after the scenario (after gc): {roomy['heap_live']} bytes")
    if tight:
        print(f"scenario peak heap at heapsize {smallest}K: {tight['heap_peak']} bytes")
    print(f"smallest heapsize it passes at: {smallest}K (64-bit unix VM, .mpy in the heap)")
    print(f"scan pass, 4 inputs: {scan['scan_us']:.1f} us, {scan['alloc_bytes_per_pass']} B/pass")
    lat = sorted(latency_ms())
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(
        f"pin edge to PUBLISH over {len(lat)} edges: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {lat[-1]:.1f} ms (debounce {DEBOUNCE_MS} ms included)"
    )
    print(
        json.dumps(
            {
                "board": BOARD,
                "code_heap_bytes": {
                    "firmware_runtime": runtime,
                    "asyncio": code["asyncio"],
                    "validator_at_boot": code["andon.config"],
                    "virtual_bench": bench_code,
                },
                "scenario_heap_peak_bytes": tight["heap_peak"] if tight else None,
                "scenario_heap_live_bytes": roomy["heap_live"],
                "smallest_heapsize_kb": smallest,
                "scan_pass_us": round(scan["scan_us"], 2),
                "scan_alloc_bytes_per_pass": scan["alloc_bytes_per_pass"],
                "edge_to_publish_ms": {
                    "p50": round(p50, 2),
                    "p99": round(p99, 2),
                    "max": round(lat[-1], 2),
                    "edges": len(lat),
                    "debounce_ms": DEBOUNCE_MS,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
