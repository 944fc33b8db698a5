# A small MQTT 3.1.1 client for MicroPython asyncio. Every wait is an asyncio stream wait,
# so nothing blocks the loop: the broker is an address, so open_connection asks no DNS
# server (with TLS, server_hostname is the certificate's name). One task reads (serve), a
# second pings; writers share one lock.
# A failing socket raises OSError, or ValueError from MicroPython's TLS (a bad certificate).
import asyncio
import sys
from time import ticks_diff, ticks_ms

REFUSALS = (
    None,
    "unacceptable protocol version",
    "client id rejected",
    "server unavailable",
    "bad user name or password",
    "not authorised",
)
MAX_LENGTH = 268435455  # the largest remaining length 4 bytes can encode


class MQTTError(Exception):
    # The connection failed or ended; the message says why.
    pass


class ConnectRefused(MQTTError):
    def __init__(self, code):
        why = REFUSALS[code] if 0 < code < len(REFUSALS) else "unknown code"
        super().__init__("broker refused the connection (%d: %s)" % (code, why))
        self.code = code


def put_header(buf, first, n):
    # Writes a fixed header (packet type byte, remaining length) into buf; returns its size.
    if not 0 <= n <= MAX_LENGTH:
        raise ValueError("MQTT packet too long")
    buf[0] = first
    i = 1
    while True:
        b = n & 0x7F
        n >>= 7
        buf[i] = b | 0x80 if n else b
        i += 1
        if not n:
            return i


def _u16(n):
    return n.to_bytes(2, "big")


def _field(s):
    # A length-prefixed string field.
    b = s.encode() if isinstance(s, str) else s
    return _u16(len(b)) + b


class MQTTClient:
    def __init__(self, client_id, host, port=1883, user=None, password=None, keepalive=30,
                 will=None, ssl=None, on_message=None, clean=True, timeout_ms=5000,
                 max_packet=640, server_name=None):
        # will: (topic, payload), published by the broker retained at QoS 1 when we vanish.
        # on_message(topic: str, payload: bytes, retained: bool), called by serve().
        if password and not user:
            raise ValueError("an MQTT password needs a user name")
        self.host = host
        self.port = port
        self.on_message = on_message
        self.up = False
        self.pings = 0  # PINGREQs sent
        self.dropped = 0  # incoming messages not delivered: larger than max_packet
        self.handler_errors = 0
        self._connect_args = (client_id, user, password, keepalive, will, clean)
        self._ssl = ssl
        self._server_name = server_name
        self._ka_ms = keepalive * 1000
        self._timeout_ms = timeout_ms
        self._rx = bytearray(max_packet)
        self._mv = memoryview(self._rx)
        self._tx = bytearray(5)
        self._lock = asyncio.Lock()
        self._acked = asyncio.Event()  # set on each PUBACK/SUBACK and when the connection ends
        self._inflight = set()  # packet ids awaiting PUBACK/SUBACK on this connection
        self._lost = set()  # those still unacknowledged when the last connection ended
        self._refused = 0  # the last SUBSCRIBE packet id the broker refused
        self._pid = 0
        self._s = None
        self._serving = None
        self._why = None
        self._ping_at = None
        self._last_tx = self._last_rx = 0

    # -- connection --

    async def connect(self):
        # CONNECT and wait for CONNACK. Raises ConnectRefused, or MQTTError on any failure.
        self.close()
        self._why = None
        try:
            await asyncio.wait_for_ms(self._handshake(), self._timeout_ms)
        except (OSError, ValueError, asyncio.TimeoutError, MQTTError) as e:
            self.close()
            raise e if isinstance(e, MQTTError) else MQTTError("connect failed: %r" % (e,))
        self.up = True

    async def _handshake(self):
        self._s, _ = await asyncio.open_connection(
            self.host, self.port, ssl=self._ssl, server_hostname=self._server_name)
        client_id, user, password, keepalive, will, clean = self._connect_args
        flags = 0x02 if clean else 0
        body = b"\x00\x04MQTT\x04" + bytes((0, keepalive >> 8, keepalive & 255)) + _field(client_id)
        if will:
            flags |= 0x2C  # a Will, QoS 1, retained
            body += _field(will[0]) + _field(will[1])
        if user:
            flags |= 0x80
            body += _field(user)
        if password:
            flags |= 0x40
            body += _field(password)
        body = bytearray(body)
        body[7] = flags
        await self._send(0x10, len(body), body)
        first, n = await self._read_header()
        if first != 0x20 or n != 2:
            raise MQTTError("expected CONNACK, got packet 0x%02x" % first)
        await self._fill(2)
        if self._rx[1]:
            raise ConnectRefused(self._rx[1])
        self._ping_at = None

    def close(self, why="closed"):
        # Ends the connection at once, from any task, without DISCONNECT (so the broker
        # publishes the Will); serve() returns why. Idempotent.
        if self._why is None:
            self._why = why
        t = self._serving
        if t is not None and t is not asyncio.current_task():
            t.cancel()
        s = self._s
        self._s = None
        self.up = False
        if self._inflight:
            self._lost = self._inflight
            self._inflight = set()
        self._acked.set()
        if s is not None:
            s.s.close()  # asyncio's Stream.close() is a no-op in MicroPython: close the socket

    async def serve(self):
        # Reads and handles packets, pinging while idle, until the connection ends; returns why.
        if not self.up:
            return "not connected"
        self._serving = asyncio.current_task()
        pinger = asyncio.create_task(self._keepalive()) if self._ka_ms else None
        try:
            while True:
                first, n = await self._read_header()
                await self._handle(first, n)
        except asyncio.CancelledError:
            if self._why is None:
                raise  # cancelled from outside, not by close()
        except (OSError, ValueError, MQTTError) as e:
            self.close(e.args[0] if isinstance(e, MQTTError) else "connection lost: %r" % (e,))
        finally:
            self._serving = None
            if pinger is not None:
                pinger.cancel()
            self.close()
        return self._why

    async def _keepalive(self):
        half = self._ka_ms // 2
        while True:
            await asyncio.sleep_ms(half // 2)
            now = ticks_ms()
            if self._ping_at is not None:
                if ticks_diff(now, self._ping_at) >= half:
                    self.close("no PINGRESP within %d ms" % half)
                    return
            elif ticks_diff(now, self._last_tx) >= half or ticks_diff(now, self._last_rx) >= half:
                self._ping_at = now
                self.pings += 1
                try:
                    await self._send(0xC0, 0)
                except MQTTError:
                    return  # _send has dropped the connection

    # -- sending --

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    async def _send(self, first, n, *parts):
        async with self._lock:
            s = self._s
            if s is None:
                raise MQTTError("not connected")
            # One write per packet: the stream sends each write at once, and a packet in
            # pieces waits out Nagle's algorithm and the broker's delayed ACK (~40 ms).
            pkt = bytearray(self._tx[: put_header(self._tx, first, n)])
            for p in parts:
                pkt += p
            try:
                s.write(pkt)
                await asyncio.wait_for_ms(s.drain(), self._timeout_ms)
            except (OSError, ValueError, asyncio.TimeoutError) as e:
                self.close("send failed: %r" % (e,))
                raise MQTTError(self._why)
        self._last_tx = ticks_ms()

    async def publish(self, topic, payload, retain=False, qos=0):
        # Returns the packet id for QoS 1 (see pending() and wait_ack()), 0 for QoS 0.
        # Raises MQTTError when the connection is down or the write fails.
        if qos not in (0, 1):
            raise ValueError("QoS 0 or 1 only")
        if not self.up:
            raise MQTTError("not connected")
        retain = 1 if retain else 0
        topic = _field(topic)
        if isinstance(payload, str):
            payload = payload.encode()
        if not qos:
            await self._send(0x30 | retain, len(topic) + len(payload), topic, payload)
            return 0
        pid = self._next_pid()
        self._inflight.add(pid)
        await self._send(0x32 | retain, len(topic) + 2 + len(payload), topic, _u16(pid), payload)
        return pid

    async def subscribe(self, topics, qos=1):
        # One SUBSCRIBE for all topics; returns once SUBACKed. Needs serve() running.
        if not self.up:
            raise MQTTError("not connected")
        body = b""
        for t in topics:
            body += _field(t) + bytes((qos,))
        pid = self._next_pid()
        self._inflight.add(pid)
        await self._send(0x82, 2 + len(body), _u16(pid), body)
        if not await self.wait_ack(pid):
            raise MQTTError("connection lost before SUBACK")
        if self._refused == pid:
            raise MQTTError("broker refused a subscription")

    def pending(self, pid):
        # True while pid awaits its PUBACK on the live connection.
        return pid in self._inflight

    async def wait_ack(self, pid):
        # True once the broker acknowledged pid, False if its connection ended first.
        while pid in self._inflight:
            self._acked.clear()
            await self._acked.wait()
        return pid not in self._lost

    # -- receiving --

    async def _fill(self, n, off=0):
        # Reads exactly n bytes into the receive buffer at off, however the peer splits them.
        s = self._s
        mv = self._mv
        end = off + n
        while off < end:
            k = await s.readinto(mv[off:end])
            if k == 0:
                raise MQTTError("connection closed by the broker")
            if k:  # None: woken without data (TLS), wait again
                off += k

    async def _read_header(self):
        await self._fill(2)
        rx = self._rx
        first = rx[0]
        b = rx[1]
        n = b & 0x7F
        shift = 7
        while b & 0x80:
            if shift > 21:
                raise MQTTError("malformed remaining length")
            await self._fill(1, 1)
            b = rx[1]
            n |= (b & 0x7F) << shift
            shift += 7
        self._last_rx = ticks_ms()
        return first, n

    def _pid_at(self, i):
        return self._rx[i] << 8 | self._rx[i + 1]

    async def _handle(self, first, n):
        if first & 0xF0 == 0x30:
            await self._on_publish(first, n)
        elif first == 0x40 and n == 2:
            await self._fill(2)
            self._acknowledged(self._pid_at(0))
        elif first == 0x90 and 3 <= n <= len(self._rx):
            await self._fill(n)
            pid = self._pid_at(0)
            for i in range(2, n):
                if self._rx[i] & 0x80:
                    self._refused = pid
            self._acknowledged(pid)
        elif first == 0xD0 and n == 0:
            self._ping_at = None
        else:
            raise MQTTError("unexpected packet 0x%02x of %d bytes" % (first, n))

    def _acknowledged(self, pid):
        self._inflight.discard(pid)
        self._acked.set()

    async def _on_publish(self, first, n):
        qos = first >> 1 & 3
        if qos > 1:
            raise MQTTError("PUBLISH with QoS %d, we subscribe at QoS 1" % qos)
        cap = len(self._rx)
        await self._fill(min(n, cap))
        start = 2 + self._pid_at(0)  # after the topic
        end = start + 2 * qos  # after the packet id
        if end > n or end > cap:
            raise MQTTError("malformed PUBLISH")
        pid = self._pid_at(start) if qos else 0
        if n > cap:
            # Too large to hold: drain it from the socket and count it, never deliver half of it.
            self.dropped += 1
            left = n - cap
            while left:
                k = min(left, cap)
                await self._fill(k)
                left -= k
        else:
            try:
                topic = str(self._mv[2:start], "utf-8")
            except UnicodeError:
                raise MQTTError("PUBLISH topic is not UTF-8")
            self._deliver(topic, bytes(self._mv[end:n]), first & 1)
        if qos:
            await self._send(0x40, 2, _u16(pid))

    def _deliver(self, topic, payload, retained):
        try:
            self.on_message(topic, payload, bool(retained))
        except Exception as e:  # a handler's bug must not cost the connection
            self.handler_errors += 1
            sys.print_exception(e)
