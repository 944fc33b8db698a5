# Sends the outbox to the gateway, in order, until the gateway says it has stored it.
#
# A broker's PUBACK is not durability: a broker that crashes loses what it acknowledged.
# So an event leaves the outbox only on the gateway's end-to-end ack (docs/protocol.md),
# and whatever is not acked is sent again, in order: after a timeout without progress,
# on every reconnect, and when the gateway comes back online.
import asyncio
import time

from andon import wire

WINDOW = 16  # events in flight beyond the gateway's ack


class Uplink:
    def __init__(self, outbox, link, topic, board, boot, resend_ms=5000):
        self.outbox = outbox
        self.link = link
        self.topic = topic
        self.board = board
        self.boot = boot
        self.resend_ms = resend_ms
        self.sent = outbox.base - 1  # highest seq published on this connection
        self.resends = 0
        self._wake = asyncio.Event()

    def kick(self):
        self._wake.set()

    def rewind(self):
        # Send every pending event again: a new connection, or the gateway back online.
        self.sent = self.outbox.base - 1
        self._wake.set()

    def on_ack(self, seq):
        if seq >= self.outbox.base:
            self.outbox.ack(seq)
        if self.sent < seq:
            self.sent = seq
        self._wake.set()

    async def run(self):
        while True:
            try:
                await asyncio.wait_for_ms(self._wake.wait(), self.resend_ms)
            except asyncio.TimeoutError:
                if self.outbox.depth:  # no ack progress for a whole timeout
                    self.resends += 1
                    self.sent = self.outbox.base - 1
            self._wake.clear()
            await self._send()

    async def _send(self):
        if self.link.state != "up":
            return
        limit = self.outbox.base - 1 + WINDOW
        base = self.outbox.base
        now = time.ticks_ms()
        for rec in self.outbox.records(after=self.sent):
            if rec["seq"] > limit:
                break
            rec["board"] = self.board
            rec["base"] = base
            rec["age"] = None
            if rec["ts"] is None and rec["boot"] == self.boot:
                rec["age"] = max(0, time.ticks_diff(now, rec["ticks"]))
            if not await self.link.publish(self.topic, wire.event_payload(rec), qos=1):
                return
            self.sent = rec["seq"]
