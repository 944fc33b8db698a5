"""RFID readers: one scan per placement, hold-off, several readers on one bus, fair scanning of
many tags, and reader faults (a chip reset, a stuck bus, a reader unplugged) (MicroPython VM)."""

import pytest

# Chip models on chip-selects 5 and 15 of one SPI bus; scans land in `scans`, reader faults
# in `faults`.
BENCH = """
import asyncio, time, hal
from vdevices import bench
from vtest import run
from mfrc522_model import MFRC522 as Model
from andon.mfrc522 import MFRC522
from andon.rfid import Reader, Readers

spi = hal.SPI(2)
scans = []
faults = []

def sink(kind, data, ticks):
    assert isinstance(ticks, int)
    if kind == "input_fault":
        faults.append([data["input"], data["fault"]])
    else:
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
    task = asyncio.create_task(Readers([r]).run(sink))
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
    task = asyncio.create_task(Readers([r]).run(sink))
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
    task = asyncio.create_task(Readers([a, b]).run(sink))
    await polls(a, 10)
    await polls(b, 10)
    task.cancel()
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
        await asyncio.wait_for_ms(Readers([r]).run(sink), 200)
    except asyncio.TimeoutError:
        return {"scans": scans, "polls": r.polls, "faults": faults}

run(main())
"""
    )
    # A reader that never answered is a fault from the start, not a reader with no card.
    assert result.data == {"scans": [], "polls": 0, "faults": [["post", "reader"]]}
    assert "rfid post: no MFRC522 answers" in result.stdout


async_until = """
from vtest import until
"""


def test_five_cards_on_one_reader_are_each_scanned_once(mpy):
    # MAX_TAGS is 4 a poll, and anticollision always taking the same branch left one card out
    # for good; the reader changes the branch from poll to poll.
    uids = ["3A9F10C4", "3A9F10C5", "04A1B2C3D4E580", "04A1B2C3D4E581", "5C0D2E7F"]
    data = run_bench(
        mpy,
        async_until
        + f"""
UIDS = {uids!r}
async def main():
    model = Model()
    r = reader("receive", "receive", 5, model, period_ms=10, holdoff_ms=60000)
    for u in UIDS:
        model.place(bytes.fromhex(u))
    task = asyncio.create_task(Readers([r]).run(sink))
    every = await until(lambda: len(scans) == len(UIDS))
    await polls(r, 20)  # and no card comes again while they all stay
    task.cancel()
    return {{"every": every, "scans": sorted(s[3] for s in scans), "errors": r.chip.errors}}
""",
    )
    assert data["scans"] == sorted(uids)
    assert data["every"] is True
    assert data["errors"] == 0


def test_a_chip_reset_is_found_and_the_chip_is_initialised_again(mpy):
    # A brown-out or an RST glitch puts the registers back to their reset values: every SELECT
    # then fails its CRC, and with no card on the reader nothing fails at all.
    data = run_bench(
        mpy,
        async_until
        + """
async def main():
    model = Model()
    r = reader("post", "post", 5, model, period_ms=10)
    task = asyncio.create_task(Readers([r]).run(sink))
    await polls(r, 2)
    model.soft_reset()                  # no card: found by the periodic register check
    await polls(r, 25)
    model.place(TAG)
    found = await until(lambda: len(scans) == 1)
    model.remove(TAG)
    await polls(r, 2)
    model.soft_reset()                  # with a card: found at the first failed read
    model.place(bytes.fromhex("3A9F10C4"))
    again = await until(lambda: len(scans) == 2)
    task.cancel()
    return {"found": found, "again": again, "scans": [s[3] for s in scans], "faults": faults}
""",
    )
    assert data["found"] is True and data["again"] is True
    assert data["scans"] == ["04A1B2C3D4E580", "3A9F10C4"]
    assert data["faults"] == []  # a chip that answers again is no fault


@pytest.mark.parametrize("failure", ["miso 0x10", "miso 0x08", "unplugged"])
def test_a_reader_that_stops_answering_raises_input_fault_until_it_recovers(mpy, failure):
    break_it, mend_it = {
        "miso 0x10": ("model.stuck_miso = 0x10", "model.stuck_miso = None"),
        "miso 0x08": ("model.stuck_miso = 0x08", "model.stuck_miso = None"),
        "unplugged": ("del bench.spi_devices[5]", "bench.attach(5, model)"),
    }[failure]
    data = run_bench(
        mpy,
        async_until
        + f"""
async def main():
    model = Model()
    r = reader("post", "post", 5, model, period_ms=10)
    task = asyncio.create_task(Readers([r]).run(sink))
    await polls(r, 2)
    {break_it}
    raised = await until(lambda: faults == [["post", "reader"]])
    model.place(TAG)                    # a card on a dead reader reads as nothing...
    await polls(r, 3)
    missed = list(scans)
    {mend_it}
    model.soft_reset()                  # ...and a reader plugged back in starts from reset
    cleared = await until(lambda: len(faults) == 2 and len(scans) == 1)
    task.cancel()
    return {{"raised": raised, "missed": missed, "cleared": cleared, "faults": faults,
            "scans": [s[3] for s in scans]}}
""",
    )
    assert data["raised"] is True
    assert data["missed"] == []
    assert data["cleared"] is True
    assert data["faults"] == [["post", "reader"], ["post", "clear"]]
    assert data["scans"] == ["04A1B2C3D4E580"]


def test_an_empty_poll_wakes_its_task_twice_and_touches_ten_registers(mpy):
    # An idle board's readers poll 5 times a second each, and that is most of its CPU: each
    # empty poll must cost the field's settling and the chip's receive window (two sleeps,
    # where the driver polled its interrupt register every millisecond) and the few registers
    # REQA needs, while still switching the field on and off and ending on the chip's timer.
    data = run_bench(
        mpy,
        """
sleeps = [0]
sleep_ms = asyncio.sleep_ms
def counted(ms):
    sleeps[0] += 1
    return sleep_ms(ms)
asyncio.sleep_ms = counted

class Counting(Model):
    windows = 0  # chip-select windows: one register access each
    fields = 0   # the field switched on
    def select(self):
        Counting.windows += 1
        super().select()
    def write(self, reg, v):
        if reg == 0x14 and v & 0x03 and not self.field_on():
            Counting.fields += 1
        super().write(reg, v)

async def main():
    model = Counting()
    r = reader("post", "post", 5, model)
    await r.turn(sink)               # init, and a first poll that checks the chip's registers
    before = [sleeps[0], Counting.windows, Counting.fields]
    for _ in range(10):
        await r.poll(sink)
    after = [sleeps[0], Counting.windows, Counting.fields]
    return {"per_poll": [(a - b) / 10 for a, b in zip(after, before)],
            "timer": model.regs[0x04] & 0x01, "field_on": model.field_on(), "scans": scans}
""",
    )
    sleeps, registers, fields = data["per_poll"]
    assert sleeps <= 2
    assert registers <= 10
    assert fields == 1  # the field came on once a poll...
    assert data["field_on"] is False  # ...and is off between polls
    assert data["timer"] == 1
    assert data["scans"] == []


def test_readers_due_together_take_their_turns_in_one_wake(mpy):
    # Two posts polling at the same pace, in the readers' one task: a round is one sleep for
    # the period and each poll's two (the field settling, the answer window), the one's field
    # going off and the next one's coming on in the same wake: 5 sleeps, where a task per
    # reader slept 6.
    data = run_bench(
        mpy,
        """
sleep_ms = asyncio.sleep_ms
sleeps = [0]
def counted(ms):
    sleeps[0] += 1
    return sleep_ms(ms)

async def main():
    a = reader("left", "post", 5, Model(), period_ms=50)
    b = reader("right", "post", 15, Model(), period_ms=50)
    task = asyncio.create_task(Readers([a, b]).run(sink))
    while b.polls < 3:  # both answered their init and poll
        await sleep_ms(5)
    asyncio.sleep_ms = counted
    before = [sleeps[0], a.polls, b.polls]
    while b.polls < before[2] + 10:
        await sleep_ms(5)
    asyncio.sleep_ms = sleep_ms
    task.cancel()
    polls = [a.polls - before[1], b.polls - before[2]]
    return {"per_round": (sleeps[0] - before[0]) / polls[1], "polls": polls, "scans": scans}
""",
    )
    assert data["polls"][0] - data["polls"][1] in (0, 1)  # they keep pace
    assert data["per_round"] <= 5.5  # 6 with a task per reader; a loaded machine may part a round
    assert data["scans"] == []
