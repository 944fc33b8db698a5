# The state of a virtual board's bench: input levels a test drives, outputs the
# firmware drives, ADC readings, SPI devices on chip-select pins, pixels, radio.
import gc
import os

RESET_FILE = "vboard.reset"  # the virtual chip's reset-reason register, across its resets
# machine.PWRON_RESET, HARD_RESET, WDT_RESET on the ESP32 port, whose reset_cause() gives
# HARD_RESET after machine.reset() (esp_restart) or a panic, WDT_RESET after the watchdog.
POWER_ON, HARD_RESET, WDT_RESET = 1, 2, 3


def _reset_cause():
    # Why this boot started: what the last reset left, else a power-on.
    try:
        with open(RESET_FILE) as f:
            cause = int(f.read())
        os.remove(RESET_FILE)
        return cause
    except (OSError, ValueError):
        return POWER_ON


def _span(first, last):
    return set(range(first, last + 1))


# The pins MicroPython's machine.Pin takes on each chip, and those without an output driver.
CHIP_PINS = {
    "esp32": (_span(0, 19) | _span(21, 23) | _span(25, 27) | _span(32, 39), _span(34, 39)),
    "esp32s3": (_span(0, 21) | _span(26, 48), set()),
}
from time import ticks_diff, ticks_ms, ticks_us


HARDWARE_US_MASK = (1 << 30) - 1  # the largest small int of a 32-bit VM: no allocation
# No call into the bench takes a millisecond of CPU; a longer one was preempted by another
# process (the machine is shared), and the rest of its wall time is nobody's CPU.
HARDWARE_CALL_MAX_US = 1000


def hardware(method):
    # Time spent in the virtual hardware is silicon (or C) on a chip: counted apart
    # (Bench.hardware_us, modulo HARDWARE_US_MASK + 1) so that the firmware's own CPU time can
    # be told from it. The firmware calls hal's pins and bus, which call the bench's methods:
    # the outermost call counts, with hal's own Python in it (an ESP32 runs that part in C);
    # timing the inner ones alone left ~5 us a register access on the firmware's side.
    # Two fixed arguments: varargs would allocate on every pin read.
    def timed(self, a=None, b=None):
        if bench.timing:
            return method(self, a, b)
        bench.timing = True
        t = ticks_us()
        try:
            return method(self, a, b)
        finally:
            d = min(ticks_diff(ticks_us(), t), HARDWARE_CALL_MAX_US)
            bench.hardware_us = (bench.hardware_us + d) & HARDWARE_US_MASK
            # this wrapper's own time outside `t`, which the bench calibrates (bench/idle.py)
            bench.hardware_calls = (bench.hardware_calls + 1) & HARDWARE_US_MASK
            bench.timing = False

    return timed


class Bench:
    RESET_EXIT = 75  # exit status of a virtual board that asked for machine.reset()
    WDT_RESET = WDT_RESET
    HARD_RESET = HARD_RESET

    def __init__(self):
        self.inputs = {}  # pin -> level driven from outside (absent: pull level)
        self.outputs = {}  # pin -> level the firmware drives
        self.toggles = {}  # pin -> how often the firmware changed its level
        self.modes = {}
        self.pulls = {}
        self.adc = {}  # pin -> 0..65535
        self.spi_devices = {}  # cs pin -> device model
        self.pixels = {}  # data pin -> [(r, g, b), ...]
        self.uid = b"\x24\x6f\x28\x00\x00\x01"
        self.reset_cause = _reset_cause()
        self.chip = None  # "esp32", "esp32s3": Pin refuses what that chip refuses; None: any pin
        self.refused = {}  # pin -> why the chip refuses it (a test's fault injection)
        self.reset_requested = None  # the cause of the reset the firmware asked for
        self.wifi_started = False
        self.wifi_link = True
        self.connections = []  # sockets of the TCP connections opened through the radio
        self.rssi = -58
        self.clock_set = True
        self.clock_offset = 0  # ms the virtual RTC is ahead of the host clock
        self.wdt_feeds = 0
        self.heap_peak = 0
        self._sampled_at = None  # ticks_ms of the last sample at a pin access
        self.hardware_us = 0  # time spent in the virtual hardware (hardware())
        self.hardware_calls = 0  # the calls timed so, modulo HARDWARE_US_MASK + 1
        self.timing = False  # inside a timed call: the calls it makes are counted with it
        self.irqs = {}  # pin -> (trigger mask, handler, pin object) or None: Pin.irq
        self.pin_heap = 0  # bytes the virtual Pin objects and their entries here took

    def _edge(self, pin, was):
        # A level change fires the pin's IRQ handler with the pin, as an ESP32 does (trigger
        # bits 1 = rising, 2 = falling: Pin.IRQ_*). It runs at once, in the caller's thread:
        # the loop's, as whoever drives a pin is a task (hal.EdgeFlag relies on it).
        irq = self.irqs.get(pin)
        now = self.level(pin)
        if irq is None or now == was or not irq[0] & (1 if now else 2):
            return
        irq[1](irq[2])

    # -- driven from outside (tests, simulator controller) --
    def drive(self, pin, level):
        was = self.level(pin)
        self.inputs[pin] = 1 if level else 0
        self._edge(pin, was)

    def release(self, pin):
        was = self.level(pin)
        self.inputs.pop(pin, None)
        self._edge(pin, was)

    def set_adc(self, pin, value):
        self.adc[pin] = value

    def set_wifi(self, up):
        # A drop ends every connection as a real one does: their sockets fail, and the peer
        # (the broker) sees the connection end. hal refuses new ones until Wi-Fi is back.
        self.wifi_link = up
        if not up:
            for s in self.connections:
                s.close()
            self.connections = []

    def connected(self, sock):
        self.connections = [s for s in self.connections if _is_open(s)]
        self.connections.append(sock)

    def attach(self, cs_pin, device):
        self.spi_devices[cs_pin] = device

    def output(self, pin):
        return self.outputs.get(pin)

    # -- used by the fake peripherals --
    def refuses(self, pin, output):
        # Why the chip raises on this pin (as machine.Pin does), or None.
        if pin in self.refused:
            return self.refused[pin]
        if self.chip is None:
            return None
        exists, input_only = CHIP_PINS[self.chip]
        if pin not in exists:
            return "invalid pin"
        if output and pin in input_only:
            return "pin can only be input"
        return None

    def reset(self, cause):
        # machine.reset() or the watchdog: the next boot reads the cause.
        self.reset_requested = cause
        with open(RESET_FILE, "w") as f:
            f.write(str(cause))
    @hardware
    def read(self, pin, _=None):
        return self.level(pin)

    @hardware
    def read_adc(self, pin, _=None):
        return self.adc.get(pin, 0)

    def level(self, pin):
        if pin in self.inputs:
            return self.inputs[pin]
        if pin in self.outputs:
            return self.outputs[pin]
        return 1 if self.pulls.get(pin) == 1 else 0

    @hardware
    def set_output(self, pin, level):
        was = self.outputs.get(pin)
        self.outputs[pin] = level
        if was is not None and was != level:
            self.toggles[pin] = self.toggles.get(pin, 0) + 1
        dev = self.spi_devices.get(pin)
        if dev is not None and was != level:
            # chip select is active low
            if level:
                dev.deselect()
            else:
                dev.select()

    @hardware
    def spi_transfer(self, bus, out):
        for cs, dev in self.spi_devices.items():
            if self.outputs.get(cs) == 0:
                return dev.transfer(bytes(out))
        return b"\xff" * len(out)  # nobody selected: the bus floats high

    @hardware
    def sample_heap(self, _a=None, _b=None):
        a = gc.mem_alloc()
        if a > self.heap_peak:
            self.heap_peak = a

    def sample_heap_often(self):
        # At a pin or ADC access, at most once a millisecond: gc.mem_alloc() walks the whole
        # heap's allocation table, which took 90 % of a virtual register access and swamped
        # the firmware's share of an idle board's CPU (bench/idle.py) with timing noise.
        now = ticks_ms()
        if now != self._sampled_at:
            self._sampled_at = now
            self.sample_heap()


def _is_open(sock):
    try:
        return sock.fileno() >= 0  # -1 once closed
    except (AttributeError, OSError):  # a TLS socket may not say: keep it, closing is idempotent
        return True


bench = Bench()
