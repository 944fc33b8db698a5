# Keeps the board connected to the broker: waits for Wi-Fi, connects, publishes the retained
# birth, subscribes, serves until the connection drops, and reconnects with backoff and jitter.
import asyncio
import os
from time import ticks_diff, ticks_ms

import hal
from andon.mqtt import MQTTClient, MQTTError

MIN_BACKOFF_MS = 500
MAX_BACKOFF_MS = 30000
STABLE_MS = 10000  # a session up this long resets the backoff: a flapping one does not
WIFI_POLL_MS = 250


def backoff_ms(attempt):
    # 0.5 s doubling to 30 s, each ±25 % at random so that boards that lost the same broker
    # do not all knock at the same instant when it comes back.
    base = min(MIN_BACKOFF_MS << min(attempt, 6), MAX_BACKOFF_MS)
    r = int.from_bytes(os.urandom(2), "big")  # 0..65535
    return base - base // 4 + (base // 4) * r // 32767


def tls_context(broker):
    # The broker's certificate is checked against the CA on flash (DER), never skipped.
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED  # MicroPython's default for clients is CERT_NONE
    with open(broker.get("ca", "ca.der"), "rb") as f:
        ctx.load_verify_locations(cadata=f.read())
    return ctx


class Link:
    def __init__(self, broker, client_id, will, birth, subscriptions, on_message, on_up=None):
        # broker: config.json's "broker"; will: (topic, payload); birth() -> (topic, payload),
        # published retained at each connect (a callable: it carries the current outbox depth).
        # on_up(): called once subscribed; it must not block (the sender resends from it).
        self.client = MQTTClient(
            client_id, broker["host"], broker.get("port", 1883), broker.get("username"),
            broker.get("password"), broker.get("keepalive", 30), will=will,
            ssl=tls_context(broker) if broker.get("tls") else None, on_message=on_message,
            server_name=broker.get("server_name"),
        )
        self.reconnects = 0
        self.last_error = None
        self._birth = birth
        self._subscriptions = subscriptions
        self._on_up = on_up
        self._ready = False
        self._connected_once = False
        # A certificate's dates are checked against the RTC, which reads 2000 after power-on:
        # a TLS link waits until NTP has set the clock (andon.app's clock task).
        self._needs_time = bool(broker.get("tls"))

    @property
    def state(self):
        # "no_wifi", "no_time", "connecting" or "up" (connected, birth sent, subscribed).
        if not hal.wifi_up():
            return "no_wifi"
        if self._needs_time and hal.wall_ms() is None:
            return "no_time"
        return "up" if self._ready and self.client.up else "connecting"

    async def publish(self, topic, payload, retain=False, qos=0):
        # The packet id at QoS 1 (see client.pending/wait_ack), 0 at QoS 0, or None at once
        # when the link is down or the write fails.
        if not self._ready:
            return None
        try:
            return await self.client.publish(topic, payload, retain, qos)
        except MQTTError:
            return None

    async def run(self):
        attempt = 0
        while True:
            while self.state in ("no_wifi", "no_time"):
                await asyncio.sleep_ms(WIFI_POLL_MS)
            up_at = None
            try:
                up_at = await self._session()
            except MQTTError as e:
                self.last_error = e.args[0]
                print("link:", self.last_error)
            if up_at is not None and ticks_diff(ticks_ms(), up_at) >= STABLE_MS:
                attempt = 0
            await asyncio.sleep_ms(backoff_ms(attempt))
            attempt += 1

    async def _session(self):
        # One connection, from CONNECT to its end; returns when it came up, raises if it never did.
        c = self.client
        await c.connect()
        if self._connected_once:
            self.reconnects += 1
        self._connected_once = True
        serving = asyncio.create_task(c.serve())
        try:
            topic, payload = self._birth()
            await c.publish(topic, payload, True, 1)
            await c.subscribe(self._subscriptions)
            self._ready = True
            up_at = ticks_ms()
            if self._on_up:
                self._on_up()
            self.last_error = await serving
            print("link: down:", self.last_error)
            return up_at
        finally:
            self._ready = False
            serving.cancel()
            c.close()
