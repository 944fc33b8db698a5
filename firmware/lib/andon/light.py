# The stack light: compose() maps what the board knows onto the tower's segments
# (the precedence is docs/stack-light.md, for the maintenance crew), and Tower
# drives a GPIO (relay/MOSFET) tower or a WS2812 one, blinking from the tick it is
# given so that tests are exact and the loop is never blocked.
import asyncio
import time

import hal

SEGMENTS = ("red", "amber", "green", "blue", "white")
PARTS = SEGMENTS + ("buzzer",)
OFF, ON, SLOW, FAST = "off", "on", "slow", "fast"

# Blink periods in ms: slow ~1.5 Hz, fast 4 Hz (IEC 60073 flashing), half on, half off.
PERIOD = {SLOW: 666, FAST: 250}
REFRESH_MS = 20

# IEC 60073 colours for a WS2812 tower (amber is the standard's yellow).
COLOURS = {
    "red": (255, 0, 0),
    "amber": (255, 110, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "white": (255, 255, 255),
}
_DARK = (0, 0, 0)

# link (from the app) -> the white segment: each tells "your call has not reached anyone".
# no_time: a TLS board waiting for NTP before it may check the broker's certificate.
_LINK = {"ok": OFF, "no_wifi": FAST, "no_broker": SLOW, "no_time": SLOW, "gateway_offline": ON}


def compose(view):
    # view: config_error, board_fault (the firmware failed and resets soon), cord (a local
    # cord pulled), local_call (a call pressed here that the gateway has not confirmed yet),
    # fault (wiring, a reader), station ({state, call, material} from the gateway, or None),
    # line (its state or None), link, outbox_near_full. Missing keys mean "nothing to report".
    if view.get("config_error") or view.get("board_fault"):
        out = dict.fromkeys(SEGMENTS, FAST if view.get("board_fault") else SLOW)
        out["buzzer"] = OFF
        return out
    station = view.get("station") or {}
    state = station.get("state")
    line = view.get("line")
    local = view.get("cord") or view.get("local_call")
    fault = view.get("fault")
    out = {s: OFF for s in PARTS}

    if state == "stopped":
        out["red"] = ON
    elif line == "stopped":
        out["red"] = SLOW  # stopped at another station of this line

    if local:
        out["amber"] = ON  # local first: before any round trip
    elif fault:
        out["amber"] = FAST
    elif state == "called":
        out["amber"] = ON
    elif state == "acknowledged":
        out["amber"] = SLOW

    if state == "running" and line != "stopped" and not (local or fault):
        out["green"] = ON
    if station.get("material"):
        out["blue"] = ON

    near_full = view.get("outbox_near_full")
    link = view.get("link") or "ok"
    if link == "no_time" and out["green"] == OFF:
        out["green"] = SLOW  # with white slow: "waiting for the time", not "no broker"
    white = _LINK.get(link, FAST)  # an unknown link state is trouble
    out["white"] = ON if near_full and white == OFF else white

    if near_full:
        out["buzzer"] = FAST
    elif state in ("stopped", "called"):
        out["buzzer"] = SLOW
    return out


def level(mode, now):
    # 1 when a segment in `mode` is lit at tick `now` (ms).
    if mode == ON:
        return 1
    if mode == OFF:
        return 0
    period = PERIOD[mode]
    return 1 if now % period < period // 2 else 0


class _Output:
    # One relay/MOSFET channel with its active level.
    def __init__(self, cfg):
        self.pin = hal.Pin(cfg["pin"], hal.Pin.OUT, value=1 - cfg["active"])
        self.active = cfg["active"]

    def set(self, on):
        self.pin.value(self.active if on else 1 - self.active)


class Tower:
    def __init__(self, cfg_light):
        self.modes = {p: OFF for p in PARTS}
        self.lit = {p: None for p in PARTS}  # last level written, None = never
        self.outputs = {}
        self.strip = None
        if cfg_light["driver"] == "gpio":
            for seg, out in cfg_light["segments"].items():
                self.outputs[seg] = _Output(out)
        else:
            if hal.NeoPixel is None:
                raise ValueError("light.driver ws2812 needs the neopixel module")
            self.order = cfg_light["order"]
            self.pps = cfg_light["pixels_per_segment"]
            pin = hal.Pin(cfg_light["pin"], hal.Pin.OUT)
            self.strip = hal.NeoPixel(pin, self.pps * len(self.order))
        if cfg_light["buzzer"]:
            self.outputs["buzzer"] = _Output(cfg_light["buzzer"])
        self.render(0)

    def show(self, modes):
        # modes: {segment or "buzzer": "off" | "on" | "slow" | "fast"}, as compose() gives.
        for part in PARTS:
            self.modes[part] = modes.get(part, OFF)

    def render(self, now):
        # Set every segment's level for tick `now`; touch hardware only on a change.
        dirty = False
        for part in PARTS:
            lit = level(self.modes[part], now)
            if lit == self.lit[part]:
                continue
            self.lit[part] = lit
            out = self.outputs.get(part)
            if out is not None:
                out.set(lit)
            elif self.strip is not None and part in self.order:
                self._paint(part, lit)
                dirty = True
        if dirty:
            self.strip.write()

    def _paint(self, seg, lit):
        start = self.order.index(seg) * self.pps
        colour = COLOURS[seg] if lit else _DARK
        for i in range(start, start + self.pps):
            self.strip[i] = colour

    async def run(self):
        while True:
            self.render(time.ticks_ms())
            await asyncio.sleep_ms(REFRESH_MS)
