"""The MFRC522 driver against the register-level chip model, inside the MicroPython VM."""

import pytest

# A chip on chip-select 5 of SPI bus 1, and the driver for it; each script defines `main()`.
BENCH = """
import asyncio, time, hal
from vdevices import bench
from vtest import run
from mfrc522_model import MFRC522 as Model, crc_a
from andon.mfrc522 import MFRC522

model = Model()
bench.attach(5, model)
chip = MFRC522(hal.SPI(1), hal.Pin(5, hal.Pin.OUT, value=1))

def spi(out):
    # One chip-select window on the raw bus, as the datasheet's SPI frames
    cs = hal.Pin(5)
    cs.value(0)
    rx = bytearray(len(out))
    hal.SPI(1).write_readinto(bytes(out), rx)
    cs.value(1)
    return list(rx)

async def reads(n, wake=False):
    # MicroPython has no await inside a comprehension
    out = []
    for _ in range(n):
        out.append(await chip.read(wake))
    return out

def hexes(uids):
    return [None if u is None else u.hex().upper() for u in uids]
"""


def run_bench(mpy, body: str):
    return mpy.run(BENCH + body + "\nrun(main())\n").data


def test_model_answers_like_the_datasheet_at_register_level(mpy):
    data = run_bench(
        mpy,
        """
def read(reg):
    return spi([0x80 | reg << 1, 0])[1]

def write(reg, *values):
    spi([reg << 1] + list(values))

def transceive(framing, *frame):
    # load the FIFO, clear the interrupts, Transceive, then StartSend with BitFramingReg
    write(0x0A, 0x80); write(0x09, *frame); write(0x04, 0x7F); write(0x01, 0x0C)
    write(0x0D, framing)

def crc_of(*data):
    write(0x0A, 0x80)              # flush the FIFO
    write(0x09, *data)             # FIFODataReg
    write(0x01, 0x03)              # CalcCRC
    out = [read(0x22), read(0x21)] # CRCResultRegL, CRCResultRegH: CRC_A goes out low byte first
    write(0x01, 0x00)
    return out

async def main():
    out = {"version": read(0x37)}
    # a multi-byte read: each MOSI byte addresses the next register, MISO lags by one byte
    out["burst"] = spi([0x80 | 0x37 << 1, 0x80 | 0x11 << 1, 0])
    write(0x11, 0x3D)              # ModeReg: CRC preset 6363h
    out["crc"] = [crc_of(0, 0), crc_of(0x12, 0x34), crc_of(0x50, 0)]
    out["crc_irq"] = read(0x05) & 0x04
    write(0x09, 1, 2, 3)
    out["fifo_level"] = read(0x0A)
    # the timer: TAuto, 25 us ticks, reload 39999 -> 1 s; a REQA nobody answers
    write(0x2A, 0x80); write(0x2B, 0xA9); write(0x2C, 39999 >> 8); write(0x2D, 39999 & 0xFF)
    write(0x14, 0x83)              # antenna on
    transceive(0x87, 0x26)         # StartSend, a 7-bit frame
    out["irq_at_once"] = read(0x04) & 0x21
    await asyncio.sleep_ms(1100)
    out["irq_after_timer"] = read(0x04) & 0x21
    # two tags that differ only in their 32nd UID bit answer an ANTICOLLISION together
    model.place(b"\\x01\\x02\\x03\\x04"); model.place(b"\\x01\\x02\\x03\\x84")
    write(0x0E, 0x00)              # ValuesAfterColl = 0
    transceive(0x87, 0x26)
    await asyncio.sleep_ms(5)
    out["atqa"] = [read(0x09), read(0x09)]
    transceive(0x80, 0x93, 0x20)   # ANTICOLLISION, cascade level 1
    await asyncio.sleep_ms(5)
    out["coll"] = [read(0x04) & 0x22, read(0x06), read(0x0E) & 0x3F, read(0x0A)]
    out["uid_cl1"] = [read(0x09) for _ in range(5)]
    return out
""",
    )
    assert data["version"] == 0x92
    assert data["burst"] == [0, 0x92, 0x3F]  # VersionReg, then ModeReg's reset value
    # ISO/IEC 14443-3 Annex B: 00 00 -> A0 1E, 12 34 -> 26 CF; HLTA is 50 00 57 CD
    assert data["crc"] == [[0xA0, 0x1E], [0x26, 0xCF], [0x57, 0xCD]]
    assert data["crc_irq"] == 0x04
    assert data["fifo_level"] == 3
    assert data["irq_at_once"] == 0
    assert data["irq_after_timer"] == 0x01  # TimerIRq, and no RxIRq
    assert data["atqa"] == [0x04, 0x00]
    # RxIRq and ErrIRq, CollErr, CollPos 0 (= bit 32), 5 bytes received
    assert data["coll"] == [0x22, 0x08, 0x00, 5]
    # the collided bit and every bit after it (here the BCC) read as 0
    assert data["uid_cl1"] == [0x01, 0x02, 0x03, 0x04, 0x00]


def test_reads_4_7_and_10_byte_uids(mpy):
    data = run_bench(
        mpy,
        """
UIDS = [b"\\x3A\\x9F\\x10\\xC4", b"\\x04\\xA1\\xB2\\xC3\\xD4\\xE5\\x80",
        b"\\x04\\x88\\x10\\x20\\x30\\x40\\x50\\x60\\x70\\x81"]
async def main():
    ok = await chip.init()
    got = []
    for uid in UIDS:
        model.tags = []
        model.place(uid, sak=0x08)
        got.append(await chip.read())
        got.append(await chip.read())  # halted after its read: silent to REQA
        got.append(await chip.read(wake=True))  # WUPA wakes it
    return {"init": ok, "got": hexes(got), "errors": chip.errors}
""",
    )
    assert data["init"] is True
    assert data["got"] == [
        "3A9F10C4", None, "3A9F10C4",
        "04A1B2C3D4E580", None, "04A1B2C3D4E580",
        "04881020304050607081", None, "04881020304050607081",
    ]  # fmt: skip
    assert data["errors"] == 0


COLLIDING = [
    # differ in the very first UID bit
    ("00112233", "01112233"),
    # differ only in bit 32 (CollPos 0), after a partial-byte anticollision round
    ("01020304", "01020384"),
    # same cascade level 1, the collision is at level 2
    ("04A1B2C3D4E580", "04A1B2C3D4E581"),
    # a single-size UID against a cascade tag (88h) at level 1
    ("08F00D11", "04A1B2C3D4E580"),
    # 10-byte UIDs that part only at level 3, several collisions
    ("04881020304050607081", "048810203040506F7E80"),
]


@pytest.mark.parametrize(("a", "b"), COLLIDING)
def test_colliding_tags_are_each_read_whole_never_mixed(mpy, a, b):
    data = run_bench(
        mpy,
        f"""
async def main():
    await chip.init()
    model.place(bytes.fromhex("{a}")); model.place(bytes.fromhex("{b}"))
    got = await reads(3)  # each read halts the tag it selected
    return {{"got": hexes(got), "errors": chip.errors}}
""",
    )
    assert sorted(data["got"][:2]) == sorted([a, b])
    assert data["got"][2] is None
    assert data["errors"] == 0


def test_three_tags_in_one_field(mpy):
    data = run_bench(
        mpy,
        """
UIDS = [b"\\x04\\x11\\x22\\x33\\x44\\x55\\x66", b"\\x04\\x11\\x22\\x73\\x44\\x55\\x66",
        b"\\x08\\x01\\x02\\x03"]
async def main():
    await chip.init()
    for u in UIDS:
        model.place(u)
    return hexes(await reads(4))
""",
    )
    assert sorted(data[:3]) == ["04112233445566", "04112273445566", "08010203"]
    assert data[3] is None


def test_tag_removed_mid_read_gives_none_and_the_next_read_works(mpy):
    data = run_bench(
        mpy,
        """
UID = b"\\x04\\xA1\\xB2\\xC3\\xD4\\xE5\\x80"
async def main():
    await chip.init()
    got = []
    # 7-byte read: REQA, ANTICOLL 1, SELECT 1, ANTICOLL 2, SELECT 2: lift it after each
    for frames in range(1, 5):
        model.place(UID)
        model.remove_after(UID, frames)
        got.append(await chip.read())
    lost = chip.errors
    model.place(UID)
    got.append(await chip.read())
    return {"got": hexes(got), "lost": lost, "tags_left": len(model.tags)}
""",
    )
    assert data["got"] == [None, None, None, None, "04A1B2C3D4E580"]
    assert data["lost"] == 4
    assert data["tags_left"] == 1


@pytest.mark.parametrize("mode", ["random", "crc", "bcc"])
def test_garbage_answers_give_none_and_are_counted(mpy, mode):
    data = run_bench(
        mpy,
        f"""
UIDS = [b"\\x3A\\x9F\\x10\\xC4", b"\\x04\\xA1\\xB2\\xC3\\xD4\\xE5\\x80"]
async def main():
    await chip.init()
    got = []
    for uid in UIDS:
        model.tags = []
        model.place(uid)
        model.garbage = "{mode}"
        got += await reads(10, wake=True)
        model.garbage = None
        got.append(await chip.read(wake=True))
    return {{"got": hexes(got), "errors": chip.errors}}
""",
    )
    assert data["got"] == [None] * 10 + ["3A9F10C4"] + [None] * 10 + ["04A1B2C3D4E580"]
    assert data["errors"] == 20


def test_no_tag_ends_on_the_chips_timer_and_the_read_yields(mpy):
    data = run_bench(
        mpy,
        """
class Counting(Model):
    irq_reads = 0
    def read(self, reg):
        if reg == 0x04:
            self.irq_reads += 1
        return super().read(reg)

model = Counting()
bench.attach(5, model)
ticks = 0

async def ticker():
    global ticks
    while True:
        ticks += 1
        await asyncio.sleep_ms(0)

async def main():
    await chip.init()
    t = asyncio.create_task(ticker())
    got = await chip.read()
    timer = spi([0x80 | 0x04 << 1, 0])[1] & 0x01  # ComIrqReg TimerIRq
    no_tag = {"got": got, "timer": timer, "irq_reads": model.irq_reads, "ticks": ticks,
              "errors": chip.errors}
    model.place(b"\\x04\\x88\\x10\\x20\\x30\\x40\\x50\\x60\\x70\\x81")
    before = ticks
    uid = await chip.read()
    t.cancel()
    return {"no_tag": no_tag, "uid": uid.hex(), "ticks_during_read": ticks - before}
""",
    )
    no_tag = data["no_tag"]
    assert no_tag["got"] is None
    assert no_tag["timer"] == 1  # the chip's timer ended the receive
    assert no_tag["errors"] == 0  # an empty reader is not an error
    # the driver sleeps through the chip's receive window and reads ComIrqReg once, after
    # the timer fired (the second read is this test's own), where it polled every millisecond
    assert no_tag["irq_reads"] == 2
    assert no_tag["ticks"] >= 2  # another task ran while the driver waited
    assert data["uid"] == "04881020304050607081"
    assert data["ticks_during_read"] >= 5  # a 10-byte read waits on at least 8 frames


def test_a_chip_that_lost_its_settings_does_not_hang_the_driver(mpy):
    data = run_bench(
        mpy,
        """
async def main():
    await chip.init()
    model.place(b"\\x3A\\x9F\\x10\\xC4")
    model.soft_reset()  # a brown-out: no timer, no field
    lost = await chip.read()
    ok = await chip.init()
    return {"lost": lost, "again": (await chip.read()).hex(), "init": ok}
""",
    )
    assert data == {"lost": None, "again": "3a9f10c4", "init": True}


def test_no_chip_on_the_bus_fails_init(mpy):
    data = run_bench(
        mpy,
        """
bench.spi_devices.clear()
async def main():
    return await chip.init()
""",
    )
    assert data is False


def test_waiting_on_the_chip_allocates_nothing_per_register_read(mpy):
    # A stub chip whose timer fires at once, then one that never answers: the second read
    # polls ComIrqReg ~20 times until the deadline. The wait itself (the backstop a silent
    # chip falls back on) must allocate no more for those polls than for the one of the first.
    data = mpy.run(
        """
import asyncio, gc
from vtest import run
from andon.mfrc522 import MFRC522

class Pin:
    def value(self, v=None):
        pass

class SPI:
    irq = 0x01  # ComIrqReg: TimerIRq
    reads = 0
    def write_readinto(self, tx, rx):
        SPI.reads += 1
        rx[1] = 0x92 if tx[0] == 0x80 | 0x37 << 1 else SPI.irq
    def write(self, tx):
        pass

chip = MFRC522(SPI(), Pin())

async def measured(wait):
    before = SPI.reads
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    got = await (chip._wait(0x04, 0x01) if wait else chip.read())
    used = gc.mem_alloc() - a
    gc.enable()
    return [got, used, SPI.reads - before]

async def main():
    await chip.init()
    await chip.read()
    fired = [await measured(False), await measured(True)]
    SPI.irq = 0
    return {"fired": fired, "silent": [await measured(False), await measured(True)]}

run(main())
"""
    ).data
    (fired_read, fired_wait), (silent_read, silent_wait) = data["fired"], data["silent"]
    assert fired_read[0] is None and silent_read[0] is None
    assert silent_read[2] > fired_read[2] + 10  # it did poll many more times
    assert fired_wait[0] == 0x01 and silent_wait[0] == 0
    assert silent_wait[2] > fired_wait[2] + 10
    assert silent_wait[1] == fired_wait[1]


def test_check_tells_a_reset_chip_from_one_that_does_not_answer_sanely(mpy):
    data = run_bench(
        mpy,
        """
async def main():
    out = {"init": await chip.init(), "fresh": chip.check()}
    model.soft_reset()             # an RST glitch or a brown-out: the settings are gone
    out["after_reset"] = chip.check()
    out["reinit"] = await chip.init()
    out["again"] = chip.check()
    model.stuck_miso = 0x10        # MISO stuck: every register reads the same byte
    out["stuck"] = chip.check()
    out["init_stuck"] = await chip.init()
    model.stuck_miso = None
    bench.spi_devices.clear()      # unplugged: the bus floats high
    out["unplugged"] = chip.check()
    return out
""",
    )
    assert data == {
        "init": True,
        "fresh": "ok",
        "after_reset": "reset",
        "reinit": True,
        "again": "ok",
        "stuck": "gone",
        "init_stuck": False,  # a byte read back for every register is no chip
        "unplugged": "gone",
    }
