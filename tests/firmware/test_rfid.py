"""RFID readers: one scan per placement, hold-off, several readers on one bus (MicroPython VM)."""

# Chip models on chip-selects 5 and 15 of one SPI bus; scans land in `scans`.
BENCH = """
import asyncio, time, hal
from vdevices import bench
from vtest import run
from mfrc522_model import MFRC522 as Model
from andon.mfrc522 import MFRC522
from andon.rfid import Reader

spi = hal.SPI(2)
scans = []

def sink(kind, data, ticks):
    assert isinstance(ticks, int)
    scans.append([kind, data["reader"], data["role"], data["uid"]])

def reader(name, role, cs, model, **kw):
    bench.attach(cs, model)
    return Reader(name, role, MFRC522(spi, hal.Pin(cs, hal.Pin.OUT, value=1)), **kw)

async def polls(r, n):
    # let the reader poll n more times
    end = r.polls + n
    while r.polls < end:
        await asyncio.sleep_ms(5)

TAG = bytes.fromhex("04A1B2C3D4E580")
"""


def run_bench(mpy, body: str):
    return mpy.run(BENCH + body + "\nrun(main())\n").data


def test_a_tag_that_stays_scans_once_and_a_replacement_after_the_hold_off_scans_again(mpy):
    data = run_bench(
        mpy,
        """
async def main():
    model = Model()
    r = reader("post", "post", 5, model, holdoff_ms=1000, period_ms=20)
    task = asyncio.create_task(r.run(sink))
    out = {}
    model.place(TAG)
    await polls(r, 30)                 # it stays on the reader
    out["stay"] = len(scans)
    model.remove(TAG)
    await polls(r, 2)                  # lifted: the reader sees it gone...
    model.place(TAG)
    await polls(r, 5)                  # ...and back within the hold-off
    out["quick"] = len(scans)
    model.remove(TAG)
    await asyncio.sleep_ms(1300)       # gone for longer than the hold-off
    model.place(TAG)
    await polls(r, 5)
    task.cancel()
    out["scans"] = scans
    return out
""",
    )
    assert data["stay"] == 1
    assert data["quick"] == 1
    scan = ["scan", "post", "post", "04A1B2C3D4E580"]
    assert data["scans"] == [scan, scan]


def test_two_tags_on_one_reader_scan_each_once(mpy):
    data = run_bench(
        mpy,
        """
async def main():
    model = Model()
    r = reader("receive", "receive", 5, model, period_ms=20)
    model.place(TAG)
    model.place(bytes.fromhex("3A9F10C4"))
    task = asyncio.create_task(r.run(sink))
    await polls(r, 10)
    task.cancel()
    return sorted(s[3] for s in scans)
""",
    )
    assert data == ["04A1B2C3D4E580", "3A9F10C4"]


def test_two_readers_share_the_bus_and_take_turns_with_the_field(mpy):
    data = run_bench(
        mpy,
        """
class Watched(Model):
    # notes when its field comes on while its neighbour's is on too
    others = []
    overlaps = 0
    def write(self, reg, v):
        super().write(reg, v)
        if reg == 0x14 and self.field_on():
            Watched.overlaps += sum(1 for m in Watched.others if m is not self and m.field_on())

post, badge = Watched(), Watched()
Watched.others = [post, badge]

async def main():
    a = reader("post", "post", 5, post, period_ms=10)
    b = reader("badge", "badge", 15, badge, period_ms=10)
    post.place(TAG)
    badge.place(bytes.fromhex("04881020304050607081"))
    tasks = [asyncio.create_task(a.run(sink)), asyncio.create_task(b.run(sink))]
    await polls(a, 10)
    await polls(b, 10)
    for t in tasks:
        t.cancel()
    return {"scans": sorted(scans), "overlaps": Watched.overlaps,
            "errors": [a.chip.errors, b.chip.errors]}
""",
    )
    assert data["scans"] == [
        ["scan", "badge", "badge", "04881020304050607081"],
        ["scan", "post", "post", "04A1B2C3D4E580"],
    ]
    assert data["overlaps"] == 0
    assert data["errors"] == [0, 0]


def test_a_reader_without_a_chip_keeps_retrying_without_crashing(mpy):
    result = mpy.run(
        BENCH
        + """
async def main():
    r = Reader("post", "post", MFRC522(spi, hal.Pin(5, hal.Pin.OUT, value=1)))
    try:
        await asyncio.wait_for_ms(r.run(sink), 200)
    except asyncio.TimeoutError:
        return {"scans": scans, "polls": r.polls}

run(main())
"""
    )
    assert result.data == {"scans": [], "polls": 0}
    assert "rfid post: no MFRC522 answers" in result.stdout
