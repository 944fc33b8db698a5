# NXP MFRC522 driver at register level, for ISO 14443-3 Type A tags (4-, 7- and 10-byte UIDs).
# Every wait yields to asyncio: the chip's own timer ends a receive, and the driver sleeps
# through it in one go, then reads the interrupt register, instead of spinning on it.
import asyncio
import time
from micropython import const

# registers
_COMMAND = const(0x01)
_COM_IRQ = const(0x04)
_DIV_IRQ = const(0x05)
_ERROR = const(0x06)
_FIFO_DATA = const(0x09)
_FIFO_LEVEL = const(0x0A)
_CONTROL = const(0x0C)
_BIT_FRAMING = const(0x0D)
_COLL = const(0x0E)
_MODE = const(0x11)
_TX_CONTROL = const(0x14)
_TX_ASK = const(0x15)
_CRC_H = const(0x21)
_CRC_L = const(0x22)
_T_MODE = const(0x2A)
_T_PRESCALER = const(0x2B)
_T_RELOAD_H = const(0x2C)
_T_RELOAD_L = const(0x2D)
_VERSION = const(0x37)
# commands
_IDLE = const(0x00)
_CALC_CRC = const(0x03)
_TRANSMIT = const(0x04)
_TRANSCEIVE = const(0x0C)
_SOFT_RESET = const(0x0F)
# interrupt and error bits
_RX_IRQ = const(0x20)
_IDLE_IRQ = const(0x10)
_ERR_IRQ = const(0x02)
_TIMER_IRQ = const(0x01)
_ENDS_RECEIVE = const(_RX_IRQ | _IDLE_IRQ | _ERR_IRQ | _TIMER_IRQ)
_CRC_IRQ = const(0x04)
_COLL_ERR = const(0x08)
_BAD = const(0x13)  # BufferOvfl, ParityErr, ProtocolErr
# ISO 14443-3 Type A
_REQA = const(0x26)
_WUPA = const(0x52)
_CT = const(0x88)
_SEL = (0x93, 0x95, 0x97)
_HLTA = b"\x50\x00\x57\xcd"  # HLTA with its CRC_A


class MFRC522:
    # A Type A tag answers REQA, anticollision and SELECT within about 91 us (ISO 14443-3's
    # frame delay time), its longest answer (5 bytes) over by 0.6 ms: a 3 ms timer covers it
    # five times over, and an empty poll (no tag, the usual case) ends after 3 ms instead of
    # 25. The driver sleeps through that window once: an idle reader's receive is one wake.
    def __init__(self, spi, cs, rst=None, timeout_ms=3):
        self.spi = spi
        self.cs = cs
        self.rst = rst
        self.timeout_ms = timeout_ms
        self.version = None
        self.errors = 0  # reads that failed after a tag answered: garbage, CRC/BCC, tag lost
        self.coll = 0  # collision position (1..32) in the last answer, 0 if none
        self.rotation = 0  # its bits choose the branch at each collision: see _anticollision
        self._colls = 0  # collisions resolved in the current read
        self._tx = bytearray(2)
        self._rx = bytearray(2)
        self._frame = bytearray(9)  # SEL, NVB, UID CLn (4 bytes), BCC, CRC_A (2 bytes)
        self._ans = bytearray(8)  # the last answer
        self._uid = bytearray(10)
        cs.value(1)

    # -- registers --
    def _read(self, reg):
        tx = self._tx
        tx[0] = 0x80 | reg << 1
        tx[1] = 0
        self.cs.value(0)
        self.spi.write_readinto(tx, self._rx)
        self.cs.value(1)
        return self._rx[1]

    def _write(self, reg, v):
        tx = self._tx
        tx[0] = reg << 1
        tx[1] = v
        self.cs.value(0)
        self.spi.write(tx)
        self.cs.value(1)

    def _load(self, data, n):
        # Stop whatever runs, empty the FIFO and put data[:n] in it.
        self._write(_COMMAND, _IDLE)
        self._write(_FIFO_LEVEL, 0x80)
        for i in range(n):
            self._write(_FIFO_DATA, data[i])

    async def _wait(self, reg, mask):
        # The chip's interrupt register, polled once a millisecond until `mask` shows. The
        # deadline backstops a chip that lost its settings (a brown-out) or went away.
        deadline = time.ticks_add(time.ticks_ms(), self.timeout_ms + 20)
        while True:
            irq = self._read(reg) & mask
            if irq or time.ticks_diff(time.ticks_ms(), deadline) > 0:
                return irq
            await asyncio.sleep_ms(1)

    # -- the chip --
    async def init(self):
        # Soft reset, timer, modulation, CRC preset, antenna on. False if no chip answers.
        if self.rst is not None:
            self.rst.value(1)  # out of hard power-down
        self._write(_COMMAND, _SOFT_RESET)
        for _ in range(50):  # the oscillator restarts: PowerDown clears when it is ready
            await asyncio.sleep_ms(1)
            if not self._read(_COMMAND) & 0x10:
                break
        v = self._read(_VERSION)
        if v in (0x00, 0xFF):
            return False
        self.version = v
        reload = min(self.timeout_ms * 40, 0x10000) - 1
        self._write(_T_MODE, 0x80)  # TAuto: the timer starts when a frame has been sent
        self._write(_T_PRESCALER, 0xA9)  # 13.56 MHz / (2 * 169 + 1): 25 us a tick
        self._write(_T_RELOAD_H, reload >> 8)
        self._write(_T_RELOAD_L, reload & 0xFF)
        self._write(_TX_ASK, 0x40)  # 100 % ASK, as Type A wants
        self._write(_MODE, 0x3D)  # CRC preset 0x6363: CRC_A
        self._write(_COLL, self._read(_COLL) & 0x7F)  # bits after a collision read as 0
        if not self._settings_kept():  # a stuck MISO line reads the same byte back for all
            return False
        self.antenna(True)
        return True

    def _settings_kept(self):
        # The registers init() set still read back: a chip reset (RST glitch, brown-out)
        # puts ModeReg back to 3Fh and the timer's prescaler to 0.
        return self._read(_MODE) == 0x3D and self._read(_T_PRESCALER) == 0xA9

    def check(self):
        # "ok"; "reset": the chip answers but lost its settings (init() again); "gone": it
        # does not answer sanely (unplugged: the bus reads FFh; a stuck MISO: one byte).
        if self._read(_VERSION) != self.version:
            return "gone"
        return "ok" if self._settings_kept() else "reset"

    def antenna(self, on):
        # Off, every tag loses power and starts again from IDLE when the field returns. The
        # register's other bits keep their reset value (80h): written whole, not read first.
        self._write(_TX_CONTROL, 0x83 if on else 0x80)

    async def _crc(self, data, n):
        # CRC_A of data[:n], computed by the chip's coprocessor; None if it never finishes.
        self._load(data, n)
        self._write(_DIV_IRQ, _CRC_IRQ)
        self._write(_COMMAND, _CALC_CRC)
        done = await self._wait(_DIV_IRQ, _CRC_IRQ)
        self._write(_COMMAND, _IDLE)
        return self._read(_CRC_L) | self._read(_CRC_H) << 8 if done else None

    async def _transceive(self, data, n, bits=0, align=0):
        # Send data[:n] (`bits` valid bits in its last byte, 0 = all); the answer's first bit
        # lands at bit `align` of its first byte. Its length (in self._ans), 0: none, -1: bad.
        self.coll = 0
        self._load(data, n)
        self._write(_COM_IRQ, 0x7F)
        self._write(_COMMAND, _TRANSCEIVE)
        self._write(_BIT_FRAMING, 0x80 | align << 4 | bits)  # StartSend, RxAlign, TxLastBits
        # An answer or the timer ends the receive within timeout_ms of the frame: sleep through
        # that in one go (one more millisecond for the granularity of ticks_ms), then look. On
        # the idle path (no tag) every wake and every coroutine counts: this is the only one.
        await asyncio.sleep_ms(self.timeout_ms + 1)
        irq = self._read(_COM_IRQ) & _ENDS_RECEIVE
        if not irq:  # the timer never fired: the chip lost its settings, or went away
            irq = await self._wait(_COM_IRQ, _ENDS_RECEIVE)
        self._write(_COMMAND, _IDLE)
        if not irq & (_RX_IRQ | _ERR_IRQ):
            return 0
        err = self._read(_ERROR)
        if err & _COLL_ERR:
            c = self._read(_COLL)
            if c & 0x20:  # CollPosNotValid
                return -1
            self.coll = c & 0x1F or 32
        level = self._read(_FIFO_LEVEL) & 0x7F
        if err & _BAD or level == 0 or level > len(self._ans) or self._read(_CONTROL) & 0x07:
            return -1
        for i in range(level):
            self._ans[i] = self._read(_FIFO_DATA)
        return level

    # -- ISO 14443-3 --
    def _fail(self):
        self.errors += 1
        return None

    def _atqa(self, n):
        # The answer to REQA or WUPA, n bytes long: the ATQA, or None when nobody answered.
        if n == 0:
            return None
        if n != 2:
            return self._fail()
        atqa = self._ans[0] | self._ans[1] << 8
        frame = atqa & 0x1F  # bit frame anticollision: exactly one bit set
        # Several tags' ATQAs may collide, which is fine; a clean one must be well formed.
        if not self.coll and (atqa & 0xC0 == 0xC0 or frame & (frame - 1) or not frame):
            return self._fail()
        return atqa

    async def _anticollision(self, level):
        # Learn UID CLn bit by bit into self._frame[2:7]; on a collision take the (1)b branch
        # (ISO 14443-3 6.5.3.1). True when all 40 bits are known and the BCC checks.
        f = self._frame
        f[0] = _SEL[level]
        for i in range(2, 7):
            f[i] = 0
        known = 0
        while True:
            whole, extra = known >> 3, known & 7
            f[1] = (2 + whole) << 4 | extra
            n = await self._transceive(f, 2 + whole + (extra > 0), extra, extra)
            if n != 5 - whole:
                return False
            a = self._ans
            mask = 0xFF << extra & 0xFF  # the answer's first bits complete our partial byte
            f[2 + whole] = f[2 + whole] & ~mask | a[0] & mask
            for i in range(1, n):
                f[2 + whole + i] = a[i]
            if not self.coll:
                return f[2] ^ f[3] ^ f[4] ^ f[5] == f[6]
            pos = whole * 8 + self.coll  # CollPos counts from the answer's first FIFO bit
            if pos <= known or pos > 32:
                return False
            # The (1)b branch, or the (0)b one when this read's bit of `rotation` says so:
            # a reader that cannot read every tag in one poll changes `rotation` at each,
            # so that no tag is always left last.
            mask = 1 << (pos - 1 & 7)
            if self.rotation >> self._colls & 1:
                f[2 + (pos - 1 >> 3)] &= ~mask
            else:
                f[2 + (pos - 1 >> 3)] |= mask
            self._colls += 1
            known = pos

    async def _select(self, level):
        # SELECT the UID CLn in self._frame; its SAK, or None (no answer, bad CRC_A).
        f = self._frame
        f[1] = 0x70
        crc = await self._crc(f, 7)
        if crc is None:
            return None
        f[7] = crc & 0xFF
        f[8] = crc >> 8
        if await self._transceive(f, 9) != 3 or self.coll:
            return None
        a = self._ans
        crc = await self._crc(a, 1)
        if crc != a[1] | a[2] << 8:
            return None
        return a[0]

    async def select(self):
        # Anticollision and select through cascade levels 1-3; the UID (bytes), or None.
        f = self._frame
        n = 0
        for level in range(3):
            if not await self._anticollision(level):
                return self._fail()
            sak = await self._select(level)
            if sak is None:
                return self._fail()
            if not sak & 0x04:  # UID complete
                if level == 0 and f[2] == _CT:
                    return self._fail()
                self._uid[n : n + 4] = f[2:6]
                return bytes(self._uid[: n + 4])
            if f[2] != _CT or level == 2:
                return self._fail()
            self._uid[n : n + 3] = f[3:6]
            n += 3

    async def halt(self):
        # HLTA: the selected tag goes to HALT and stays silent to REQA until the field drops.
        self._load(_HLTA, 4)
        self._write(_COM_IRQ, 0x7F)
        self._write(_BIT_FRAMING, 0)
        self._write(_COMMAND, _TRANSMIT)
        await self._wait(_COM_IRQ, _IDLE_IRQ | _ERR_IRQ)

    async def read(self, wake=False):
        # One tag's UID, which is then halted; None if no tag answers or its answer is bad.
        before = self.errors
        self._colls = 0
        self._frame[0] = _WUPA if wake else _REQA  # WUPA wakes HALT tags too; REQA only IDLE
        atqa = self._atqa(await self._transceive(self._frame, 1, 7))
        if atqa is None and self.errors == before:
            return None  # nobody answered
        uid = None if atqa is None else await self.select()
        # HLTA also sends a tag that a failed read left READY back to IDLE (ISO 14443-3:
        # an unexpected frame), so the next request finds it again.
        await self.halt()
        return uid
