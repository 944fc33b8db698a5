# Small counters persisted on flash so that a power cut leaves the old or the new
# value, never garbage, and a counter never goes backwards.
#
# A counter file holds its integers and a CRC32 of them, as text: "7 2a9b3c4d".
# It is written to "<path>.tmp", then renamed over "<path>": LittleFS renames
# atomically; on FAT rename first unlinks the target, so in that window only the
# .tmp copy is readable, and read_ints() looks at both and keeps the higher value.
import binascii
import os


def _encode(values):
    body = " ".join(str(v) for v in values)
    return "%s %08x" % (body, binascii.crc32(body.encode()))


def _decode(text, n):
    parts = text.split()
    if len(parts) != n + 1:
        return None
    body = " ".join(parts[:n])
    try:
        if int(parts[n], 16) != binascii.crc32(body.encode()):
            return None
        return [int(p) for p in parts[:n]]
    except ValueError:
        return None


def _read_copy(path, n):
    try:
        with open(path) as f:
            return _decode(f.read(64), n)
    except OSError:
        return None


def read_ints(path, n):
    # The newest readable copy of an n-integer record (compared on its first
    # value, which callers keep monotonic), or None when neither copy is valid.
    best = None
    for p in (path, path + ".tmp"):
        v = _read_copy(p, n)
        if v is not None and (best is None or v[0] > best[0]):
            best = v
    return best


def sync():
    # Not every port has os.sync (the unix VM does not); LittleFS commits on close.
    s = getattr(os, "sync", None)
    if s:
        s()


def write_ints(path, values):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(_encode(values))
    sync()
    os.rename(tmp, path)
    sync()


def next_boot(path="boot.count"):
    # This start's boot number: one more than the last, 1 on a fresh board.
    last = read_ints(path, 1)
    boot = (last[0] if last else 0) + 1
    write_ints(path, [boot])
    return boot
