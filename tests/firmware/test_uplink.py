"""The uplink sends the outbox in order until the gateway acks it (in the VM, fake link), and
sends it again on a new gateway birth, also on a real board against Mosquitto."""

from tests.firmware.paho_watch import Watcher
from tests.firmware.standin import AckStandIn
from tests.firmware.test_station import (
    BOARD,
    CORD_UP,
    GATEWAY_STATUS,
    booted,
    station_config,
    until,
    vboard,
)

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


# The first lines of SCRIPT (up to main): the outbox, the uplink and the fake link.
PRELUDE = SCRIPT.split("async def main():")[0]


def test_a_busy_station_gets_its_resend_a_timeout_after_the_last_progress(mpy):
    # Events keep coming and acks keep arriving that move nothing: neither may push the resend
    # back, or a gap the gateway waits on stays open as long as the station is busy.
    data = mpy.run(
        PRELUDE
        + """
async def main():
    box = Outbox(capacity=1000).open()
    link = FakeLink()
    up = Uplink(box, link, "andon/v1/P/L/S/evt", "B1", 1, resend_ms=400)
    task = asyncio.create_task(up.run())
    box.append(1, "cord_pulled", {"input": "cord"}, None, time.ticks_ms())
    up.kick()
    wakes = 0
    while up.resends == 0 and wakes < 200:  # 200 wakes, 30 ms apart: 6 s, 15 timeouts
        await asyncio.sleep_ms(30)
        box.append(1, "cycle", {"input": "cyc"}, None, time.ticks_ms(), False)
        up.kick()
        up.on_ack(0)  # the gateway acks again what it had: no progress
        wakes += 1
    await asyncio.sleep_ms(0)
    task.cancel()
    return {"resends": up.resends, "wakes": wakes, "seqs": seqs(link), "base": box.base}

vtest.run(main())
"""
    ).data
    assert data["resends"] == 1, f"no resend in {data['wakes']} wakes"
    assert data["base"] == 1
    seqs = data["seqs"]
    assert seqs.count(1) == 2  # the oldest went again...
    again = seqs.index(1, 1)
    assert seqs[again:] == list(range(1, len(seqs) - again + 1))  # ...followed by the rest, in order
    assert max(seqs) <= 16  # never beyond the window


# An uplink whose timeout is a minute, and a step: `apply()` (a gateway status, an owner), then
# one new event. What went out up to that event shows whether the step made the uplink send
# everything again.
STEPS = (
    PRELUDE
    + """
def stepped_uplink():
    box = Outbox(capacity=100).open()
    link = FakeLink()
    up = Uplink(box, link, "andon/v1/P/L/S/evt", "B1", 1, resend_ms=60000)
    return box, link, up, asyncio.create_task(up.run())

async def step(box, link, up, apply=None):
    n = len(link.sent)
    if apply:
        apply()
    await asyncio.sleep_ms(0)
    seq = box.append(1, "cycle", {"input": "cyc"}, None, time.ticks_ms(), False)
    up.kick()
    for _ in range(500):
        if seq in seqs(link, n):
            break
        await asyncio.sleep_ms(10)
    return seqs(link, n)
"""
)


def test_a_new_gateway_birth_resends_everything_pending_at_once(mpy):
    # Whatever goes again here went because of a gateway status, not the timeout.
    data = mpy.run(
        STEPS
        + """
async def main():
    out = {}
    box, link, up, task = stepped_uplink()

    async def after(label, status=None):
        out[label] = await step(box, link, up, status and (lambda: up.on_gateway(None, *status)))

    await after("first")
    await after("retained birth seen at subscribe", (True, 100, True))
    await after("the same birth again", (True, 100, False))
    await after("a new birth", (True, 200, False))
    await after("the Will", (False, None, False))
    await after("back online", (True, 200, False))
    await after("a new birth, retained at a reconnect", (True, 300, True))
    task.cancel()
    out["resends"] = up.resends
    return out

vtest.run(main())
"""
    ).data
    assert data.pop("resends") == 0  # no timeout ever fired
    assert data == {
        "first": [1],
        "retained birth seen at subscribe": [2],  # the (re)connect sent everything already
        "the same birth again": [3],
        "a new birth": [1, 2, 3, 4],  # at once, from the oldest, then the new event
        "the Will": [5],
        "back online": [1, 2, 3, 4, 5, 6],
        "a new birth, retained at a reconnect": [7],
    }


def test_a_board_follows_its_lines_owner_among_several_gateways(mpy):
    # Statuses and owners in the order a board may get them.
    data = mpy.run(
        STEPS
        + """
async def main():
    out = []
    box, link, up, task = stepped_uplink()

    async def after(label, owner=None, status=None):
        apply = (lambda: up.on_owner(*owner)) if owner else status and (lambda: up.on_gateway(*status))
        sent = await step(box, link, up, apply)
        out.append([label, sent, up.owner, up.online.get(up.owner) is False])

    # no owner topic (a one-gateway plant): the plant's one gateway topic, as before
    await after("first")
    await after("one gateway's birth", status=(None, True, 100, False))
    await after("one gateway's will", status=(None, False, None, False))
    # several gateways: the owner topic, retained at the board's subscribe
    await after("a's birth, retained", status=("gw-a", True, 10, True))
    await after("owner a, retained", owner=("gw-a", 1, True))
    await after("the one topic's birth", status=(None, True, 200, False))
    await after("b's birth", status=("gw-b", True, 20, False))
    await after("b's will: another line's owner died", status=("gw-b", False, None, False))
    await after("b back", status=("gw-b", True, 21, False))
    await after("a's will: the owner died", status=("gw-a", False, None, False))
    await after("b takes the line", owner=("gw-b", 2, False))
    await after("a paused, announces its old epoch", owner=("gw-a", 1, False))
    await after("b's owner topic again", owner=("gw-b", 2, False))
    await after("b's new birth", status=("gw-b", True, 22, False))
    await after("b's will", status=("gw-b", False, None, False))
    task.cancel()
    return {"steps": out, "resends": up.resends}

vtest.run(main())
"""
    ).data
    assert data["resends"] == 0  # no timeout ever fired
    steps = {label: (sent, followed, offline) for label, sent, followed, offline in data["steps"]}
    assert steps == {
        "first": ([1], None, False),
        "one gateway's birth": ([1, 2], None, False),
        "one gateway's will": ([3], None, True),
        "a's birth, retained": ([4], None, True),
        "owner a, retained": ([5], "gw-a", False),  # the connect sent everything already
        "the one topic's birth": ([6], "gw-a", False),  # others' births: nothing
        "b's birth": ([7], "gw-a", False),
        "b's will: another line's owner died": ([8], "gw-a", False),
        "b back": ([9], "gw-a", False),
        "a's will: the owner died": ([10], "gw-a", True),
        "b takes the line": (list(range(1, 12)), "gw-b", False),  # a higher epoch: all again
        "a paused, announces its old epoch": ([12], "gw-b", False),  # a lower one: ignored
        "b's owner topic again": ([13], "gw-b", False),
        "b's new birth": (list(range(1, 15)), "gw-b", False),  # its owner's new birth
        "b's will": ([15], "gw-b", True),
    }


def test_a_board_resends_at_once_when_a_new_gateway_birth_reaches_it(tmp_path, broker):
    # The board's 5 s timeout never fires here: the resend comes from the birth.
    board = vboard(tmp_path / "flash", station_config(broker.port))
    with AckStandIn(broker, acking=False) as standin, Watcher(broker, client_id="gw") as gateway:
        gateway.publish(GATEWAY_STATUS, b'{"online": true, "since": 1}', retain=True)
        try:
            board.start(inputs=CORD_UP)
            booted(board)
            log = standin.log(BOARD)
            standin.wait(lambda: 1 in log.by_seq, what="the boot report")
            sends = [e["seq"] for e in log.deliveries].count(1)
            gateway.publish(GATEWAY_STATUS, b'{"online": true, "since": 2}', retain=True)
            standin.wait(
                lambda: [e["seq"] for e in log.deliveries].count(1) > sends, what="a resend"
            )
            status = board.status()
        finally:
            board.stop()
    assert status["outbox"] == 1  # never acked: still pending
    assert status["resends"] == 0  # not the timeout: the birth


def test_a_board_of_a_plant_of_several_gateways_follows_its_lines_owner(tmp_path, broker):
    # L1's owner is gw-a; gw-b serves other lines. A board follows gw-a only: gw-b's Will
    # does not show "gateway offline" here, gw-b taking the line (a higher epoch) makes it
    # resend at once, and gw-a announcing its old epoch again (it was paused) changes nothing.
    board = vboard(tmp_path / "flash", station_config(broker.port))
    owner, state = "andon/v1/P1/L1/gateway", "andon/v1/P1/L1/S1/state"
    status = {name: f"andon/v1/gateway/{name}/status" for name in ("gw-a", "gw-b")}
    with AckStandIn(broker, acking=False) as standin, Watcher(broker, client_id="gws") as gws:
        gws.publish(status["gw-a"], b'{"online": true, "since": 1}', retain=True)
        gws.publish(status["gw-b"], b'{"online": true, "since": 2}', retain=True)
        gws.publish(owner, b'{"gateway": "gw-a", "epoch": 1, "since": 1}', retain=True)
        log = standin.log(BOARD)

        def sends() -> int:
            return [e["seq"] for e in log.deliveries].count(1)

        def then_lamps(station_state: str, lit: str) -> dict:
            """The board's lamps once it has applied what came before this station state."""
            gws.publish(state, f'{{"state": "{station_state}", "call": null}}'.encode())
            return until(lit, lambda: (m := board.lamps())[lit] != "off" and m)

        try:
            board.start(inputs=CORD_UP)
            booted(board)
            standin.wait(lambda: 1 in log.by_seq, what="the boot report")
            gws.publish(status["gw-b"], b'{"online": false}', retain=True)
            assert then_lamps("running", "green")["white"] == "off"  # not its owner

            before = sends()
            gws.publish(owner, b'{"gateway": "gw-b", "epoch": 2, "since": 3}', retain=True)
            standin.wait(lambda: sends() > before, what="a resend to the new owner")
            # gw-b is offline (its Will above): the board follows gw-b now
            until("gateway offline", lambda: board.lamps()["white"] == "on")

            before = sends()
            gws.publish(owner, b'{"gateway": "gw-a", "epoch": 1, "since": 4}', retain=True)
            assert then_lamps("stopped", "red")["white"] == "on"  # still gw-b's offline
            assert sends() == before  # no resend for an old owner

            gws.publish(status["gw-b"], b'{"online": true, "since": 5}', retain=True)
            standin.wait(lambda: sends() > before, what="a resend on the owner's new birth")
            until("gateway online", lambda: board.lamps()["white"] == "off")
            resends = board.status()["resends"]
        finally:
            board.stop()
    assert resends == 0  # each resend came from an owner or a birth, not the timeout
