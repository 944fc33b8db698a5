# RFID readers on kanban posts, receiving points and badge stations: one scan per placement.
import asyncio
import time
from binascii import hexlify

MAX_TAGS = 4  # tags read per poll; a kanban post holds one card, a stack a few
# An idle poll wakes its task 3 times (field on; REQA once the field has settled; the chip's
# answer window, then field off): at 5 polls a second on each of two readers, most of what an
# idle ESP32 does. A tag is read at the first poll after it is placed, within a period, the
# other reader's turn and its own read (about 250 ms, bench/firmware.py measures it): a tap
# of 300 ms or more is always caught. People tap for 0.3-1 s.
PERIOD_MS = 200
# A kanban card is not tapped on its post: it is put there and stays until it is collected.
# Read within about 550 ms instead of 250 is nothing to a refill, and each poll with a card
# on the post is a whole read (the field drops between polls): the post polls 2.5x less.
POST_PERIOD_MS = 500
INIT_RETRY_MS = 5000
CHECK_EVERY = 20  # polls between checks of the chip's registers; at once after a failed read

# Readers take turns: they share the SPI bus, and neighbouring antennas disturb each other.
BUS = asyncio.Lock()


class Reader:
    def __init__(self, name, role, driver, holdoff_ms=1500, period_ms=None, lock=BUS):
        self.name = name
        self.role = role
        self.chip = driver
        self.holdoff_ms = holdoff_ms
        if period_ms is None:
            period_ms = POST_PERIOD_MS if role == "post" else PERIOD_MS
        self.period_ms = period_ms
        self.lock = lock
        self.present = {}  # uid hex -> ticks_ms when last seen
        self.polls = 0  # advances every poll: a liveness probe for the watchdog
        self.faulty = False  # the chip does not answer sanely: input_fault "reader" was sent

    async def poll(self, sink):
        # Power the field, read every tag in it, power it down: each poll finds all tags
        # afresh (a halted tag wakes again only after the field drops). A faulty reader is
        # only checked, every CHECK_EVERY polls, until it answers again. An empty poll is the
        # idle board's main work: its path is kept flat (no nested coroutines but the read's,
        # the lock's acquire rather than `async with`, which makes three).
        chip = self.chip
        await self.lock.acquire()
        try:
            failed = False
            if not self.faulty:
                errors = chip.errors
                chip.rotation = self.polls  # more tags than MAX_TAGS: others first next time
                chip.antenna(True)
                await asyncio.sleep_ms(5)  # ISO 14443-3: a tag is ready 5 ms after the field
                for _ in range(MAX_TAGS):
                    uid = await chip.read()
                    if uid is None:
                        break
                    self._seen(hexlify(uid).decode().upper(), time.ticks_ms(), sink)
                chip.antenna(False)
                failed = chip.errors != errors
            if failed or self.polls % CHECK_EVERY == 0:
                await self._check(sink)
        finally:
            self.lock.release()
        self._forget(time.ticks_ms())
        self.polls += 1

    async def _check(self, sink):
        # A chip that lost its settings fails every SELECT while polls go on: init it again.
        # One that does not answer sanely is a fault, reported once, cleared when it answers.
        state = self.chip.check()
        if state != "ok":
            if state == "reset":
                print("rfid %s: the chip lost its settings; init again" % self.name)
            ok = await self.chip.init()
            if ok:
                self.chip.antenna(False)
            state = "ok" if ok else "gone"
        self._report(state != "ok", sink)

    def _report(self, faulty, sink):
        if faulty != self.faulty:
            self.faulty = faulty
            fault = "reader" if faulty else "clear"
            sink("input_fault", {"input": self.name, "fault": fault}, time.ticks_ms())

    def _seen(self, uid, now, sink):
        # A tag absent for longer than the hold-off was lifted: seeing it again is a new
        # placement. Shorter gaps (missed polls, a quick lift-and-replace) are the same one.
        last = self.present.get(uid)
        if last is None or time.ticks_diff(now, last) > self.holdoff_ms:
            sink("scan", {"reader": self.name, "role": self.role, "uid": uid}, now)
        self.present[uid] = now

    def _forget(self, now):
        # Bounded memory: drop tags gone for longer than the hold-off.
        if not self.present:
            return
        for uid, seen in list(self.present.items()):
            if time.ticks_diff(now, seen) > self.holdoff_ms:
                del self.present[uid]

    async def _init(self):
        async with self.lock:
            ok = await self.chip.init()
            if ok:
                self.chip.antenna(False)  # the field is on only while polling
        return ok

    async def run(self, sink):
        while not await self._init():
            print("rfid %s: no MFRC522 answers; retrying" % self.name)
            self._report(True, sink)
            await asyncio.sleep_ms(INIT_RETRY_MS)
        self._report(False, sink)
        while True:
            await self.poll(sink)
            await asyncio.sleep_ms(self.period_ms)
