# The state of a virtual board's bench: input levels a test drives, outputs the
# firmware drives, ADC readings, SPI devices on chip-select pins, pixels, radio.
import gc


class Bench:
    RESET_EXIT = 75  # exit status of a virtual board that asked for machine.reset()

    def __init__(self):
        self.inputs = {}  # pin -> level driven from outside (absent: pull level)
        self.outputs = {}  # pin -> level the firmware drives
        self.modes = {}
        self.pulls = {}
        self.adc = {}  # pin -> 0..65535
        self.spi_devices = {}  # cs pin -> device model
        self.pixels = {}  # data pin -> [(r, g, b), ...]
        self.uid = b"\x24\x6f\x28\x00\x00\x01"
        self.reset_cause = 1
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
    def level(self, pin):
        if pin in self.inputs:
            return self.inputs[pin]
        if pin in self.outputs:
            return self.outputs[pin]
        return 1 if self.pulls.get(pin) == 1 else 0

    def set_output(self, pin, level):
        was = self.outputs.get(pin)
        self.outputs[pin] = level
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
