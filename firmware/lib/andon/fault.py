# The last resort around the whole boot (main.py): an exception nothing else caught (a pin the
# chip refuses while the Station is built, a bug in a task) shows the fault pattern on the tower,
# is kept on flash for the next birth (reset cause + last error), and the board resets after a
# back-off. The back-off doubles with each fault in a row, so a board that fails at every boot
# neither hammers its flash nor floods the broker; a board that ran a while starts again at 5 s.
import asyncio
import gc
import io
import os
import sys

import hal
from andon import persist

ERROR_FILE = "fault.txt"
COUNT_FILE = "fault.count"  # faults in a row, cleared by settled()
MAX_ERROR = 160  # characters kept: the birth carries them
FIRST_BACKOFF_MS = 5000
MAX_BACKOFF_MS = 600000

wdt = None  # the watchdog once one runs: it cannot be stopped, so the back-off feeds it
tower = None  # the tower showing the fault, while the back-off runs


def backoff_ms(faults):
    return min(FIRST_BACKOFF_MS << min(faults - 1, 10), MAX_BACKOFF_MS)


def describe(exc):
    # What it says and the firmware's innermost line it passed, in MAX_ERROR characters, e.g.
    # 'andon/app.py, line 59, in _readers | ValueError: invalid pin'.
    buf = io.StringIO()
    sys.print_exception(exc, buf)
    lines = [line.strip() for line in buf.getvalue().split("\n") if line.strip()]
    frames = [line for line in lines[1:-1] if "andon/" in line] or lines[1:-1]
    if not frames:
        return lines[-1][-MAX_ERROR:]
    where = frames[-1].replace('"', "").replace("File ", "")
    i = where.find("andon/")
    return (where[max(i, 0):] + " | " + lines[-1])[-MAX_ERROR:]


def keep(exc):
    # The error and the count of faults in a row, on flash; returns the count.
    last = persist.read_ints(COUNT_FILE, 1)
    faults = (last[0] if last else 0) + 1
    try:
        with open(ERROR_FILE, "w") as f:
            f.write(describe(exc))
        persist.write_ints(COUNT_FILE, [faults])
    except OSError as e:  # a full or failing flash must not stop the reset
        print("fault: cannot keep it:", e)
    return faults


def last_error():
    # What the last fault kept, until reported() forgets it; None if nothing was kept.
    try:
        with open(ERROR_FILE) as f:
            return f.read(MAX_ERROR) or None
    except OSError:
        return None


def _remove(*paths):
    for p in paths:
        try:
            os.remove(p)
        except OSError:
            pass


def reported():
    # A birth carrying the error reached the broker.
    _remove(ERROR_FILE)


def settled():
    # The board ran long enough: the next fault's back-off starts from the first step.
    _remove(COUNT_FILE, COUNT_FILE + ".tmp")


def _show(light_cfg):
    global tower
    if light_cfg is None:
        return
    from andon import light

    try:
        tower = light.Tower(light_cfg)
        tower.show(light.compose({"board_fault": True}))
    except Exception as e:  # the tower's own pins may be what failed
        print("fault: no tower:", e)
        tower = None


async def _wait(ms):
    if tower is not None:
        asyncio.create_task(tower.run())
    while ms > 0:
        if wdt is not None:
            wdt.feed()
        await asyncio.sleep_ms(min(ms, 1000))
        ms -= 1000


def _light_config():
    try:
        from andon import config

        return config.light_only()
    except Exception:
        return None


def handle(exc):
    # Keep it, show it, wait; guard() resets.
    sys.print_exception(exc)
    gc.collect()
    faults = keep(exc)
    ms = backoff_ms(faults)
    print("fault %d in a row: reset in %d ms" % (faults, ms))
    _show(_light_config())
    asyncio.new_event_loop()  # the failed loop's tasks stay behind
    asyncio.run(_wait(ms))


def guard(boot):
    # Run boot(); any exception ends in handle(). SystemExit (a reset) and KeyboardInterrupt
    # (the REPL, for maintenance) pass through.
    try:
        boot()
    except Exception as e:
        try:
            handle(e)
        finally:  # even when handling fails (no memory left): a reset beats a dead board
            hal.reset()
