# The board's outbox: every event goes to flash before it is sent, and leaves only
# when the gateway's end-to-end ack says it is durably stored (docs/protocol.md).
#
# On flash, under `root`: append-only segment files "<first seq>.seg" of records
#   [u16 magic][u16 length][u32 seq][u32 crc32 of length, seq and payload][payload]
# where the payload is the JSON list [boot, ts, ticks, kind, data]. An append opens,
# writes one record and closes (LittleFS commits on close), so a power cut leaves at
# most the last record of the newest segment torn. LittleFS copies a file's partly
# filled last block on every committed append, so segments stay small (32 records
# of about 100 bytes fit one 4 KB erase block): an append costs at most one block
# program, and deleting an acked segment frees whole blocks. Recovery (open) walks every
# record: a torn tail is ignored and the next append starts a new segment instead
# of writing after it; a damaged record with intact ones after it is skipped and
# counted in `corrupt`. Whole segments are deleted once all their records are
# acked; the "mark" file (andon.persist) keeps [acked seq, highest seq assigned],
# written before any deletion, so seq never goes backwards, even after every
# segment is gone, and acked records are not re-sent after a reboot.
#
# The bound: `capacity` limits how many pending records non-critical events
# (cycle) may find; at or over it they are refused (append returns None, counted
# in `refused`). Critical events (cord, call, ack, fault, scan) are never refused:
# they go on past `capacity` into whatever flash is left, and only a flash that is
# really full stops them, with the OSError the filesystem raises. `near_full` is
# raised at 80 % of `capacity`, for the status and the light.
#
# Memory does not grow with the outbox: records() streams one record at a time
# from flash, and the only per-segment state is a 4-item list (at most a few dozen
# segments: capacity / per_segment, plus the critical overflow).
#
# Use: ob = Outbox(capacity=cfg).open(); seq = ob.append(boot, kind, data, ts,
# ticks, critical); for rec in ob.records(after): send it with base=ob.base (rec is
# {"boot", "seq", "ts", "ticks", "kind", "data"}; the sender adds board and age);
# ob.ack(seq) on the gateway's ack. ob.depth, ob.capacity, ob.near_full, ob.base,
# ob.next_seq, ob.corrupt and ob.refused feed status and telemetry.
import binascii
import json
import os
import struct

from andon import persist

MAGIC = 0xA50B
HDR = "<HHII"
HDR_LEN = 12
# A record's JSON; with the keys, board id, seq and base the wire adds, the event
# stays within the contract's 512 bytes.
MAX_PAYLOAD = 300


class Outbox:
    def __init__(self, root="outbox", capacity=400, per_segment=32):
        self.root = root
        self.capacity = capacity
        self.per_segment = per_segment
        self.depth = 0  # pending records
        self.next_seq = 1
        self.acked = 0  # every seq up to this one is stored by the gateway
        self.corrupt = 0  # damaged records skipped by the last open()
        self.refused = 0  # non-critical events refused since open()
        # Per segment, oldest first: [first seq (its name), lowest pending seq,
        # highest intact seq, pending count]
        self._segs = []
        self._tail_ok = False  # may the newest segment take the next append
        self._buf = bytearray(HDR_LEN + MAX_PAYLOAD)
        self._mv = memoryview(self._buf)

    @property
    def base(self):
        # The lowest seq still in the outbox, or the next seq when it is empty.
        return self._segs[0][1] if self._segs else self.next_seq

    @property
    def near_full(self):
        return self.depth * 5 >= self.capacity * 4

    def open(self):
        # Recover what a previous run (or a power cut) left on flash.
        try:
            os.mkdir(self.root)
        except OSError:
            pass  # it exists
        mark = persist.read_ints(self._path("mark"), 2) or (0, 0)
        self.acked, top = mark
        self._segs = []
        self.depth = self.corrupt = self.refused = 0
        self._tail_ok = False
        for first in self._segment_names():
            seg, torn = self._survey(first)
            if seg[3] == 0:
                os.remove(self._seg_path(first))  # fully acked, or nothing intact
                continue
            self._segs.append(seg)
            self.depth += seg[3]
            top = max(top, seg[2])
            self._tail_ok = not torn
        self.next_seq = max(top, self.acked) + 1
        return self

    def append(self, boot, kind, data, ts, ticks, critical=True):
        # Stores an event and returns its seq; None only for a refused non-critical one.
        if not critical and self.depth >= self.capacity:
            self.refused += 1
            return None
        payload = json.dumps([boot, ts, ticks, kind, data], separators=(",", ":")).encode()
        n = len(payload)
        if n > MAX_PAYLOAD:
            raise ValueError("outbox: %s event of %d bytes, over %d" % (kind, n, MAX_PAYLOAD))
        seq = self.next_seq
        rec = bytearray(HDR_LEN + n)
        struct.pack_into("<HHI", rec, 0, MAGIC, n, seq)
        rec[HDR_LEN:] = payload
        crc = binascii.crc32(payload, binascii.crc32(memoryview(rec)[2:8]))
        struct.pack_into("<I", rec, 8, crc)
        seg = self._segs[-1] if self._segs and self._tail_ok else None
        new = seg is None or seq - seg[0] >= self.per_segment
        if new:
            seg = [seq, seq, seq, 0]
        # The seq is spent even if the write fails: a record that did land must
        # never share its seq with a later one. base lets the gateway skip the gap.
        self.next_seq = seq + 1
        try:
            with open(self._seg_path(seg[0]), "ab") as f:
                f.write(rec)
            persist.sync()
        except OSError:
            self._tail_ok = False  # never write after a torn record
            raise
        if new:
            self._segs.append(seg)
            self._tail_ok = True
        seg[2] = seq
        seg[3] += 1
        self.depth += 1
        return seq

    def ack(self, seq):
        # The gateway has stored every seq up to `seq`: drop them from flash.
        # An ack past the highest seq assigned (a gateway that remembers an older
        # flash) acks everything pending but does not move seq.
        top = self.next_seq - 1
        seq = min(seq, top)
        if seq <= self.acked:
            return
        persist.write_ints(self._path("mark"), [seq, top])
        self.acked = seq
        keep = []
        for seg in self._segs:
            if seg[2] <= seq:
                os.remove(self._seg_path(seg[0]))
                self.depth -= seg[3]
                continue
            if seg[1] <= seq:
                self.depth -= seg[3]
                seg[1], seg[3] = self._pending(seg[0])
                self.depth += seg[3]
            keep.append(seg)
        self._segs = keep

    def records(self, after=0):
        # Pending records with seq > after, in order, read one at a time from flash.
        # Appends and acks may happen between two records: the stream sees them.
        first = off = -1
        while True:
            floor = max(after, self.acked)
            seg = self._segment_after(floor)
            if seg is None:
                return
            if seg[0] != first:
                first, off = seg[0], 0
            rec, off = self._read(first, off, floor)
            if rec is None:
                after = seg[2]  # the file changed under us: move past it
                continue
            after = rec["seq"]
            yield rec

    # -- on flash --

    def _path(self, name):
        return self.root + "/" + name

    def _seg_path(self, first):
        return self.root + "/%010d.seg" % first

    def _segment_names(self):
        firsts = []
        for name in os.listdir(self.root):
            if name.endswith(".seg"):
                try:
                    firsts.append(int(name[:-4]))
                except ValueError:
                    pass  # not ours
        firsts.sort()
        return firsts

    def _segment_after(self, floor):
        for seg in self._segs:
            if seg[2] > floor:
                return seg
        return None

    def _at(self, f, off):
        # (seq, length) of the intact record at `off`, else None. The payload is
        # left in self._buf.
        h = self._mv
        f.seek(off)
        if f.readinto(h[:HDR_LEN]) != HDR_LEN:
            return None
        magic, n, seq, crc = struct.unpack_from(HDR, h)
        if magic != MAGIC or n > MAX_PAYLOAD:
            return None
        if f.readinto(h[HDR_LEN : HDR_LEN + n]) != n:
            return None
        if binascii.crc32(h[HDR_LEN : HDR_LEN + n], binascii.crc32(h[2:8])) != crc:
            return None
        return seq, n

    def _walk(self, f, off):
        # Yields (offset, seq, length) of each intact record from `off` on, and
        # (offset, None, 0) for a damaged stretch that has an intact record after
        # it. Trailing bytes with no intact record after them (a torn append) end it.
        size = f.seek(0, 2)
        while off + HDR_LEN <= size:
            r = self._at(f, off)
            if r:
                yield off, r[0], r[1]
                off += HDR_LEN + r[1]
                continue
            nxt = off + 1
            while nxt + HDR_LEN <= size and not self._at(f, nxt):
                nxt += 1
            if nxt + HDR_LEN > size:
                return
            yield off, None, 0
            off = nxt

    def _survey(self, first):
        # The segment's state after a restart, and whether its tail is torn.
        seg = [first, 0, 0, 0]
        end = 0
        with open(self._seg_path(first), "rb") as f:
            for off, seq, n in self._walk(f, 0):
                if seq is None:
                    self.corrupt += 1
                    continue
                end = off + HDR_LEN + n
                seg[2] = seq
                if seq > self.acked:
                    if seg[3] == 0:
                        seg[1] = seq
                    seg[3] += 1
            torn = end < f.seek(0, 2)
        return seg, torn

    def _pending(self, first):
        # (lowest pending seq, pending count) of a segment, after an ack.
        lo = count = 0
        with open(self._seg_path(first), "rb") as f:
            for _, seq, _ in self._walk(f, 0):
                if seq is not None and seq > self.acked:
                    lo = lo or seq
                    count += 1
        return lo, count

    def _read(self, first, off, floor):
        # The first intact record at or after `off` with seq > floor, as a dict, and
        # the offset after it; (None, off) when there is none.
        try:
            f = open(self._seg_path(first), "rb")
        except OSError:
            return None, off
        with f:
            for at, seq, n in self._walk(f, off):
                if seq is not None and seq > floor:
                    boot, ts, ticks, kind, data = json.loads(self._mv[HDR_LEN : HDR_LEN + n])
                    return (
                        {"boot": boot, "seq": seq, "ts": ts, "ticks": ticks, "kind": kind,
                         "data": data},
                        at + HDR_LEN + n,
                    )
        return None, off
