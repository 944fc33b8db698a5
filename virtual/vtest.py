# Test-side helpers for scripts run in the MicroPython VM by tests/conftest.py.
import gc
import json
import sys

from vdevices import bench

MARK = "@@RESULT "


def emit(data):
    # The one structured result of a test script, with the heap it peaked at.
    bench.sample_heap()
    gc.collect()
    out = {"data": data, "heap_peak": bench.heap_peak, "heap_total": gc.mem_alloc() + gc.mem_free()}
    sys.stdout.write(MARK + json.dumps(out) + "\n")


async def until(cond, ms=10000, step_ms=5):
    # Wait in the VM's own loop until cond() holds (True), or give up after ms (False).
    import asyncio

    for _ in range(ms // step_ms):
        if cond():
            return True
        await asyncio.sleep_ms(step_ms)
    return False


def run(coro):
    # Run an async test body; its return value is emitted.
    import asyncio

    emit(asyncio.run(coro))
