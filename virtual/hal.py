# The virtual board's hardware: the same names as firmware/lib/hal.py, backed by
# state that a test or the simulator sets and reads through `bench`.
# This is the only fake-hardware implementation: unit tests and `andon sim` both load it.
import asyncio
import errno
import gc
import machine
import time

from vdevices import bench, hardware


_PINS = {}


class Pin(machine.PinBase):
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 1  # the ESP32 port's values
    IRQ_FALLING = 2

    def __new__(cls, id, mode=-1, pull=-1, value=None):
        # One object per pin, as an ESP32's, whose Pin objects are constants in ROM: the heap
        # a virtual one takes is the bench's, counted apart (Bench.pin_heap).
        pin = _PINS.get(id)
        if pin is None:
            before = gc.mem_alloc()
            pin = _PINS[id] = super().__new__(cls)
            pin.id = id
            bench.pin_heap += max(0, gc.mem_alloc() - before)
        return pin

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None):
        why = bench.refuses(self.id, mode in (Pin.OUT, Pin.OPEN_DRAIN))
        if why:
            raise ValueError(why)
        before = gc.mem_alloc()
        if mode != -1:
            bench.modes[self.id] = mode
        if pull != -1:
            bench.pulls[self.id] = pull
        bench.pin_heap += max(0, gc.mem_alloc() - before)
        if value is not None:
            self.value(value)

    @hardware
    def value(self, v=None, _=None):
        bench.sample_heap_often()
        if v is None:
            return bench.read(self.id)
        bench.set_output(self.id, 1 if v else 0)

    def irq(self, handler=None, trigger=IRQ_FALLING | IRQ_RISING):
        # As on an ESP32: handler(pin) runs soon after each edge in `trigger`; None removes it.
        before = gc.mem_alloc()
        bench.irqs[self.id] = None if handler is None else (trigger, handler, self)
        bench.pin_heap += max(0, gc.mem_alloc() - before)

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class ADC:
    ATTN_11DB = 3

    def __init__(self, pin, atten=None):
        self.id = pin.id if isinstance(pin, Pin) else pin

    def atten(self, a):
        pass

    @hardware
    def read_u16(self, _a=None, _b=None):
        bench.sample_heap_often()
        return bench.read_adc(self.id)


class SPI:
    def __init__(self, id=1, baudrate=1000000, polarity=0, phase=0, sck=None, mosi=None, miso=None):
        if id not in (1, 2):  # as the ESP32 port: SPI(0) is the flash's
            raise ValueError("SPI(%s) doesn't exist" % id)
        self.id = id

    @hardware
    def write_readinto(self, out, into):
        rx = bench.spi_transfer(self.id, out)
        for i in range(len(into)):
            into[i] = rx[i]

    @hardware
    def write(self, out, _=None):
        bench.spi_transfer(self.id, out)

    def readinto(self, into, write=0):
        rx = bench.spi_transfer(self.id, bytes([write]) * len(into))
        for i in range(len(into)):
            into[i] = rx[i]

    def read(self, n, write=0):
        return bench.spi_transfer(self.id, bytes([write]) * n)


class WDT:
    # Once started it cannot be stopped: not fed for `timeout` ms, it resets the board. It
    # checks from a task of the loop that created it, which is the loop a stall starves, when
    # the last feed's timeout is over: an ESP32's watchdog is a hardware timer, and a check
    # every 100 ms was 10 wakes a second of an idle board's CPU, counted as the firmware's.
    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.feed()
        asyncio.create_task(self._bite())

    def feed(self):
        bench.wdt_feeds += 1
        self.fed = time.ticks_ms()

    async def _bite(self):
        while True:
            left = self.timeout - time.ticks_diff(time.ticks_ms(), self.fed)
            if left <= 0:
                break
            await asyncio.sleep_ms(left)
        print("WDT: not fed for %d ms: reset" % self.timeout)
        _reset(bench.WDT_RESET)


class NeoPixel:
    def __init__(self, pin, n, bpp=3, timing=1):
        self.pin = pin.id if isinstance(pin, Pin) else pin
        self.buf = [(0, 0, 0)] * n

    def __len__(self):
        return len(self.buf)

    def __setitem__(self, i, rgb):
        self.buf[i] = rgb

    def __getitem__(self, i):
        return self.buf[i]

    def fill(self, rgb):
        for i in range(len(self.buf)):
            self.buf[i] = rgb

    def write(self):
        bench.pixels[self.pin] = list(self.buf)


def chip():
    return bench.chip


def unique_id():
    return bench.uid


def reset_cause():
    return bench.reset_cause


class EdgeFlag:
    # asyncio.ThreadSafeFlag's interface on an Event. The bench calls IRQ handlers from the
    # loop's own thread (vdevices), so an Event is safe here; and on the unix port a
    # ThreadSafeFlag makes the loop's poll wake every millisecond (the chip sleeps on it).
    def __init__(self):
        self._event = asyncio.Event()

    def set(self):
        self._event.set()

    def clear(self):
        self._event.clear()

    async def wait(self):
        await self._event.wait()
        self._event.clear()


def edge_flag():
    return EdgeFlag()


def adc(pin):
    return ADC(Pin(pin))


def wifi_start(ssid, password):
    bench.wifi_started = True


def wifi_up():
    return bench.wifi_started and bench.wifi_link


_open_connection = asyncio.open_connection


async def _open_by_radio(*args, **kwargs):
    # Every TCP connection the firmware opens goes through the radio: none while Wi-Fi is
    # down, and each one ends with the next drop (bench.set_wifi).
    if not wifi_up():
        raise OSError(errno.EHOSTUNREACH)
    stream, writer = await _open_connection(*args, **kwargs)
    if not wifi_up():  # dropped while connecting
        stream.s.close()
        raise OSError(errno.EHOSTUNREACH)
    bench.connected(stream.s)
    return stream, writer


asyncio.open_connection = _open_by_radio


def rssi():
    return bench.rssi if wifi_up() else None


def set_wall_ms(ms):
    bench.clock_offset = ms - time.time_ns() // 1000000
    bench.clock_set = True


def wall_ms():
    return time.time_ns() // 1000000 + bench.clock_offset if bench.clock_set else None


def _reset(cause):
    # A reset of a virtual board ends its process; whoever runs it boots it again.
    bench.reset(cause)
    raise SystemExit(bench.RESET_EXIT)


def reset():
    _reset(bench.HARD_RESET)


gc.collect()
