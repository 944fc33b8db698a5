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

    # -- driven from outside (tests, simulator controller) --
    def drive(self, pin, level):
        self.inputs[pin] = 1 if level else 0

    def release(self, pin):
        self.inputs.pop(pin, None)

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

    def level(self, pin):
        if pin in self.inputs:
            return self.inputs[pin]
        if pin in self.outputs:
            return self.outputs[pin]
        return 1 if self.pulls.get(pin) == 1 else 0

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

    def spi_transfer(self, bus, out):
        for cs, dev in self.spi_devices.items():
            if self.outputs.get(cs) == 0:
                return dev.transfer(bytes(out))
        return b"\xff" * len(out)  # nobody selected: the bus floats high

    def sample_heap(self):
        a = gc.mem_alloc()
        if a > self.heap_peak:
            self.heap_peak = a


def _is_open(sock):
    try:
        return sock.fileno() >= 0  # -1 once closed
    except (AttributeError, OSError):  # a TLS socket may not say: keep it, closing is idempotent
        return True


bench = Bench()
