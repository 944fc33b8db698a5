# The station firmware: wires inputs, RFID readers, the outbox, the MQTT link and the
# stack light together. Logic lives in the modules; this file only connects them.
import asyncio
import gc
import time

import hal
from andon import VERSION, fault, light, persist, wire
from andon.health import Health
from andon.inputs import Inputs
from andon.link import Link
from andon.outbox import Outbox
from andon.uplink import Uplink

TELEMETRY_MS = 30000
NTP_RETRY_MS = 10000
WIFI_POLL_MS = 250
# The link's state (Wi-Fi, broker) changes unannounced: the light task looks at it this often
# while the link is up (a drop shows on the tower within a second), and blinks the status LED
# at the faster pace while it is not. Each wake costs an ESP32 what a PC's core barely notices.
LINK_LOOK_UP_MS = 1000
LINK_LOOK_DOWN_MS = 250
SETTLED_MS = 600000  # a board up this long starts the next fault's back-off afresh
NTP_RESYNC_MS = 6 * 3600 * 1000
NON_CRITICAL = ("cycle",)  # may be refused when the outbox is full; nothing else is


class Station:
    def __init__(self, cfg, boot):
        self.ntp = cfg["ntp"]  # the rest of cfg is not kept: heap is scarce
        self.boot = boot
        self.board = cfg["board"]
        self.started = time.ticks_ms()
        self.refreshes = 0
        self.topics = wire.Topics(cfg["site"], cfg["line"], cfg["station"])
        self.outbox = Outbox(capacity=cfg["outbox"]["capacity"])
        self.outbox.open()
        self.announced = self.outbox.near_full  # what the last birth said
        self.unstored = 0  # events lost because the flash was full
        self.tower = light.Tower(cfg["light"]) if cfg.get("light") else None
        self.remote = {"station": None, "line": None}
        self.call_seq = None  # a call pressed here, lit amber until the gateway acks it
        self.last_error = fault.last_error()  # why the last boot ended, for this boot's births
        self.settled = False
        led = cfg.get("status_led")
        self.led = None if led is None else hal.Pin(led, hal.Pin.OUT, value=0)
        self.inputs = Inputs(cfg["inputs"], self.record)
        self.readers = self._readers(cfg.get("rfid"))
        self.link = Link(
            cfg["broker"], self.board,
            will=(self.topics.status, wire.will(self.board, self.boot)),
            birth=lambda: (self.topics.status, self._birth()),
            subscriptions=self.topics.downlinks(),
            on_message=self.on_message,
            on_up=self.on_up,
        )
        self.uplink = Uplink(self.outbox, self.link, self.topics.evt, self.board, boot)

    def _readers(self, rcfg):
        if not rcfg or not rcfg["readers"]:
            return None
        from andon.mfrc522 import MFRC522
        from andon.rfid import Reader, Readers

        s = rcfg["spi"]
        spi = hal.SPI(s["id"], baudrate=s["baudrate"], sck=hal.Pin(s["sck"]),
                      mosi=hal.Pin(s["mosi"]), miso=hal.Pin(s["miso"]))
        out = []
        for r in rcfg["readers"]:
            rst = hal.Pin(r["rst"], hal.Pin.OUT) if r.get("rst") is not None else None
            chip = MFRC522(spi, hal.Pin(r["cs"], hal.Pin.OUT, value=1), rst)
            out.append(Reader(r["name"], r["role"], chip, r["holdoff_ms"]))
        return Readers(out)

    # -- events: to flash first, then to the gateway --
    def record(self, kind, data, ticks):
        wall = hal.wall_ms()
        ts = None if wall is None else wall - time.ticks_diff(time.ticks_ms(), ticks)
        try:
            seq = self.outbox.append(self.boot, kind, data, ts, ticks, kind not in NON_CRITICAL)
        except OSError as e:  # the flash itself is full: nothing can keep this event
            self.unstored += 1
            print("outbox: cannot store", kind, e)
            seq = None
        if seq is not None:
            self.uplink.kick()
        if kind == "call":
            self.call_seq = -1 if seq is None else seq  # unstored: lit until the next ack
        self.refresh_light()  # local first: a pull shows before any round trip
        self.announce()

    def announce(self):
        # The birth says whether the outbox nears its bound: say it again when that changes.
        if self.outbox.near_full != self.announced:
            self.announced = self.outbox.near_full
            asyncio.create_task(
                self.link.publish(self.topics.status, self._birth(), retain=True, qos=1))

    def _birth(self):
        o = self.outbox
        return wire.birth(self.board, self.boot, VERSION, hal.reset_cause(), o.depth,
                          o.capacity, o.near_full, self.last_error)

    def on_up(self):
        if self.last_error is not None:
            fault.reported()  # the birth carrying it is with the broker: keep it in RAM only
        self.uplink.rewind()
        self.refresh_light()

    def on_message(self, topic, payload, retained):
        m = wire.decode(self.topics, self.board, topic, payload)
        if m is None:
            return
        kind = m["kind"]
        if kind == "ack":
            self.uplink.on_ack(m["seq"])
            if self.call_seq is not None and m["seq"] >= self.call_seq:
                self.call_seq = None  # applied: the station state shows the call from now on
            self.announce()
        elif kind == "gateway":
            self.uplink.on_gateway(m["gateway"], m["online"], m["since"], retained)
        elif kind == "owner":
            self.uplink.on_owner(m["gateway"], m["epoch"], retained)
        else:
            self.remote[kind] = m
        self.refresh_light()

    # -- the stack light --
    def link_state(self):
        s = self.link.state
        up = self.uplink
        if s == "up" and up.online.get(up.owner) is False:  # the gateway it follows
            return "gateway_offline"
        return {"up": "ok", "no_wifi": "no_wifi", "no_time": "no_time"}.get(s, "no_broker")

    def refresh_light(self):
        if self.tower is None:
            return
        st = self.remote["station"]
        ln = self.remote["line"]
        self.tower.show(light.compose({
            "config_error": False,
            "cord": self.inputs.cord_pulled(),
            "local_call": self.call_seq is not None,
            "fault": self.inputs.fault() or (self.readers is not None and self.readers.faulty()),
            "station": st,
            "line": ln["state"] if ln else None,
            "link": self.link_state(),
            "outbox_near_full": self.outbox.near_full,
        }))

    async def telemetry(self):
        while True:
            await asyncio.sleep_ms(TELEMETRY_MS)
            if not self.settled and time.ticks_diff(time.ticks_ms(), self.started) > SETTLED_MS:
                self.settled = True
                fault.settled()
            gc.collect()
            await self.link.publish(self.topics.telemetry, wire.telemetry(
                self.board, self.boot, time.ticks_diff(time.ticks_ms(), self.started) // 1000,
                gc.mem_free(), self.outbox.depth, self.link.reconnects, hal.rssi()))

    async def clock(self):
        # Until NTP answers, and without an NTP server, events carry ts: null and their
        # age; a TLS link waits for it (andon.link). So the first query goes out as soon as
        # Wi-Fi is up. The RTC drifts: the clock is set again every few hours. "ntp" is
        # "address" or "address:port".
        if self.ntp is None:
            return
        host, _, port = self.ntp.partition(":")
        if hal.wall_ms() is not None:  # an RTC that kept its time through a reset
            await asyncio.sleep_ms(NTP_RESYNC_MS)
        while True:
            while not hal.wifi_up():
                await asyncio.sleep_ms(WIFI_POLL_MS)
            from andon import ntp  # imported when first needed: heap is scarce

            ms = await ntp.query(host, int(port or 123))
            if ms is not None:
                hal.set_wall_ms(ms)
            await asyncio.sleep_ms(NTP_RESYNC_MS if ms is not None else NTP_RETRY_MS)

    async def light_refresh(self):
        # Events and messages refresh the tower as they come; only the link changes
        # unannounced (Wi-Fi, broker): look at it, and compose the tower again on a change.
        link = None
        while True:
            if self.link_state() != link:
                link = self.link_state()
                self.refresh_light()
            self.refreshes += 1
            up = self.link.state == "up"
            if self.led is not None:  # steady: connected; blinking: running, not connected
                self.led.value(1 if up else self.refreshes & 1)
            await asyncio.sleep_ms(LINK_LOOK_UP_MS if up else LINK_LOOK_DOWN_MS)

    async def run(self, wdt):
        fault.wdt = wdt  # a fault's back-off must keep feeding it
        probes = {"inputs": lambda: self.inputs.passes, "light": lambda: self.refreshes}
        tasks = [self.inputs.run(), self.link.run(), self.uplink.run(), self.telemetry(),
                 self.clock(), self.light_refresh()]
        if self.tower:
            tasks.append(self.tower.run())
        if self.readers is not None:
            probes["rfid"] = lambda: self.readers.rounds
            tasks.append(self.readers.run(self.record))
        self.health = Health(wdt, probes)
        tasks.append(self.health.run())
        await asyncio.gather(*tasks)


error_tower = None  # the tower showing the config error, once config_error_forever runs


def start(cfg):
    # The station for a validated config (andon.startup.load_config).
    if cfg.get("wifi"):
        hal.wifi_start(cfg["wifi"]["ssid"], cfg["wifi"]["password"])
    return Station(cfg, persist.next_boot())


async def config_error_forever(light_cfg):
    # A bad config must not crash-loop: show the pattern until someone fixes the file.
    global error_tower
    if light_cfg:
        error_tower = light.Tower(light_cfg)
        error_tower.show(light.compose({"config_error": True}))
        await error_tower.run()
    while True:
        await asyncio.sleep_ms(60000)


async def run(cfg, error_light):
    if cfg is None:
        await config_error_forever(error_light)
    await start(cfg).run(hal.WDT(timeout=8000))


def main(cfg, error_light=None):
    asyncio.run(run(cfg, error_light))
