"""The watchdog is fed only while every watched task makes progress (in the VM)."""


def test_watchdog_feeding_stops_when_one_task_stalls(mpy):
    result = mpy.run(
        """
import asyncio, hal
from vdevices import bench
from andon.health import Health
import vtest

counts = {"scan": 0, "uplink": 0}

async def worker(name, stop_after):
    while stop_after is None or counts[name] < stop_after:
        counts[name] += 1
        await asyncio.sleep_ms(5)
    await asyncio.sleep_ms(100000)   # hangs: alive as a task, but no progress

async def main():
    wdt = hal.WDT(timeout=1000)
    h = Health(wdt, {k: (lambda k=k: counts[k]) for k in counts}, period_ms=20, window=3)
    asyncio.create_task(worker("scan", None))
    asyncio.create_task(worker("uplink", 20))
    task = asyncio.create_task(h.run())
    await asyncio.sleep_ms(60)
    fed_while_alive = bench.wdt_feeds
    await asyncio.sleep_ms(400)
    feeds_at_stall = bench.wdt_feeds
    await asyncio.sleep_ms(200)
    return {"fed_while_alive": fed_while_alive, "starved": h.starved,
            "fed_after_stall": bench.wdt_feeds - feeds_at_stall, "ended": task.done()}

vtest.run(main())
"""
    )
    data = result.data
    assert data["fed_while_alive"] >= 2
    assert data["starved"] == "uplink"
    assert data["fed_after_stall"] == 0
    assert data["ended"] is True
