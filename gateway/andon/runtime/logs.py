"""The gateway's log: plain lines for a person, or (`--log-format json`) one JSON object a
line for a collector (journald, Loki, Elasticsearch), with the fields of what happened.

Calls, line stops and alerts are logged as they are committed, one line each: what people
were told is on record in the log too, not only on MQTT. A batch with more call and line
changes than a person reads (a catch-up after an outage: thousands a second) logs one summary
line for them instead: journald would drop lines past its rate limit (10,000 in 30 s by
default) at random anyway, and writing them cost the gateway a fifth of its time under such a
backlog. Every change is in the event log and the records (`andon events`, the reports).
Alerts are always logged one by one.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime

from andon.core.effects import Alert, CallRecord, Effect, LineChanged

log = logging.getLogger("andon.plant")

FIELDS = "andon"  # the LogRecord attribute (`extra={FIELDS: {...}}`) a JSON line carries
BURST = 50  # call and line changes in one batch above which they are logged as one summary


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...fields}` on one line; an exception as `error`."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **getattr(record, FIELDS, {}),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def _call_phase(call: CallRecord) -> str:
    if call.resolved is not None:
        return "resolved"
    if call.stopped is not None:
        return "stopped the line"
    return "acknowledged" if call.acknowledged is not None else "opened"


def log_effects(effects: list[Effect]) -> None:
    """One line per call change, line state change and alert among `effects`; one summary
    line for the call and line changes of a burst (more than BURST)."""
    changes = [e for e in effects if isinstance(e, CallRecord | LineChanged)]
    if len(changes) > BURST:
        _log_burst(changes)
        changes = []
    for effect in changes:
        if isinstance(effect, CallRecord):
            _log_call(effect)
        else:
            _log_line(effect)
    for effect in effects:
        if isinstance(effect, Alert):
            _log_alert(effect)


def _log_call(call: CallRecord) -> None:
    phase = _call_phase(call)
    fields = {"event": "call", "phase": phase, "call": call.id, "line": call.line}
    fields |= {"station": call.station, "cause": call.cause}
    log.info("call %s at %s/%s %s", call.id, call.line, call.station, phase, extra={FIELDS: fields})


def _log_line(line: LineChanged) -> None:
    fields = {"event": "line", "line": line.line, "state": line.state}
    fields |= {"stopped": list(line.stopped), "called": list(line.called)}
    log.info("line %s %s", line.line, line.state, extra={FIELDS: fields})


def _log_alert(alert: Alert) -> None:
    fields = {"event": "alert", "kind": alert.kind, "id": alert.id, "line": alert.line}
    fields |= {"station": alert.station, "to": alert.to, "tier": alert.tier}
    fields |= {"call": alert.call, "cause": alert.cause}
    log.warning("alert %s: %s", alert.kind, alert.text, extra={FIELDS: fields})


def _log_burst(changes: list[CallRecord | LineChanged]) -> None:
    """How many calls changed, by phase, and each changed line's last state."""
    phases = Counter(_call_phase(c) for c in changes if isinstance(c, CallRecord))
    lines = {c.line: c.state for c in changes if isinstance(c, LineChanged)}
    fields = {"event": "burst", "calls": dict(phases), "lines": lines}
    calls = ", ".join(f"{n} {phase}" for phase, n in sorted(phases.items())) or "none"
    states = ", ".join(f"{line} {state}" for line, state in sorted(lines.items())) or "none"
    log.info(
        "a burst of %d changes, logged together: calls %s; lines %s",
        len(changes),
        calls,
        states,
        extra={FIELDS: fields},
    )
