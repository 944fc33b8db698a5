# A register-level model of the NXP MFRC522 and of ISO 14443-3 Type A tags in its field.
# Attach it to a chip-select pin (`bench.attach(cs, model)`); it answers at SPI byte level
# as the datasheet describes, so the firmware driver runs against it unchanged.
import random
import time

# registers (MFRC522 datasheet, section 9)
COMMAND = 0x01
COM_IEN = 0x02
COM_IRQ = 0x04
DIV_IRQ = 0x05
ERROR = 0x06
STATUS2 = 0x08
FIFO_DATA = 0x09
FIFO_LEVEL = 0x0A
CONTROL = 0x0C
BIT_FRAMING = 0x0D
COLL = 0x0E
MODE = 0x11
TX_MODE = 0x12
RX_MODE = 0x13
TX_CONTROL = 0x14
TX_ASK = 0x15
CRC_RESULT_H = 0x21
CRC_RESULT_L = 0x22
T_MODE = 0x2A
T_PRESCALER = 0x2B
T_RELOAD_H = 0x2C
T_RELOAD_L = 0x2D
VERSION = 0x37

# commands
IDLE = 0x00
CALC_CRC = 0x03
TRANSMIT = 0x04
TRANSCEIVE = 0x0C
SOFT_RESET = 0x0F

# ComIrqReg bits
TX_IRQ = 0x40
RX_IRQ = 0x20
IDLE_IRQ = 0x10
ERR_IRQ = 0x02
TIMER_IRQ = 0x01
CRC_IRQ = 0x04  # DivIrqReg
COLL_ERR = 0x08  # ErrorReg
BUFFER_OVFL = 0x10

# reset values of the registers that are not zero after power-up or SoftReset
_RESET = {COMMAND: 0x20, COM_IEN: 0x80, COM_IRQ: 0x14, 0x07: 0x21, 0x0B: 0x08, CONTROL: 0x10,
          COLL: 0xA0, MODE: 0x3F, TX_CONTROL: 0x80, CRC_RESULT_H: 0xFF, CRC_RESULT_L: 0xFF,
          0x24: 0x26, 0x26: 0x48, 0x27: 0x88, 0x28: 0x20, 0x29: 0x20, VERSION: 0x92}
_CRC_PRESET = (0x0000, 0x6363, 0xA671, 0xFFFF)  # ModeReg CRCPreset
FIFO_SIZE = 64

# ISO 14443-3 Type A
REQA = 0x26
WUPA = 0x52
SEL = (0x93, 0x95, 0x97)  # cascade levels 1, 2, 3
CT = 0x88  # cascade tag
TAG_IDLE, TAG_READY, TAG_ACTIVE, TAG_HALT = "IDLE", "READY", "ACTIVE", "HALT"


def crc_a(data, crc=0x6363):
    # ISO 14443-3 Annex B: CRC_A, transmitted low byte first.
    for b in data:
        b ^= crc & 0xFF
        b = (b ^ (b << 4)) & 0xFF
        crc = (crc >> 8) ^ (b << 8) ^ (b << 3) ^ (b >> 4)
    return crc & 0xFFFF


def with_crc(data):
    c = crc_a(data)
    return bytes(data) + bytes((c & 0xFF, c >> 8))


def bit(data, i):
    return (data[i >> 3] >> (i & 7)) & 1


class Tag:
    # A PICC: its UID split into cascade levels (UID CLn + BCC), and its ISO 14443-3 state.
    def __init__(self, uid, sak=0x00):
        uid = bytes(uid)
        if len(uid) not in (4, 7, 10):
            raise ValueError("a Type A UID has 4, 7 or 10 bytes")
        self.uid = uid
        parts = {4: (uid,), 7: (b"\x88" + uid[:3], uid[3:]),
                 10: (b"\x88" + uid[:3], b"\x88" + uid[3:6], uid[6:])}[len(uid)]
        self.levels = [p + bytes((p[0] ^ p[1] ^ p[2] ^ p[3],)) for p in parts]
        self.atqa = bytes(((len(parts) - 1) << 6 | 0x04, 0x00))
        self.sak = sak & ~0x04
        self.power_off()

    def power_off(self):
        self.state = TAG_IDLE
        self.level = 0
        self.from_halt = False

    def _back(self):
        # An unexpected frame sends a READY or ACTIVE tag back where it was woken from.
        self.state = TAG_HALT if self.from_halt else TAG_IDLE
        self.level = 0

    def hear(self, data, nbits):
        # One reader frame; returns the answer as (bytes, first bit, end bit) or None.
        if nbits == 7:
            cmd = data[0] & 0x7F
            if cmd == REQA and self.state == TAG_IDLE or cmd == WUPA and self.state in (TAG_IDLE, TAG_HALT):
                self.from_halt = self.state == TAG_HALT
                self.state = TAG_READY
                self.level = 0
                return self.atqa, 0, 16
            if self.state in (TAG_READY, TAG_ACTIVE):
                self._back()
            return None
        if self.state == TAG_READY and nbits >= 16 and data[0] == SEL[self.level]:
            return self._select(data, nbits)
        if self.state == TAG_ACTIVE and nbits == 32 and data == with_crc(b"\x50\x00"):
            self.state = TAG_HALT
            return None
        if self.state in (TAG_READY, TAG_ACTIVE):
            self._back()
        return None

    def _select(self, data, nbits):
        cl = self.levels[self.level]
        nvb = data[1]
        if nvb == 0x70:
            if nbits != 72 or data != with_crc(data[:7]) or data[2:7] != cl:
                self._back()
                return None
            if self.level + 1 < len(self.levels):
                self.level += 1
                return with_crc(b"\x04"), 0, 24
            self.state = TAG_ACTIVE
            return with_crc(bytes((self.sak,))), 0, 24
        known = (nvb >> 4) * 8 + (nvb & 0x0F) - 16
        if nvb & 0x08 or known < 0 or known > 39 or nbits != known + 16:
            self._back()
            return None
        for i in range(known):
            if bit(data, 16 + i) != bit(cl, i):
                return None  # not this tag's branch: it stays READY and silent
        return cl, known, 40


class MFRC522:
    def __init__(self, latency_ms=1, seed=1):
        self.tags = []
        self.latency_ms = latency_ms  # air time of an answer
        self.garbage = None  # None, "random", "crc" (bad CRC_A on SAK) or "bcc" (bad BCC)
        self.frames = 0  # frames the chip has sent to the field
        self.removals = []  # [tag, frames left]
        self.stuck_miso = None  # a byte MISO reads whatever the chip says (a bus fault)
        random.seed(seed)  # garbage is the same at every run
        self.regs = bytearray(64)
        self.selected = False
        self.soft_reset()

    # -- test hooks --
    def place(self, uid, sak=0x00):
        tag = Tag(uid, sak)
        self.tags.append(tag)
        return tag

    def remove(self, uid):
        self.tags = [t for t in self.tags if t.uid != bytes(uid)]

    def remove_after(self, uid, frames):
        # The tag answers `frames` more frames, then leaves the field (removed mid-read).
        for t in self.tags:
            if t.uid == bytes(uid):
                self.removals.append([t, frames])

    def field_on(self):
        return self.regs[TX_CONTROL] & 0x03 != 0

    # -- the chip --
    def soft_reset(self):
        for i in range(64):
            self.regs[i] = _RESET.get(i, 0)
        self.fifo = bytearray()
        self.addr = None
        self.pending = None  # (answer bytes, bit count, collision bit or None, due ticks)
        self.started = None  # ticks_us when the last Transceive went out without an answer
        for t in self.tags:
            t.power_off()

    def select(self):
        self.selected = True
        self.addr = None

    def deselect(self):
        self.selected = False

    def transfer(self, out):
        # MOSI: an address byte (bit 7 = read, bits 6..1 = register), then either data to
        # write to that register or, when reading, the next address; MISO lags by one byte.
        rx = bytearray(len(out))
        for i, b in enumerate(out):
            if self.addr is None:
                self.addr = b
            elif self.addr & 0x80:
                rx[i] = self.read(self.addr >> 1 & 0x3F)
                self.addr = b | 0x80
            else:
                self.write(self.addr >> 1 & 0x3F, b)
        if self.stuck_miso is not None:  # the chip still hears MOSI; nobody hears it
            return bytes((self.stuck_miso,)) * len(out)
        return bytes(rx)

    def read(self, reg):
        self._update()
        if reg == FIFO_DATA:
            if not self.fifo:
                return 0
            b = self.fifo[0]
            self.fifo = self.fifo[1:]
            return b
        if reg == FIFO_LEVEL:
            return len(self.fifo)
        return self.regs[reg]

    def write(self, reg, v):
        if reg == FIFO_DATA:
            if len(self.fifo) < FIFO_SIZE:
                self.fifo.append(v)
            else:
                self.regs[ERROR] |= BUFFER_OVFL
        elif reg == FIFO_LEVEL:
            if v & 0x80:
                self.fifo = bytearray()
                self.regs[ERROR] &= ~BUFFER_OVFL
        elif reg in (COM_IRQ, DIV_IRQ):
            # bit 7 (Set1/Set2) says whether the marked bits are set or cleared
            self.regs[reg] = self.regs[reg] | v & 0x7F if v & 0x80 else self.regs[reg] & ~v
        elif reg == COMMAND:
            self._command(v)
        elif reg == BIT_FRAMING:
            self.regs[reg] = v & 0x7F
            if v & 0x80 and self.regs[COMMAND] & 0x0F == TRANSCEIVE:
                self._transceive()
        elif reg == TX_CONTROL:
            was = self.field_on()
            self.regs[reg] = v
            if was and not self.field_on():
                for t in self.tags:  # no field, no power: every tag starts again
                    t.power_off()
        elif reg != VERSION:
            self.regs[reg] = v

    def _command(self, v):
        cmd = v & 0x0F
        self.regs[COMMAND] = v & 0x3F
        self.pending = None
        self.started = None
        if cmd == SOFT_RESET:
            self.soft_reset()
        elif cmd == CALC_CRC:
            c = crc_a(self.fifo, _CRC_PRESET[self.regs[MODE] & 0x03])
            self.fifo = bytearray()
            self.regs[CRC_RESULT_H] = c >> 8
            self.regs[CRC_RESULT_L] = c & 0xFF
            self.regs[DIV_IRQ] |= CRC_IRQ
        elif cmd == TRANSMIT:
            self._send()
            self.regs[COMMAND] &= 0xF0
            self.regs[COM_IRQ] |= TX_IRQ | IDLE_IRQ

    def _send(self):
        # The FIFO goes out as one frame (TxLastBits valid bits in its last byte).
        data = bytes(self.fifo)
        self.fifo = bytearray()
        self.regs[ERROR] = 0
        last = self.regs[BIT_FRAMING] & 0x07
        nbits = len(data) * 8 - (8 - last if last else 0)
        self.frames += 1
        answers = []
        if self.field_on():
            for t in self.tags:
                a = t.hear(data, nbits)
                if a is not None:
                    answers.append(self._spoil(a))
        for r in self.removals:
            r[1] -= 1
            if r[1] <= 0 and r[0] in self.tags:
                self.tags.remove(r[0])
        self.removals = [r for r in self.removals if r[1] > 0]
        return answers

    def _spoil(self, answer):
        # Garbage mode: what a detuned antenna, a noisy cable or a broken tag might answer.
        data, first, end = answer
        if self.garbage == "random":
            n = random.randint(1, 6)
            return bytes(random.getrandbits(8) for _ in range(n)), 0, n * 8
        if self.garbage == "crc" and end == 24:
            return bytes((data[0], data[1] ^ 0x5A, data[2])), first, end
        if self.garbage == "bcc" and end == 40:
            return data[:4] + bytes((data[4] ^ 0x01,)), first, end
        return answer

    def _transceive(self):
        answers = self._send()
        self.regs[COM_IRQ] |= TX_IRQ
        due = time.ticks_add(time.ticks_ms(), self.latency_ms)
        if answers:
            self.pending = self._merge(answers) + (due,)
        elif self.regs[T_MODE] & 0x80:  # TAuto: the timer starts when the frame is sent
            self.started = time.ticks_us()

    def _merge(self, answers):
        # The tags modulate together: the chip hears their common bits, and the first bit
        # where they differ is a collision; with ValuesAfterColl = 0 the rest reads as 0.
        n = max(a[2] - a[1] for a in answers)
        bits = bytearray(n)
        coll = None
        for i in range(n):
            seen = set(bit(d, f + i) for d, f, e in answers if f + i < e)
            if len(seen) > 1 and coll is None:
                coll = i
            if coll is not None and (i > coll or not self.regs[COLL] & 0x80):
                bits[i] = 0
            else:
                bits[i] = max(seen)
        return bits, coll

    def _timeout_us(self):
        prescaler = (self.regs[T_MODE] & 0x0F) << 8 | self.regs[T_PRESCALER]
        reload = self.regs[T_RELOAD_H] << 8 | self.regs[T_RELOAD_L]
        return (reload + 1) * (2 * prescaler + 1) * 100 // 1356

    def _update(self):
        # Time passes between register accesses: deliver a due answer, or let the timer run out.
        if self.pending is not None and time.ticks_diff(time.ticks_ms(), self.pending[2]) >= 0:
            bits, coll, _ = self.pending
            self.pending = None
            self._receive(bits, coll)
        if self.started is not None and time.ticks_diff(time.ticks_us(), self.started) >= self._timeout_us():
            self.started = None
            self.regs[COM_IRQ] |= TIMER_IRQ

    def _receive(self, bits, coll):
        align = self.regs[BIT_FRAMING] >> 4 & 0x07  # RxAlign: where the first bit lands
        total = align + len(bits)
        data = bytearray((total + 7) // 8)
        for i, b in enumerate(bits):
            if b:
                p = align + i
                data[p >> 3] |= 1 << (p & 7)
        for b in data:
            self.write(FIFO_DATA, b)
        self.regs[CONTROL] = self.regs[CONTROL] & 0xF8 | total & 0x07  # RxLastBits
        irq = RX_IRQ
        if coll is not None:
            pos = align + coll + 1  # CollPos counts bits as they land in the FIFO, from 1
            self.regs[COLL] = self.regs[COLL] & 0x80 | (pos & 0x1F if pos <= 32 else 0x20)
            self.regs[ERROR] |= COLL_ERR
        if self.regs[ERROR]:
            irq |= ERR_IRQ
        self.regs[COM_IRQ] |= irq
