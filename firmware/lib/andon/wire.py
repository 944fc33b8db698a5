# The wire contract, board side (docs/protocol.md): topic names, event payloads,
# and decoding of what the gateway sends. Pure: no sockets, no pins.
import json

ROOT = "andon/v1"
# + "status": the plant's one gateway's status; + "{name}/status": one of several gateways'
GATEWAY = ROOT + "/gateway/"
STATION_STATES = ("running", "called", "acknowledged", "stopped", "offline")
LINE_STATES = ("running", "called", "stopped")
CALLS = ("cord", "maintenance", "quality", "material")


class Topics:
    def __init__(self, site, line, station):
        self.line = "%s/%s/%s" % (ROOT, site, line)
        base = "%s/%s" % (self.line, station)
        self.evt = base + "/evt"
        self.status = base + "/status"
        self.telemetry = base + "/telemetry"
        self.state = base + "/state"
        self.ack = base + "/ack"
        self.line_state = self.line + "/state"
        self.owner = self.line + "/gateway"  # which of several gateways serves the line

    def downlinks(self):
        return (self.state, self.ack, self.line_state, self.owner, GATEWAY + "status",
                GATEWAY + "+/status")


def event_payload(rec):
    # rec: an outbox record {board, boot, seq, base, ts, age, kind, data}
    out = {
        "board": rec["board"],
        "boot": rec["boot"],
        "seq": rec["seq"],
        "base": rec["base"],
        "ts": rec["ts"],
        "age": rec["age"],
        "kind": rec["kind"],
    }
    for k, v in rec["data"].items():
        out[k] = v
    return json.dumps(out)


def birth(board, boot, fw, reset_cause, depth, cap, near_full, last_error=None):
    # last_error: why the previous boot ended (andon.fault), only when it ended in a fault
    b = {
        "board": board, "boot": boot, "online": True, "fw": fw, "reset_cause": reset_cause,
        "outbox": depth, "outbox_cap": cap, "outbox_near_full": near_full,
    }
    if last_error is not None:
        b["last_error"] = last_error
    return json.dumps(b)


def will(board, boot):
    return json.dumps({"board": board, "boot": boot, "online": False})


def telemetry(board, boot, uptime_s, heap_free, depth, reconnects, rssi):
    return json.dumps({
        "board": board, "boot": boot, "uptime_s": uptime_s, "heap_free": heap_free,
        "outbox": depth, "reconnects": reconnects, "rssi": rssi,
    })


def _obj(payload):
    try:
        m = json.loads(payload)
    except (ValueError, TypeError):
        return None
    return m if isinstance(m, dict) else None


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def decode(topics, board, topic, payload):
    # Returns a small dict for what the board acts on, or None to ignore the message.
    m = _obj(payload)
    if m is None:
        return None
    if topic == topics.state:
        if m.get("state") not in STATION_STATES or m.get("call") not in CALLS + (None,):
            return None
        return {"kind": "station", "state": m["state"], "call": m["call"],
                "material": m.get("material") is True}
    if topic == topics.line_state:
        if m.get("state") not in LINE_STATES:
            return None
        return {"kind": "line", "state": m["state"]}
    if topic == topics.ack:
        if m.get("board") != board or not _int(m.get("boot")) or not _int(m.get("seq")):
            return None
        return {"kind": "ack", "boot": m["boot"], "seq": m["seq"]}
    if topic == topics.owner:
        if not isinstance(m.get("gateway"), str) or not _int(m.get("epoch")):
            return None
        return {"kind": "owner", "gateway": m["gateway"], "epoch": m["epoch"]}
    if topic.startswith(GATEWAY) and topic.endswith("/status"):
        if not isinstance(m.get("online"), bool):
            return None
        since = m.get("since")  # tells one gateway birth from the next
        # gateway: the name of one of several, None for the plant's one
        return {"kind": "gateway", "gateway": topic[len(GATEWAY):-7] or None,
                "online": m["online"], "since": since if _int(since) else None}
    return None
