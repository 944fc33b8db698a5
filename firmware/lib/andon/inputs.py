# Station inputs: stop cords, call buttons, acknowledge, cycle sensor.
# Debounce by confirmation: a new level must hold for the whole debounce window
# before it counts (ESPHome's delayed_on/off), so one spike on a long cord cable
# never stops a line. One task scans every input; a pass allocates nothing.
#
# The scan sleeps while every level is stable: a digital pin's edge interrupt wakes
# it, and it then scans every SCAN_MS until the new level has held for the debounce
# window (or went back), as before. Supervised inputs (ADC) have no interrupt: they
# are sampled every ADC_SCAN_MS. An idle board wakes little, so its CPU (most of an
# ESP32's at a 5 ms scan) is free, and its watchdog probe still moves each IDLE_SCAN_MS.
import asyncio
import time

import hal

SCAN_MS = 5  # while a level waits out its debounce window
ADC_SCAN_MS = 25  # supervised inputs, stable
IDLE_SCAN_MS = 500  # digital inputs, stable: a pin edge wakes the scan before this

# What a stable reading means. Digital inputs give NORMAL or ACTIVE; a supervised
# input's end-of-line network also tells wiring faults apart (docs/stack-light.md).
UNKNOWN = -1  # a cord before its first stable reading
NORMAL = 0
ACTIVE = 1
OPEN = 2
SHORT = 3
_FAULTS = (None, None, "open", "short")

# Supervised bands in read_u16 counts (pull-up 10k to 3.3 V, EOL 4.7k in series,
# 10k across the NC contact): short ~0 V, normal ~1.06 V = 20950, pulled ~1.96 V =
# 39000, open 3.3 V. Edges sit halfway between, far outside 5 % resistor tolerance.
SHORT_BELOW = 10500
PULLED_FROM = 30000
OPEN_FROM = 52000

_CALLS = {"call_maintenance": "maintenance", "call_quality": "quality", "call_material": "material"}


def band(u16):
    if u16 < SHORT_BELOW:
        return SHORT
    if u16 < PULLED_FROM:
        return NORMAL
    if u16 < OPEN_FROM:
        return ACTIVE
    return OPEN


class _Input:
    def __init__(self, cfg, edge):
        self.name = cfg["name"]
        self.role = cfg["role"]
        self.debounce = cfg["debounce_ms"]
        if cfg["adc"] is not None:
            self.read = hal.adc(cfg["adc"]).read_u16
            self.active_level = None
        else:
            pull = {"up": hal.Pin.PULL_UP, "down": hal.Pin.PULL_DOWN}.get(cfg["pull"])
            pin = hal.Pin(cfg["pin"], hal.Pin.IN, pull)
            pin.irq(handler=self._on_edge, trigger=hal.Pin.IRQ_RISING | hal.Pin.IRQ_FALLING)
            self.read = pin.value
            self.active_level = cfg["active"]
        # A cord reports its state once at boot, pulled or not: it may have been reset
        # while the board was off, and the gateway must not wait for a pull that never
        # comes. Buttons and sensors start at rest: a button held at boot is a press.
        self.stable = UNKNOWN if self.role == "cord" else NORMAL
        self.active = False
        self.candidate = self.stable  # the first reading starts the window
        self.since = 0
        # An edge since the last pass: the level moved, maybe unseen (a bounce, or during a
        # flash write, which stalls the whole chip for longer than a debounce window).
        self.bounced = False
        self._edge = edge

    def _on_edge(self, pin):
        self.bounced = True
        self._edge.set()

    def classify(self):
        raw = self.read()
        if self.active_level is None:
            return band(raw)
        return ACTIVE if raw == self.active_level else NORMAL

    def step(self, now, sink):
        state = self.classify()
        if state != self.candidate or self.bounced:
            self.bounced = False  # a level is confirmed only if no edge came in its window
            self.candidate = state
            self.since = now
        elif state != self.stable and time.ticks_diff(now, self.since) >= self.debounce:
            self.settle(state, sink)

    def settle(self, state, sink):
        was = self.stable
        self.stable = state
        if state >= OPEN:
            # A wiring fault says nothing about the cord: its last known state stays.
            sink("input_fault", {"input": self.name, "fault": _FAULTS[state]}, self.since)
            return
        if was >= OPEN:
            sink("input_fault", {"input": self.name, "fault": "clear"}, self.since)
        if (state == ACTIVE) != self.active or was == UNKNOWN:
            self.active = state == ACTIVE
            self.emit_edge(sink)

    def emit_edge(self, sink):
        role = self.role
        if role == "cord":
            sink("cord_pulled" if self.active else "cord_reset", {"input": self.name}, self.since)
        elif not self.active:
            return  # buttons and the cycle sensor count on activation only
        elif role in _CALLS:
            sink("call", {"input": self.name, "reason": _CALLS[role]}, self.since)
        else:
            sink(role, {"input": self.name}, self.since)  # "ack" or "cycle"


class Inputs:
    def __init__(self, cfg_inputs, sink):
        # sink(kind, data, ticks_ms): ticks_ms is when the level became stable.
        self._edge = hal.edge_flag()  # set from pin interrupts
        self._inputs = [_Input(c, self._edge) for c in cfg_inputs]
        self._sink = sink
        sampled = [c for c in cfg_inputs if c["adc"] is not None]
        self.idle_ms = ADC_SCAN_MS if sampled else IDLE_SCAN_MS
        self.passes = 0  # scan passes done: the watchdog's proof of life

    def scan(self, now):
        # One pass over every input at time `now` (ticks_ms).
        for inp in self._inputs:
            inp.step(now, self._sink)

    def settling(self):
        # Is a level waiting out its debounce window?
        for inp in self._inputs:
            if inp.candidate != inp.stable:
                return True
        return False

    async def run(self):
        while True:
            self.scan(time.ticks_ms())
            self.passes += 1
            if self.settling():
                await asyncio.sleep_ms(SCAN_MS)
                continue
            try:
                await asyncio.wait_for_ms(self._edge.wait(), self.idle_ms)
            except asyncio.TimeoutError:
                pass

    def cord_pulled(self):
        for inp in self._inputs:
            if inp.active and inp.role == "cord":
                return True
        return False

    def fault(self):
        for inp in self._inputs:
            if inp.stable >= OPEN:
                return True
        return False
