# SNTP over a non-blocking UDP socket: the loop keeps running while the answer travels.
# (MicroPython's ntptime blocks for up to its timeout.) The host is an IP address (the
# config allows nothing else), so getaddrinfo answers without asking any DNS server.
import asyncio
import socket
import struct
import time

NTP_TO_UNIX_S = 2208988800


def _request():
    pkt = bytearray(48)
    pkt[0] = 0x1B  # leap 0, version 3, mode 3 (client)
    return pkt


def parse(reply):
    # Transmit timestamp (seconds and 2**-32 fractions since 1900) as Unix milliseconds.
    if len(reply) < 48 or reply[0] & 0x07 != 4:  # mode 4: server
        return None
    secs, frac = struct.unpack("!II", reply[40:48])
    if secs == 0:
        return None
    return (secs - NTP_TO_UNIX_S) * 1000 + (frac * 1000 >> 32)


async def query(host, port=123, timeout_ms=2000):
    # Unix milliseconds now per the server (half the round trip added), or None.
    try:
        addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]
    except OSError:  # no such name, or no resolver: try again later
        return None
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        sent = time.ticks_ms()
        s.sendto(_request(), addr)
        while time.ticks_diff(time.ticks_ms(), sent) < timeout_ms:
            try:
                reply = s.recv(64)
            except OSError:  # nothing yet (EAGAIN)
                await asyncio.sleep_ms(20)
                continue
            ms = parse(reply)
            if ms is not None:
                return ms + time.ticks_diff(time.ticks_ms(), sent) // 2
        return None
    finally:
        s.close()
