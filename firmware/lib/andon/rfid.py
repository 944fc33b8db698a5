# RFID readers on kanban posts, receiving points and badge stations: one scan per placement.
import asyncio
import time
from binascii import hexlify

MAX_TAGS = 4  # tags read per poll; a kanban post holds one card, a stack a few
# An idle poll wakes the readers' task 3 times (field on; REQA once the field has settled; the
# chip's answer window, then field off): 5 polls a second of a tap reader and 2 of a post are
# most of what an idle ESP32 does. A tag is read at the first poll after it is placed, within
# a period, the other reader's turn and its own read (about 250 ms, bench/firmware.py measures
# it): a tap of 300 ms or more is always caught. People tap for 0.3-1 s.
PERIOD_MS = 200
# A kanban card is not tapped on its post: it is put there and stays until it is collected.
# Read within about 550 ms instead of 250 is nothing to a refill, and each poll with a card
# on the post is a whole read (the field drops between polls): the post polls 2.5x less.
POST_PERIOD_MS = 500
INIT_RETRY_MS = 5000
CHECK_EVERY = 20  # polls between checks of the chip's registers; at once after a failed read
# The readers' task wakes at least this often, so that the watchdog sees it alive (Readers.
# rounds) while every reader waits out INIT_RETRY_MS.
ROUND_MAX_MS = 1000
# A reader due this soon after another's turn (an empty poll's length) takes its turn with it,
# a little early, rather than after a wake of its own: readers at one pace stay together.
TOGETHER_MS = 10


class Reader:
    def __init__(self, name, role, driver, holdoff_ms=1500, period_ms=None):
        self.name = name
        self.role = role
        self.chip = driver
        self.holdoff_ms = holdoff_ms
        if period_ms is None:
            period_ms = POST_PERIOD_MS if role == "post" else PERIOD_MS
        self.period_ms = period_ms
        self.ready = False  # the chip answered its init
        self.due = 0  # ticks_ms of its next turn (Readers.run)
        self.present = {}  # uid hex -> ticks_ms when last seen
        self.polls = 0  # advances every poll
        self.faulty = False  # the chip does not answer sanely: input_fault "reader" was sent

    async def poll(self, sink):
        # Power the field, read every tag in it, power it down: each poll finds all tags
        # afresh (a halted tag wakes again only after the field drops). A faulty reader is
        # only checked, every CHECK_EVERY polls, until it answers again. An empty poll is the
        # idle board's main work: its path is kept flat (no nested coroutines but the read's).
        chip = self.chip
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

    async def turn(self, sink):
        # This reader's turn with the bus: its chip's init until one answers (a reader that
        # never answered is a fault from the start), then a poll. The ms until its next turn.
        if not self.ready:
            self.ready = await self.chip.init()
            if not self.ready:
                print("rfid %s: no MFRC522 answers; retrying" % self.name)
                self._report(True, sink)
                return INIT_RETRY_MS
            self.chip.antenna(False)  # the field is on only while polling
            self._report(False, sink)
        await self.poll(sink)
        return self.period_ms


class Readers:
    # A station's readers in one task, which polls each when its period is due and sleeps
    # until the next one is. They take turns anyway (they share the SPI bus, and neighbouring
    # antennas disturb each other): in one task the turns need no lock, readers due together
    # are polled back to back (the one's field goes off and the next one's on in the same
    # wake), and one probe tells the watchdog whether any reader hangs.
    def __init__(self, readers):
        self.all = readers
        self.rounds = 0  # advances every pass: a liveness probe for the watchdog

    def faulty(self):
        for r in self.all:
            if r.faulty:
                return True
        return False

    async def run(self, sink):
        readers = self.all
        for r in readers:
            r.due = time.ticks_ms()
        while True:
            self.rounds += 1
            first = readers[0]  # the reader whose turn comes first, or came longest ago
            for r in readers:
                if time.ticks_diff(r.due, first.due) < 0:
                    first = r
            left = time.ticks_diff(first.due, time.ticks_ms())
            if left > TOGETHER_MS:
                await asyncio.sleep_ms(min(left, ROUND_MAX_MS))
                continue
            # No sleep between turns due together: the one's field goes off and the next
            # one's comes on in the same wake.
            ms = await first.turn(sink)
            first.due = time.ticks_add(time.ticks_ms(), ms)
