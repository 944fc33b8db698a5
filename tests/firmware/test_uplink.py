"""The uplink sends the outbox in order until the gateway acks it (in the VM, fake link)."""

SCRIPT = """
import asyncio, json, time
from andon.outbox import Outbox
from andon.uplink import Uplink, WINDOW
import vtest

class FakeLink:
    def __init__(self):
        self.state = "up"
        self.sent = []
    async def publish(self, topic, payload, retain=False, qos=0):
        if self.state != "up":
            return None
        self.sent.append(json.loads(payload))
        return len(self.sent)

def seqs(link, start=0):
    return [m["seq"] for m in link.sent[start:]]

async def main():
    out = {}
    box = Outbox(capacity=100).open()
    old_boot_ticks = time.ticks_ms()
    box.append(1, "cord_pulled", {"input": "cord"}, None, old_boot_ticks)  # from an earlier boot
    link = FakeLink()
    up = Uplink(box, link, "andon/v1/P/L/S/evt", "B1", 2, resend_ms=150)
    task = asyncio.create_task(up.run())
    box.append(2, "call", {"input": "q", "reason": "quality"}, None, time.ticks_ms() - 400)
    box.append(2, "ack", {"input": "ack"}, 1764190000000, time.ticks_ms())
    up.kick()
    await asyncio.sleep_ms(30)
    out["first"] = link.sent[:]

    # no ack within the timeout: everything pending goes again, in order
    await asyncio.sleep_ms(200)
    out["after_timeout"] = seqs(link, 3)
    out["resends"] = up.resends

    # the gateway acks 2: only 3 stays; nothing is sent again while the ack is fresh
    up.on_ack(2)
    n = len(link.sent)
    await asyncio.sleep_ms(30)
    out["depth_after_ack"] = box.depth
    out["base_after_ack"] = box.base
    out["sent_after_ack"] = seqs(link, n)

    # a burst bigger than the window: at most WINDOW beyond the ack are in flight
    for i in range(WINDOW + 10):
        box.append(2, "cycle", {"input": "cyc"}, None, time.ticks_ms(), False)
    n = len(link.sent)
    up.kick()
    await asyncio.sleep_ms(30)
    out["burst_max"] = max(seqs(link, n))
    out["window_limit"] = box.base - 1 + WINDOW

    # link down: nothing is lost, and reconnecting (rewind) sends all pending from base
    link.state = "connecting"
    up.on_ack(box.base - 1 + WINDOW)
    await asyncio.sleep_ms(30)
    link.state = "up"
    n = len(link.sent)
    up.rewind()
    await asyncio.sleep_ms(30)
    out["after_rewind_first"] = seqs(link, n)[0]
    out["base_now"] = box.base
    up.on_ack(box.next_seq - 1)
    await asyncio.sleep_ms(30)
    out["final_depth"] = box.depth
    task.cancel()
    return out

vtest.run(main())
"""


def test_uplink_sends_in_order_resends_until_acked_and_respects_the_window(mpy):
    data = mpy.run(SCRIPT).data
    first = data["first"]
    assert [m["seq"] for m in first] == [1, 2, 3]
    assert all(m["board"] == "B1" and m["base"] == 1 for m in first)
    old, call, ack = first
    assert old["boot"] == 1 and old["ts"] is None and old["age"] is None  # age unknown after reboot
    assert call["ts"] is None and 400 <= call["age"] < 2000  # dated by its age
    assert ack["ts"] == 1764190000000 and ack["age"] is None
    assert data["after_timeout"][:3] == [1, 2, 3] and data["resends"] >= 1
    assert data["depth_after_ack"] == 1 and data["base_after_ack"] == 3
    assert data["sent_after_ack"] == []
    assert data["burst_max"] == data["window_limit"]
    assert data["after_rewind_first"] == data["base_now"]
    assert data["final_depth"] == 0
