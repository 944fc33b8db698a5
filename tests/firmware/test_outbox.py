"""The board's persistent outbox and boot counter, run inside the MicroPython VM."""

import json
import random
import subprocess
import time

from andon.sim.vm import vm_command, vm_env

PRELUDE = """
import os
from andon import persist
from andon.outbox import Outbox
from vtest import emit

def seqs(ob, after=0):
    return [r["seq"] for r in ob.records(after)]

def cord(ob, i, boot=1):
    return ob.append(boot, "cord_pulled", {"input": "cord"}, None, i)

def cycle(ob, i):
    return ob.append(1, "cycle", {"input": "cycle"}, None, i, critical=False)
"""


def run(mpy, body: str, heap: str = "256K"):
    return mpy.run(PRELUDE + body, heap=heap).data


def test_boot_counter_counts_up_and_never_goes_back(mpy):
    data = run(
        mpy,
        """
out = [persist.next_boot(), persist.next_boot(), persist.next_boot()]
# power cut after the new copy was written, before the rename: the .tmp copy wins
persist.write_ints("b", [7])
os.rename("b", "b7")
persist.write_ints("b", [6])
os.rename("b7", "b.tmp")
out.append(persist.next_boot("b"))
# the main copy is garbage (a FAT rename cut short): the other copy is used
persist.write_ints("c", [9])
os.rename("c", "c.tmp")
open("c", "w").write("9 deadbeef")
out.append(persist.next_boot("c"))
# a torn .tmp beside a good main copy is ignored
persist.write_ints("d", [4])
open("d.tmp", "w").write("12")
out.append(persist.next_boot("d"))
# nothing readable at all: a fresh board
open("e", "w").write("garbage")
out.append(persist.next_boot("e"))
emit(out)
""",
    )
    assert data == [1, 2, 3, 8, 10, 5, 1]
    assert (mpy.flash / "boot.count").read_text().split()[0] == "3"


def test_records_round_trip_and_ack_drops_them(mpy):
    data = run(
        mpy,
        """
ob = Outbox(per_segment=4).open()
got = [
    ob.append(3, "cord_pulled", {"input": "cord"}, None, 1000),
    ob.append(3, "scan", {"reader": "post", "role": "post", "uid": "04A1B2C3D4E580"},
              1764190000123, 1010),
    ob.append(3, "cycle", {"input": "cycle"}, 1764190000999, 1020, critical=False),
]
for i in range(7):
    got.append(cord(ob, i, boot=3))
first = list(ob.records())[:2]
state = [ob.depth, ob.base, ob.next_seq]
ob.ack(6)
after_ack = [ob.depth, ob.base, seqs(ob), seqs(ob, 8)]
ob.ack(4)  # an older ack, redelivered: nothing changes
after_old = [ob.depth, ob.base]
reopened = Outbox(per_segment=4).open()
emit({"got": got, "first": first, "state": state, "after_ack": after_ack,
      "after_old": after_old,
      "reopened": [reopened.depth, reopened.base, reopened.next_seq, seqs(reopened)],
      "files": sorted(os.listdir("outbox"))})
""",
    )
    assert data["got"] == list(range(1, 11))
    assert data["first"] == [
        {"boot": 3, "seq": 1, "ts": None, "ticks": 1000, "kind": "cord_pulled",
         "data": {"input": "cord"}},
        {"boot": 3, "seq": 2, "ts": 1764190000123, "ticks": 1010, "kind": "scan",
         "data": {"reader": "post", "role": "post", "uid": "04A1B2C3D4E580"}},
    ]  # fmt: skip
    assert data["state"] == [10, 1, 11]
    assert data["after_ack"] == [4, 7, [7, 8, 9, 10], [9, 10]]
    assert data["after_old"] == [4, 7]
    # acked records are not back after a reboot
    assert data["reopened"] == [4, 7, 11, [7, 8, 9, 10]]
    # segments 1-4 went whole; 5-8 still holds 7 and 8
    assert len([f for f in data["files"] if f.endswith(".seg")]) == 2


def test_seq_never_restarts_even_after_everything_is_acked(mpy):
    data = run(
        mpy,
        """
ob = Outbox(per_segment=4).open()
for i in range(9):
    cord(ob, i)
ob.ack(9)
segs_left = [f for f in os.listdir("outbox") if f.endswith(".seg")]
ob = Outbox(per_segment=4).open()
empty = [ob.depth, ob.base, ob.next_seq]
s = cord(ob, 0, boot=2)
ob.ack(10 ** 6)  # beyond anything assigned: everything goes, seq does not jump
ob = Outbox(per_segment=4).open()
emit({"segs_left": segs_left, "empty": empty, "s": s,
      "after_big_ack": [ob.depth, ob.next_seq, cord(ob, 1, boot=3)]})
""",
    )
    assert data["segs_left"] == []
    assert data["empty"] == [0, 10, 10]
    assert data["s"] == 10
    assert data["after_big_ack"] == [0, 11, 11]


def test_a_torn_last_record_is_dropped_at_every_byte_offset(mpy):
    data = run(
        mpy,
        """
ob = Outbox(root="orig").open()
for i in range(5):
    cord(ob, i)
name = [f for f in os.listdir("orig") if f.endswith(".seg")][0]
start = os.stat("orig/" + name)[6]
ob.append(1, "scan", {"reader": "post", "role": "post", "uid": "04A1B2C3"}, 17, 5)
whole = open("orig/" + name, "rb").read()
bad = []
for cut in range(start, len(whole)):
    root = "t%d" % cut
    os.mkdir(root)
    with open(root + "/" + name, "wb") as f:
        f.write(whole[:cut])
    ob = Outbox(root=root).open()
    seen = [seqs(ob), ob.depth, ob.next_seq, ob.corrupt]
    if seen != [[1, 2, 3, 4, 5], 5, 6, 0]:
        bad.append([cut, seen])
    # the seq of the torn record was never handed out, so it is the next one
    s = cord(ob, 9)
    ob = Outbox(root=root).open()
    seen = [s, seqs(ob), ob.corrupt]
    if seen != [6, [1, 2, 3, 4, 5, 6], 0]:
        bad.append([cut, seen])
emit({"cuts": len(whole) - start, "bad": bad})
""",
    )
    assert data["cuts"] > 12 + 20  # header and payload: every byte of the record was cut
    assert data["bad"] == []


def test_a_damaged_record_in_the_middle_is_skipped_and_counted(mpy):
    data = run(
        mpy,
        """
ob = Outbox().open()
starts = []
for i in range(10):
    names = [f for f in os.listdir("outbox") if f.endswith(".seg")]
    starts.append(os.stat("outbox/" + names[0])[6] if names else 0)
    cord(ob, i)
path = "outbox/" + names[0]

def flip(off):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x5A]))

flip(starts[4] + 20)   # payload of seq 5
flip(starts[6] + 2)    # length field of seq 7
flip(starts[0] + 1)    # magic of seq 1
ob = Outbox().open()
out = {"seqs": seqs(ob), "corrupt": ob.corrupt, "depth": ob.depth, "base": ob.base,
       "next": ob.next_seq}
ob.ack(10)
out["after_ack"] = [ob.depth, [f for f in os.listdir("outbox") if f.endswith(".seg")]]
emit(out)
""",
    )
    assert data["seqs"] == [2, 3, 4, 6, 8, 9, 10]
    assert data["corrupt"] == 3
    assert data["depth"] == 7
    assert data["base"] == 2  # the gateway counts the lost seq 1 as done, not as a gap
    assert data["next"] == 11
    assert data["after_ack"] == [0, []]


def test_capacity_refuses_cycles_but_never_critical_events(mpy):
    data = run(
        mpy,
        """
ob = Outbox(capacity=10, per_segment=4).open()
flags = []
for i in range(10):
    flags.append(ob.near_full)
    cycle(ob, i)
refused = cycle(ob, 10)
critical = [cord(ob, 11 + i) for i in range(15)]
full = [ob.depth, ob.capacity, ob.near_full, ob.refused]
ob.ack(20)
after = [ob.depth, ob.near_full, cycle(ob, 30)]
emit({"flags": flags, "refused": refused, "critical": critical, "full": full, "after": after,
      "seqs": seqs(ob)})
""",
    )
    # 80 % of 10 is 8: raised once 8 are pending
    assert data["flags"] == [False] * 8 + [True] * 2
    assert data["refused"] is None
    assert data["critical"] == list(range(11, 26))
    assert data["full"] == [25, 10, True, 1]
    assert data["after"] == [5, False, 26]
    assert data["seqs"] == [21, 22, 23, 24, 25, 26]


def test_an_oversized_event_is_refused_with_a_clear_error(mpy):
    data = run(
        mpy,
        """
ob = Outbox().open()
try:
    ob.append(1, "scan", {"uid": "A" * 400}, None, 0)
    err = None
except ValueError as e:
    err = str(e)
emit([err, ob.depth, ob.next_seq])
""",
    )
    assert "scan event of" in data[0] and "over 300" in data[0]
    assert data[1:] == [0, 1]


STREAM = """
import gc
from vdevices import bench
ob = Outbox(root=ROOT).open()
if ob.depth == 0:
    for i in range(N):
        uid = "04A1B2C3D4E5%02X" % (i % 256)
        ob.append(1, "scan", {"reader": "post", "role": "post", "uid": uid}, 1764190000000 + i, i)
    emit(None)
else:
    gc.collect()
    bench.heap_peak = 0
    count = 0
    for rec in ob.records():
        count += rec["seq"] == count + 1
        gc.collect()
        bench.sample_heap()
    emit(count)
"""


def stream_peak(mpy, n: int) -> int:
    script = PRELUDE + f"N = {n}\nROOT = 'o{n}'\n" + STREAM
    mpy.run(script)  # fills the outbox
    result = mpy.run(script, heap="48K")  # reopens and streams it
    assert result.data == n
    return result.heap_peak


def test_streaming_memory_does_not_grow_with_depth(mpy):
    peak_few = stream_peak(mpy, 4)
    peak_many = stream_peak(mpy, 400)
    # 400 records are about 35 KB on flash; reading them all costs under a KB more
    # than reading 4: the per-segment list (13 small lists), not the records
    assert peak_many - peak_few < 2048, (peak_few, peak_many)


WRITER = """
import json
from andon import persist
from andon.outbox import Outbox
boot = persist.next_boot()
ob = Outbox(per_segment=8).open()
print("R", json.dumps([boot, ob.acked, ob.next_seq, ob.corrupt, [r["seq"] for r in ob.records()]]))
i = 0
while True:
    seq = ob.append(boot, "cord_pulled", {"input": "cord"}, None, i)
    print("S", seq)
    i += 1
    if i % 16 == 0:
        ob.ack(seq - 8)
        print("A", seq - 8)
"""


class Ledger:
    """What the killed writers printed: each printed seq had been returned by append()."""

    def __init__(self):
        self.printed: list[int] = []
        self.acked = 0
        self.boots: list[int] = []

    def check_recovery(self, boot, acked, next_seq, corrupt, pending):
        assert corrupt == 0
        assert not self.boots or boot > self.boots[-1]
        self.boots.append(boot)
        assert acked >= self.acked  # a cut mid-ack may have stored it unprinted
        assert pending == sorted(set(pending))
        assert all(s > acked for s in pending)
        kept = [s for s in self.printed if s > acked]
        assert set(kept) <= set(pending), "a stored event was lost"
        assert next_seq > max(self.printed + pending, default=0)
        self.acked = acked

    def take(self, lines: list[str]):
        for line in lines:
            tag, _, value = line.partition(" ")
            if tag == "R":
                self.check_recovery(*json.loads(value))
            elif tag == "S":
                seq = int(value)
                assert not self.printed or seq > self.printed[-1], "seq reused or went back"
                self.printed.append(seq)
            elif tag == "A":
                self.acked = max(self.acked, int(value))


def test_power_cuts_at_random_points_lose_nothing_and_reuse_no_seq(mpy):
    rng = random.Random(20240613)
    script = mpy.flash / "writer.py"
    script.write_text(WRITER)
    ledger = Ledger()
    # Cut until 30 boots have recovered and 200 events were printed: on a loaded machine a
    # VM killed early may not have booted yet, so the number of cuts that takes varies.
    cuts = 0
    while len(ledger.boots) < 30 or len(ledger.printed) <= 200:
        assert cuts < 150, f"{cuts} cuts, {len(ledger.boots)} boots seen: the VM hardly runs"
        out = mpy.flash.parent / f"run{cuts}.out"
        cuts += 1
        with out.open("w") as sink:
            proc = subprocess.Popen(
                vm_command(script), cwd=mpy.flash, env=vm_env(), stdout=sink, stderr=sink
            )
            try:
                time.sleep(rng.uniform(0.02, 0.2))
            finally:
                proc.kill()
                proc.wait()
        lines = out.read_text().splitlines()
        # the last line may itself be cut short by the kill
        ledger.take(lines if out.read_text().endswith("\n") else lines[:-1])
    final = run(
        mpy,
        """
import json
ob = Outbox(per_segment=8).open()
emit([persist.next_boot(), ob.acked, ob.next_seq, ob.corrupt, seqs(ob)])
""",
    )
    ledger.check_recovery(*final)


def test_the_largest_record_accepted_still_fits_the_wire(mpy):
    # Many tiny fields are the worst case: the wire's spacing grows them most.
    data = run(
        mpy,
        """
from andon import wire
ob = Outbox().open()
fields = {}
largest = None
while True:
    fields["f%d" % len(fields)] = 1
    try:
        ob.append(4294967295, "input_fault", fields, 1764190000123, 1073741823)
    except ValueError:
        break
    largest = list(ob.records(ob.next_seq - 2))[0]
largest.update({"board": "B" * 32, "seq": 4294967295, "base": 4294967295, "age": 4294967295})
emit([len(largest["data"]), len(wire.event_payload(largest))])
""",
    )
    fields, wire_bytes = data
    assert fields > 20
    assert wire_bytes <= 512, data
