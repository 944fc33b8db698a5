# Sends the outbox to the gateway, in order, until the gateway says it has stored it.
#
# A broker's PUBACK is not durability: a broker that crashes loses what it acknowledged.
# So an event leaves the outbox only on the gateway's end-to-end ack (docs/protocol.md),
# and whatever is not acked is sent again, in order, from the oldest: on every reconnect,
# at once on each new birth of the gateway it follows (a gateway that reconnected may have
# missed what was sent meanwhile) and on a new owner of its line (of several gateways: the
# new one may not have what the old one missed), and after a timeout counted from the last
# progress. A wake-up (a new event, an ack that moves nothing) does not restart that
# timeout: a busy station's gap would otherwise stay open for as long as it keeps busy.
import asyncio
from time import ticks_diff, ticks_ms

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
        self.resends = 0  # timeouts without progress
        self._progress_at = ticks_ms()  # the last ack that moved, or the oldest's last send
        self._rewind = False  # send from the oldest pending at the next chance
        # The gateway followed: the line's owner once its owner topic came (of several
        # gateways), else the plant's one gateway (None); and the owner's epoch.
        self.owner = None
        self._epoch = -1
        # Each gateway's last status, by name (None: the plant's one): its birth's `since`
        # while online, False after its Will.
        self.online = {}
        self._wake = asyncio.Event()

    def kick(self):
        self._wake.set()

    def rewind(self):
        # Send every pending event again: a new connection, or a new gateway birth.
        self._rewind = True
        self._wake.set()

    def on_owner(self, gateway, epoch, retained):
        # A higher epoch is a takeover: the new owner may lack what its predecessor missed, so
        # it all goes again. A lower one is an old owner that was paused: ignored.
        if epoch > self._epoch:
            self.owner, self._epoch = gateway, epoch
            if not retained:
                self.rewind()

    def on_gateway(self, gateway, online, since, retained):
        # Only the followed gateway's status counts. A live birth we have not seen (another
        # `since`, or online after the Will) is a gateway that (re)connected: what it missed
        # meanwhile goes again now. The retained copy a (re)subscribe brings needs nothing:
        # that reconnect already rewound.
        last = self.online.get(gateway)
        self.online[gateway] = online and since
        if online and since != last and gateway == self.owner and not retained:
            self.rewind()

    def on_ack(self, seq):
        if seq >= self.outbox.base:
            self.outbox.ack(seq)
            self._progress_at = ticks_ms()
        if self.sent < seq:
            self.sent = seq
        self._wake.set()

    def _overdue_in(self):
        # ms left before the oldest pending event, sent on this connection, has waited a
        # whole timeout without progress; resend_ms while it is not in flight.
        if self.sent < self.outbox.base:
            return self.resend_ms
        return self.resend_ms - ticks_diff(ticks_ms(), self._progress_at)

    async def run(self):
        while True:
            left = self._overdue_in()
            if left > 0:
                try:
                    await asyncio.wait_for_ms(self._wake.wait(), left)
                except asyncio.TimeoutError:
                    pass
            if self._overdue_in() <= 0:
                self.resends += 1
                self._progress_at = ticks_ms()  # the next timeout counts from this resend
                self._rewind = True
            self._wake.clear()
            await self._send()

    async def _send(self):
        if self.link.state != "up":
            return
        if self._rewind:
            self._rewind = False
            self.sent = self.outbox.base - 1
        limit = self.outbox.base - 1 + WINDOW
        base = self.outbox.base
        now = ticks_ms()
        for rec in self.outbox.records(after=self.sent):
            if rec["seq"] > limit or self._rewind:  # a rewind meanwhile: run() starts over
                return
            rec["board"] = self.board
            rec["base"] = base
            rec["age"] = None
            if rec["ts"] is None and rec["boot"] == self.boot:
                rec["age"] = max(0, ticks_diff(now, rec["ticks"]))
            if rec["seq"] == self.outbox.base:
                self._progress_at = ticks_ms()  # the oldest goes (again): its wait starts
            if not await self.link.publish(self.topic, wire.event_payload(rec), qos=1):
                return
            self.sent = rec["seq"]
