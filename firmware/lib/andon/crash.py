# What follows a fault andon.fault caught: keep it on flash, show the fault pattern on the tower,
# wait, and let andon.fault reset the board. The back-off doubles with each fault in a row, so a
# board that fails at every boot neither hammers its flash nor floods the broker; one that ran a
# while (andon.fault.settled) starts again at 5 s.
import asyncio
import gc
import io
import sys

from andon import fault, persist

FIRST_BACKOFF_MS = 5000
MAX_BACKOFF_MS = 600000

tower = None  # the tower showing the fault, while the back-off runs


def backoff_ms(faults):
    return min(FIRST_BACKOFF_MS << min(faults - 1, 10), MAX_BACKOFF_MS)


def describe(exc):
    # What it says and the firmware's innermost line it passed, in fault.MAX_ERROR characters,
    # e.g. 'andon/app.py, line 59, in _readers | ValueError: invalid pin'.
    buf = io.StringIO()
    sys.print_exception(exc, buf)
    lines = [line.strip() for line in buf.getvalue().split("\n") if line.strip()]
    frames = [line for line in lines[1:-1] if "andon/" in line] or lines[1:-1]
    if not frames:
        return lines[-1][-fault.MAX_ERROR:]
    where = frames[-1].replace('"', "").replace("File ", "")
    i = where.find("andon/")
    return (where[max(i, 0):] + " | " + lines[-1])[-fault.MAX_ERROR:]


def keep(exc):
    # The error and the count of faults in a row, on flash; returns the count.
    last = persist.read_ints(fault.COUNT_FILE, 1)
    faults = (last[0] if last else 0) + 1
    try:
        with open(fault.ERROR_FILE, "w") as f:
            f.write(describe(exc))
        persist.write_ints(fault.COUNT_FILE, [faults])
    except OSError as e:  # a full or failing flash must not stop the reset
        print("fault: cannot keep it:", e)
    return faults


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
        if fault.wdt is not None:
            fault.wdt.feed()
        await asyncio.sleep_ms(min(ms, 1000))
        ms -= 1000


def _light_config():
    try:
        from andon import config

        return config.light_only()
    except Exception:
        return None


def handle(exc):
    # Keep it, show it, wait; andon.fault.guard resets.
    sys.print_exception(exc)
    gc.collect()
    faults = keep(exc)
    ms = backoff_ms(faults)
    print("fault %d in a row: reset in %d ms" % (faults, ms))
    _show(_light_config())
    asyncio.new_event_loop()  # the failed loop's tasks stay behind
    asyncio.run(_wait(ms))
